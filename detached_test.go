package otlpretry

import (
	"context"
	"runtime"
	"testing"
	"time"
)

type ctxKey struct{}

// TestDetachedContext: values come from the request, cancellation from the
// transport, and deriving a timeout from it starts no goroutine.
func TestDetachedContext(t *testing.T) {
	transport, stop := context.WithCancel(context.Background())
	reqCtx, cancelReq := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace"))
	ctx := detachedContext{transport, reqCtx}
	if ctx.Value(ctxKey{}) != "trace" {
		t.Fatal("request value lost")
	}
	cancelReq()
	if ctx.Err() != nil {
		t.Fatal("the exporter's cancel reached a detached attempt")
	}
	before := runtime.NumGoroutine()
	var cancels []context.CancelFunc
	var attempts []context.Context
	for range 100 {
		a, c := context.WithTimeout(ctx, time.Hour)
		attempts = append(attempts, a)
		cancels = append(cancels, c)
	}
	if n := runtime.NumGoroutine() - before; n > 10 {
		t.Fatalf("%d goroutines started for 100 attempt contexts", n)
	}
	stop()
	for _, a := range attempts {
		select {
		case <-a.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not reach an attempt")
		}
	}
	for _, c := range cancels {
		c()
	}
}
