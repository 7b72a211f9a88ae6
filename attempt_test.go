package otlpretry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestAttemptContext: a held export's attempt carries the request's values,
// outlives the exporter's context, ends with the transport, reports its
// deadline, and contexts derived from it (as net/http derives one per
// request) start no goroutine.
func TestAttemptContext(t *testing.T) {
	transport, stop := context.WithCancel(context.Background())
	defer stop()
	reqCtx, cancelReq := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace"))
	rt := &Transport{}
	a := rt.cancellers.newAttempt(&detachedContext{transport, reqCtx}, time.Hour)
	if a.Value(ctxKey{}) != "trace" {
		t.Fatal("request value lost")
	}
	cancelReq()
	if a.Err() != nil {
		t.Fatal("the exporter's cancel reached a detached attempt")
	}
	if d, ok := a.Deadline(); !ok || time.Until(d) < 59*time.Minute {
		t.Fatalf("deadline %v, %v; want about an hour from now", d, ok)
	}
	before := runtime.NumGoroutine()
	var children []context.Context
	for range 100 {
		c, cancel := context.WithCancelCause(a)
		defer cancel(nil)
		children = append(children, c)
	}
	if n := runtime.NumGoroutine() - before; n > 10 {
		t.Fatalf("%d goroutines started for 100 contexts derived from attempts", n)
	}
	stop()
	for _, c := range children {
		<-c.Done() // Shutdown reaches what the lower transport derived
	}
	if !errors.Is(a.Err(), context.Canceled) {
		t.Fatalf("after Shutdown: %v", a.Err())
	}
}

// TestAttemptTimeout: the per-attempt timeout ends an attempt as
// context.WithTimeout would: Err and the cause seen by derived contexts
// (which net/http returns) are context.DeadlineExceeded. A timed-out
// canceller is never reused.
func TestAttemptTimeout(t *testing.T) {
	transport, stop := context.WithCancel(context.Background())
	defer stop()
	rt := &Transport{}
	for _, timeout := range []time.Duration{0, time.Millisecond} {
		a := rt.cancellers.newAttempt(&detachedContext{transport, context.Background()}, timeout)
		child, cancel := context.WithCancelCause(a)
		select {
		case <-child.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("timeout %v: the attempt did not end", timeout)
		}
		if a.Err() != context.DeadlineExceeded || context.Cause(child) != context.DeadlineExceeded {
			t.Fatalf("timeout %v: Err %v, cause seen by a derived context %v", timeout, a.Err(), context.Cause(child))
		}
		cancel(nil)
		a.end()
		if n := len(rt.cancellers.free); n != 0 {
			t.Fatalf("timeout %v: %d timed-out canceller(s) kept for reuse", timeout, n)
		}
		if next := rt.cancellers.newAttempt(&detachedContext{transport, context.Background()}, time.Hour); next.Err() != nil {
			t.Fatalf("the attempt after a timeout starts ended: %v", next.Err())
		} else {
			next.end()
		}
	}
}

// TestAttemptOfUnheldExport: with no hold (WithMaxHold(-1)) attempts end
// with the exporter's context and are cancelled when they end, as with
// context.WithTimeout; the earlier of the two deadlines is reported.
func TestAttemptOfUnheldExport(t *testing.T) {
	reqCtx, cancelReq := context.WithTimeout(context.WithValue(context.Background(), ctxKey{}, "trace"), time.Minute)
	defer cancelReq()
	rt := &Transport{}
	a := rt.cancellers.newAttempt(reqCtx, time.Hour)
	if a.Value(ctxKey{}) != "trace" {
		t.Fatal("request value lost")
	}
	if d, _ := a.Deadline(); time.Until(d) > time.Minute {
		t.Fatalf("deadline %v is the attempt's, not the exporter's earlier one", d)
	}
	a.end()
	if a.Err() == nil || len(rt.cancellers.free) != 0 {
		t.Fatalf("after the attempt: Err %v, %d kept for reuse", a.Err(), len(rt.cancellers.free))
	}
	b := rt.cancellers.newAttempt(reqCtx, time.Hour)
	cancelReq()
	<-b.Done()
	b.end()
}

