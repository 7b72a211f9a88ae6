package otlpretry

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// TestHoldTimerReusedWithoutStaleExpiry: the hold's timer is left set
// from one export to the next; an expiry left in its channel by an earlier
// export, or due before the current hold ends, must not cut that hold
// short.
func TestHoldTimerReusedWithoutStaleExpiry(t *testing.T) {
	h := newHarness(t)
	req, _ := http.NewRequest(http.MethodPost, h.coll.Endpoint(otlptest.Traces), bytes.NewReader([]byte("x")))
	x, err := h.rt.newExchange(req, spool.SignalTraces)
	if err != nil {
		t.Fatal(err)
	}
	defer x.release()
	x.startHold(h.clock.Now())
	h.clock.Advance(DefaultMaxHold / 2) // an export that ended at once
	x.startHold(h.clock.Now())          // the next one: its hold ends 250 ms after the first's
	h.clock.Advance(DefaultMaxHold / 2) // the first hold expires unseen
	ended := make(chan bool)
	go func() {
		_, ok := x.wait(context.Background())
		ended <- ok
	}()
	// wait takes the stale expiry and sets the timer for the 250 ms left.
	h.advanceWhenBlocked(1, DefaultMaxHold/2-time.Millisecond)
	select {
	case <-ended:
		t.Fatal("the hold ended early")
	case <-time.After(50 * time.Millisecond):
	}
	h.clock.Advance(time.Millisecond)
	if ok := <-ended; ok {
		t.Fatal("wait reported a result with no attempts")
	}
}

// TestExportsAfterAHeldOneGoDirect: after an export held past its hold has
// settled, the next exports reuse its state and go direct, answered by the
// endpoint with no time passing on the hold's clock.
func TestExportsAfterAHeldOneGoDirect(t *testing.T) {
	gate := &gatedTransport{next: http.DefaultTransport, arrived: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, WithTransport(gate))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, _, err := h.export(1, nil); err != nil {
			t.Error(err)
		} else {
			resp.Body.Close()
		}
	}()
	<-gate.arrived
	h.advanceWhenBlocked(1, DefaultMaxHold)
	<-done
	close(gate.release)
	if err := h.rt.waitDetached(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		resp, _, err := h.export(2, nil)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "" {
			t.Fatalf("export %d after the held one: %d, spooled %q", i+1, resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
		}
	}
	if st := h.rt.Stats(); st.Direct != 6 || st.Records != 0 || h.coll.Spans() != 11 {
		t.Fatalf("stats %+v, spans %d", st, h.coll.Spans())
	}
}

// deadlineRecorder blocks each request until its context ends, as a
// blackholed endpoint does, and records how it ended.
type deadlineRecorder struct {
	mu          sync.Mutex
	causes      []error
	hadDeadline []bool
}

func (d *deadlineRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	req.Body.Close()
	ctx := req.Context()
	<-ctx.Done()
	_, ok := ctx.Deadline()
	d.mu.Lock()
	d.causes = append(d.causes, context.Cause(ctx))
	d.hadDeadline = append(d.hadDeadline, ok)
	d.mu.Unlock()
	return nil, context.Cause(ctx)
}

// TestAttemptTimeoutOfHeldExport: a held export's attempt that outlasts
// the per-attempt timeout ends with context.DeadlineExceeded, and the
// export is kept for the sender, before the hold is over.
func TestAttemptTimeoutOfHeldExport(t *testing.T) {
	rec := &deadlineRecorder{}
	h := newHarness(t, WithTransport(rec), WithAttemptTimeout(time.Millisecond), WithImmediateRetryDelay(-1))
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Otlpretry-Spooled") != "1" {
		t.Fatal("a timed-out export was not spooled")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// The first is the direct attempt; the sender's may follow.
	if len(rec.causes) == 0 || !errors.Is(rec.causes[0], context.DeadlineExceeded) || !rec.hadDeadline[0] {
		t.Fatalf("attempts ended by %v, with deadlines %v", rec.causes, rec.hadDeadline)
	}
	if st := h.rt.Stats(); st.Spooled != 1 || st.Direct != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// workers counts the goroutines running or waiting in Transport.worker.
func workers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "otlpretry.(*Transport).worker(")
}

// TestWorkersAreReusedAndBounded: after a burst of held exports at most
// maxIdleWorkers workers stay, exports one after the other add none, and
// none is left after Shutdown.
func TestWorkersAreReusedAndBounded(t *testing.T) {
	before := workers()
	gate := &barrierTransport{next: http.DefaultTransport, n: 10, all: make(chan struct{})}
	h := newHarness(t, WithTransport(gate))
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			resp, _, err := h.export(1, nil)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	if n := waitWorkers(t, before+maxIdleWorkers); n > before+maxIdleWorkers {
		t.Fatalf("%d workers idle after a burst of 10, want at most %d", n-before, maxIdleWorkers)
	}
	for range 20 {
		resp, _, err := h.export(1, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := workers() - before; n > maxIdleWorkers {
		t.Fatalf("%d workers after 20 exports in a row", n)
	}
	if err := h.rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := waitWorkers(t, before); n != before {
		t.Fatalf("%d workers left after Shutdown", n-before)
	}
	if st := h.rt.Stats(); st.Direct != 30 {
		t.Fatalf("stats %+v", st)
	}
}

// waitWorkers waits until at most n workers are left, and returns how many
// are.
func waitWorkers(t *testing.T, n int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := workers()
		if got <= n || time.Now().After(deadline) {
			return got
		}
		runtime.Gosched() // workers end on their own once their attempts have
	}
}

// barrierTransport holds its first n requests until all n have arrived,
// so that n attempts run at once.
type barrierTransport struct {
	next http.RoundTripper
	n    int
	all  chan struct{}

	mu      sync.Mutex
	arrived int
}

func (b *barrierTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	<-b.all
	return b.next.RoundTrip(req)
}

// TestShutdownStopsIdleCancellers: the idle cancellers of held exports'
// attempts have lazy timers left set; Shutdown stops them, so that none
// keeps the transport alive until it fires.
func TestShutdownStopsIdleCancellers(t *testing.T) {
	h := newHarness(t)
	for range 3 {
		resp, _, err := h.export(1, nil)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
	}
	h.rt.cancellers.mu.Lock()
	idle := append([]*canceller(nil), h.rt.cancellers.free...)
	h.rt.cancellers.mu.Unlock()
	if len(idle) == 0 {
		t.Fatal("no idle canceller after three held exports")
	}
	if err := h.rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range idle {
		c.mu.Lock()
		pending := c.pending
		c.mu.Unlock()
		if pending || c.ctx.Err() == nil {
			t.Fatalf("after Shutdown an idle canceller is pending %v, cancelled %v", pending, c.ctx.Err() != nil)
		}
	}
	if n := len(h.rt.cancellers.free); n != 0 {
		t.Fatalf("%d idle cancellers kept after Shutdown", n)
	}
}
