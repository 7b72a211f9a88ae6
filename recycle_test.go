package otlpretry

import (
	"errors"
	"io"
	"net/http"
	"testing"
)

// TestBodyTrackerFreesOnceAfterEveryBody: the record's memory goes back
// only when RoundTrip has returned and every body given out is closed, in
// either order, exactly once; a GetBody after that gets an error, never
// the bytes of whatever record uses the memory next.
func TestBodyTrackerFreesOnceAfterEveryBody(t *testing.T) {
	for _, closeFirst := range []bool{true, false} {
		req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/traces", nil)
		frees := 0
		bt := trackBodies(req, []byte("payload"), func() { frees++ })
		retry, err := req.GetBody() // as net/http does on a stale connection
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := io.ReadAll(retry); string(got) != "payload" || req.ContentLength != 7 {
			t.Fatalf("GetBody read %q, length %d", got, req.ContentLength)
		}
		req.Body.Close()
		if closeFirst {
			retry.Close()
			retry.Close() // a second Close changes nothing
			bt.roundTripDone()
		} else {
			bt.roundTripDone()
			if frees != 0 {
				t.Fatal("freed while a body was still open")
			}
			retry.Close()
		}
		if frees != 1 {
			t.Fatalf("closeFirst=%v: freed %d times, want 1", closeFirst, frees)
		}
		if _, err := req.GetBody(); !errors.Is(err, errBodyReleased) {
			t.Fatalf("GetBody after the release = %v, want errBodyReleased", err)
		}
	}
}
