package otlpretry

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// heldSends carries requests to the collector, holding each until more
// bytes than limit are in flight or hold has passed, whichever comes
// first, and notes the most bytes ever in flight. Holding makes the
// sender's concurrency visible: every send it starts while others are
// held is in flight with them. The hold bounds how long a request waits;
// the assertion on the bytes in flight does not depend on it.
type heldSends struct {
	next  http.RoundTripper
	limit int
	hold  time.Duration

	mu       sync.Mutex // guards the fields below
	inFlight int        // bytes of the requests in flight
	most     int
	over     chan struct{} // closed once inFlight went over limit
}

func (h *heldSends) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.inFlight += len(body)
	h.most = max(h.most, h.inFlight)
	if h.inFlight > h.limit {
		select {
		case <-h.over:
		default:
			close(h.over)
		}
	}
	h.mu.Unlock()
	timer := time.NewTimer(h.hold)
	select {
	case <-h.over:
	case <-timer.C:
	}
	timer.Stop()
	h.mu.Lock()
	h.inFlight -= len(body)
	h.mu.Unlock()
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	return h.next.RoundTrip(out)
}

func (h *heldSends) mostInFlight() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.most
}

// TestInflightBytesBounded: a backlog drained with a window of 16
// requests holds at most the in-flight budget plus one request of stored
// exports in flight (WithMaxInflightBytes), and everything arrives.
func TestInflightBytesBounded(t *testing.T) {
	coll := otlptest.StartCollector(t)
	dir := filepath.Join(t.TempDir(), "spool")
	const n, bound, budget = 200, 8 << 10, 16 << 10
	exports, bodies := traceExports(n, 5)
	storeBacklog(t, dir, coll.URL(), exports, bodies)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	held := &heldSends{next: tr, limit: budget + bound, hold: 100 * time.Millisecond, over: make(chan struct{})}
	h := newHarnessOn(t, coll, dir, WithTransport(held), WithMaxRequestBytes(bound),
		WithConcurrency(16), WithMaxInflightBytes(budget))
	if err := h.rt.ForceFlush(ctxTimeout(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := h.rt.Stats(); st.Records != 0 || st.Delivered != n {
		t.Fatalf("stats %+v", st)
	}
	if coll.Spans() != 5*n || coll.SpanDuplicates() != 0 {
		t.Fatalf("collector: %d spans, %d duplicates; want %d, 0", coll.Spans(), coll.SpanDuplicates(), 5*n)
	}
	if most := held.mostInFlight(); most > budget+bound {
		t.Errorf("%d bytes of stored exports in flight at once, over the budget of %d plus one request of %d", most, budget, bound)
	}
}

// TestInflightBudgetNeverStopsAHealthyDestination: destination A accepts
// connections and never answers, and its backlog requests hold the whole
// in-flight budget; B's backlog still drains, a request at a time, long
// before A's attempts time out.
func TestInflightBudgetNeverStopsAHealthyDestination(t *testing.T) {
	collA, collB := otlptest.StartCollector(t), otlptest.StartCollector(t)
	proxyA := otlptest.StartProxy(t, collA.Addr())
	if err := proxyA.SetMode(otlptest.Blackhole); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "spool")
	const n = 20
	exportsA, bodiesA := traceExports(n, 5)
	storeBacklog(t, dir, proxyA.URL(), exportsA, bodiesA)
	exportsB, bodiesB := traceExports(n, 5)
	storeBacklog(t, dir, collB.URL(), exportsB, bodiesB)
	// One byte: any send in flight spends the budget, so only the rule
	// that a destination with nothing in flight may send lets B's go.
	h := newHarnessOn(t, collB, dir, WithEndpointHeaders(proxyA.URL(), nil),
		WithMaxRequestBytes(-1), WithMaxInflightBytes(1), WithAttemptTimeout(time.Minute))
	if err := collB.WaitSpans(ctxTimeout(t, 20*time.Second), 5*n); err != nil {
		t.Fatalf("B's backlog while A holds the budget: %v (%d of %d spans)", err, collB.Spans(), 5*n)
	}
	if collA.Spans() != 0 {
		t.Errorf("A, blackholed, received %d spans", collA.Spans())
	}
	// B's last acknowledgement may follow its receipt by a moment.
	ctx := ctxTimeout(t, 10*time.Second)
	for h.rt.Stats().Records > n && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if st := h.rt.Stats(); st.Records != n || st.Delivered != n {
		t.Errorf("Stats.Records = %d, Delivered = %d; want A's %d still stored, B's %d delivered", st.Records, st.Delivered, n, n)
	}
}