// TestCancellerReuse: attempts that end normally hand their canceller to
// the next; it is retired (cancelled, so that whatever a lower transport
// derived and never cancelled ends) after maxCancellerUses attempts; at
// most maxIdleCancellers wait; and Shutdown's cancel is never inherited.
func TestCancellerReuse(t *testing.T) {
	transport, stop := context.WithCancel(context.Background())
	defer stop()
	rt := &Transport{}
	held := &detachedContext{transport, context.Background()}

	first := rt.cancellers.newAttempt(held, time.Hour)
	c := first.c
	leaked, cancelLeaked := context.WithCancel(first) // by a lower transport that forgets to cancel
	defer cancelLeaked()
	first.end()
	for i := 1; i < maxCancellerUses; i++ {
		a := rt.cancellers.newAttempt(held, time.Hour)
		if a.c != c {
			t.Fatalf("attempt %d got a new canceller", i+1)
		}
		if a.Err() != nil || leaked.Err() != nil {
			t.Fatalf("attempt %d: reused canceller already cancelled", i+1)
		}
		a.end()
	}
	if leaked.Err() == nil || c.ctx.Err() == nil {
		t.Fatal("a canceller was not retired after maxCancellerUses attempts")
	}
	if a := rt.cancellers.newAttempt(held, time.Hour); a.c == c || a.Err() != nil {
		t.Fatal("a retired canceller was reused")
	} else {
		a.end()
	}

	var many []*attempt
	for range maxIdleCancellers + 8 {
		many = append(many, rt.cancellers.newAttempt(held, time.Hour))
	}
	for _, a := range many {
		a.end()
	}
	if n := len(rt.cancellers.free); n != maxIdleCancellers {
		t.Fatalf("%d idle cancellers, want %d", n, maxIdleCancellers)
	}
	if err := many[len(many)-1].c.ctx.Err(); err == nil {
		t.Fatal("a canceller past the idle limit was dropped without cancelling it")
	}

	stop()
	a := rt.cancellers.newAttempt(held, time.Hour)
	defer a.end()
	if !errors.Is(a.Err(), context.Canceled) {
		t.Fatalf("attempt after Shutdown: %v", a.Err())
	}
}

// TestAttemptIsTheResponseBody: closing the response body ends the
// attempt (the timeout bounds reading the answer until then); closing it
// again changes nothing.
func TestAttemptIsTheResponseBody(t *testing.T) {
	transport, stop := context.WithCancel(context.Background())
	defer stop()
	rt := &Transport{}
	a := rt.cancellers.newAttempt(&detachedContext{transport, context.Background()}, time.Hour)
	a.body = io.NopCloser(strings.NewReader("answer"))
	resp := &http.Response{Body: a}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "answer" {
		t.Fatalf("read %q, %v", b, err)
	}
	if len(rt.cancellers.free) != 0 {
		t.Fatal("attempt ended before its body was closed")
	}
	for range 2 {
		if err := resp.Body.Close(); err != nil {
			t.Fatal(err)
		}
		if n := len(rt.cancellers.free); n != 1 {
			t.Fatalf("%d cancellers kept after Close, want 1", n)
		}
	}
}

// TestCancellerLazyTimer: a reused canceller's timer, left set by an
// earlier attempt, never ends a later attempt before its own deadline,
// and is moved earlier for an attempt with a shorter timeout; a timer
// firing between attempts leaves the canceller usable.
func TestCancellerLazyTimer(t *testing.T) {
	transport, stop := context.WithCancel(context.Background())
	defer stop()
	rt := &Transport{}
	held := &detachedContext{transport, context.Background()}

	first := rt.cancellers.newAttempt(held, 20*time.Millisecond)
	c := first.c
	first.end() // the timer stays set, due in 20 ms
	start := time.Now()
	second := rt.cancellers.newAttempt(held, 200*time.Millisecond)
	if second.c != c {
		t.Fatal("the canceller was not reused")
	}
	<-second.Done()
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("an attempt with a 200ms timeout ended after %v, by the timer of the one before", took)
	}
	if second.Err() != context.DeadlineExceeded {
		t.Fatalf("Err %v", second.Err())
	}
	second.end()

	third := rt.cancellers.newAttempt(held, time.Hour)
	c = third.c
	third.end() // the timer stays set, due in an hour
	start = time.Now()
	fourth := rt.cancellers.newAttempt(held, 20*time.Millisecond)
	if fourth.c != c {
		t.Fatal("the canceller was not reused")
	}
	select {
	case <-fourth.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a 20ms timeout after a 1h one did not end the attempt")
	}
	if took := time.Since(start); took < 20*time.Millisecond {
		t.Fatalf("ended after %v", took)
	}
	fourth.end()

	fifth := rt.cancellers.newAttempt(held, 10*time.Millisecond)
	c = fifth.c
	fifth.end()
	time.Sleep(50 * time.Millisecond) // the timer fires with no attempt running
	sixth := rt.cancellers.newAttempt(held, time.Hour)
	defer sixth.end()
	if sixth.c != c || sixth.Err() != nil {
		t.Fatalf("after the timer fired between attempts: reused %v, Err %v", sixth.c == c, sixth.Err())
	}
}
