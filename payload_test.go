package otlpretry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// closeCounter counts the closes of a request body.
type closeCounter struct {
	io.Reader
	closes int
}

func (c *closeCounter) Close() error { c.closes++; return nil }

func replayableRequest(t *testing.T, body string) (*http.Request, *closeCounter, *int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://collector/v1/traces", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	own := &closeCounter{Reader: req.Body}
	req.Body = own
	getBody, calls := req.GetBody, new(int)
	req.GetBody = func() (io.ReadCloser, error) { *calls++; return getBody() }
	return req, own, calls
}

// readBody reads what payload.body returned; errors show in the text.
func readBody(rc io.ReadCloser, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

// TestPayloadReplaysWithoutCopying: the first attempt sends the request's
// own body, later ones a fresh one from GetBody; nothing is copied, and the
// request's body is closed once, by whoever read it.
func TestPayloadReplaysWithoutCopying(t *testing.T) {
	req, own, calls := replayableRequest(t, "export")
	var p payload
	if err := p.init(req); err != nil {
		t.Fatal(err)
	}
	first, err := p.body()
	if first != io.ReadCloser(own) || err != nil {
		t.Fatalf("first attempt got %T, %v; want the request's own body", first, err)
	}
	if got := readBody(p.body()); got != "export" || *calls != 1 {
		t.Fatalf("retry read %q with %d GetBody calls", got, *calls)
	}
	if p.data != nil {
		t.Fatal("the body was copied on the happy path")
	}
	first.Close() // by the lower transport
	p.closeUnsent()
	if own.closes != 1 {
		t.Fatalf("request body closed %d times, want 1", own.closes)
	}
}

// TestPayloadKeptCopy: once the body has been read to be stored, attempts
// send the copy, not the exporter's buffer; the unsent request body is
// closed once; a released payload holds no body.
func TestPayloadKeptCopy(t *testing.T) {
	req, own, calls := replayableRequest(t, "export")
	var p payload
	if err := p.init(req); err != nil {
		t.Fatal(err)
	}
	data, err := p.bytes()
	if string(data) != "export" || err != nil {
		t.Fatalf("bytes %q, %v", data, err)
	}
	if got := readBody(p.body()); got != "export" || *calls != 1 {
		t.Fatalf("attempt read %q with %d GetBody calls; want the copy", got, *calls)
	}
	p.closeUnsent()
	p.closeUnsent()
	if own.closes != 1 {
		t.Fatalf("request body closed %d times, want 1", own.closes)
	}
	p.reset()
	if _, err := p.body(); !errors.Is(err, errBodyGone) {
		t.Fatalf("released payload: %v", err)
	}
}

// TestPayloadWithoutGetBody: a request that cannot replay its body is read
// (and closed) at once.
func TestPayloadWithoutGetBody(t *testing.T) {
	own := &closeCounter{Reader: bytes.NewReader([]byte("export"))}
	req, err := http.NewRequest(http.MethodPost, "http://collector/v1/traces", own)
	if err != nil {
		t.Fatal(err)
	}
	var p payload
	if err := p.init(req); err != nil {
		t.Fatal(err)
	}
	if own.closes != 1 {
		t.Fatalf("request body closed %d times, want 1", own.closes)
	}
	for range 2 {
		if got := readBody(p.body()); got != "export" {
			t.Fatalf("attempt read %q", got)
		}
	}
	p.closeUnsent()
	if own.closes != 1 {
		t.Fatalf("request body closed %d times, want 1", own.closes)
	}
}
