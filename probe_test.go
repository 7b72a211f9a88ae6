package otlpretry

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/internal/retry"
)

// TestProbeOutWhenAWaitStartsIsFollowed: a probe still out when a new
// wait starts (here the trial that ended the last wait failed) returns
// too late to count, and the next probe is set then, not only when the
// new wait ends.
func TestProbeOutWhenAWaitStartsIsFollowed(t *testing.T) {
	rt := &scriptedTransport{release: make(chan struct{}), held: make(chan struct{})}
	h := newHarness(t, WithImmediateRetryDelay(-1), WithBackoff(time.Second, time.Minute), WithMaxHold(-1), WithTransport(rt))
	resp, _, err := h.export(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if e := h.nextEvent("wait"); e.wait != time.Second {
		t.Fatalf("wait %+v", e)
	}
	h.clock.Advance(DefaultProbeInterval)
	<-rt.held // the first probe is out
	h.clock.Advance(time.Second - DefaultProbeInterval)
	// The wait is over: the trial fails and a new wait starts.
	if e := h.nextEvent("wait"); e.wait != 2*time.Second {
		t.Fatalf("second wait %+v", e)
	}
	close(rt.release)
	// The delivery's rescan ticker, the new wait's timer and the next
	// probe's.
	h.advanceWhenBlocked(3, DefaultProbeInterval)
	if e := h.nextEvent("probe"); e.reachable {
		t.Fatal("a probe of a refusing endpoint succeeded")
	}
}

// scriptedTransport refuses every connection, as a stopped collector
// does; the first empty export (a probe) is held until release.
type scriptedTransport struct {
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (s *scriptedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	if req.ContentLength == 0 {
		first := false
		s.once.Do(func() { first = true })
		if first {
			close(s.held)
			<-s.release
		}
	}
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

// TestNewConnectionEndsAnOutageWithNoConnection: when no connection could
// be made to a destination, the probe that connects again ends the wait
// at once, without waiting for its answer: over a long round trip the
// backlog goes one round trip sooner. Here the server holds the probe's
// answer back until every stored export has been delivered.
func TestNewConnectionEndsAnOutageWithNoConnection(t *testing.T) {
	r := newProbeRig(t)
	defer r.srv.open()
	r.outageWithNoConnection(3)
	// The probe's answer is still held: the three exports went without it.
	if st := r.rt.Stats(); st.Records != 0 || st.Delivered != 3 || r.srv.requests() == 0 {
		t.Fatalf("before the probe's answer: stats %+v, %d requests with exports", st, r.srv.requests())
	}
	if bad := r.srv.badCredentials(); bad != 0 {
		t.Fatalf("%d requests without the destination's token", bad)
	}
}

// TestConnectionIsNoSignWhereConnectionsWereAccepted: a destination that
// took connections while it failed (here it resets them) is back only
// when it answers, even after an earlier outage in which it could not be
// reached: its probes' connections end no wait, and nothing is sent but
// the probes.
func TestConnectionIsNoSignWhereConnectionsWereAccepted(t *testing.T) {
	r := newProbeRig(t)
	r.srv.open()
	r.outageWithNoConnection(1)
	// Then one in which connections are accepted and reset.
	r.setMode(otlptest.Reset)
	r.export()
	if e := r.next("wait"); e.out != retry.Unreachable {
		t.Fatalf("wait %+v", e)
	}
	resets := r.proxy.Handled(otlptest.Reset)
	for range 3 {
		r.clock.Advance(DefaultProbeInterval)
		if e := r.next("probe"); e.reachable {
			t.Fatal("a probe's connection to a resetting server ended the wait")
		}
	}
	if got := r.proxy.Handled(otlptest.Reset) - resets; got != 3 {
		t.Fatalf("%d connections reset during three probes, want the three probes alone", got)
	}
	if st := r.rt.Stats(); st.Records != 1 || st.Delivered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// probeRig is a Transport on a fake clock exporting through a fault proxy
// to a gatedServer, with the destination's token configured and sent.
type probeRig struct {
	t      *testing.T
	srv    *gatedServer
	proxy  *otlptest.Proxy
	clock  *clockwork.FakeClock
	rt     *Transport
	events chan senderEvent
}

func newProbeRig(t *testing.T) *probeRig {
	r := &probeRig{t: t, srv: startGatedServer(t), events: make(chan senderEvent, 100),
		clock: clockwork.NewFakeClockAt(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))}
	r.proxy = otlptest.StartProxy(t, r.srv.addr)
	rt, err := New(WithDir(filepath.Join(t.TempDir(), "spool")), withClock(r.clock), withJitter(func() float64 { return 0 }),
		withEvents(func(e senderEvent) { r.events <- e }), WithLogger(slog.New(&logCapture{})),
		WithEndpointHeaders(r.proxy.URL(), http.Header{"Authorization": {"Bearer a"}}),
		WithImmediateRetryDelay(-1), WithBackoff(time.Minute, time.Minute), WithMaxHold(-1))
	if err != nil {
		t.Fatal(err)
	}
	r.rt = rt
	t.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return r
}

func (r *probeRig) setMode(m otlptest.Mode) {
	r.t.Helper()
	if err := r.proxy.SetMode(m); err != nil {
		r.t.Fatal(err)
	}
}

// export sends an export of two spans with the destination's token, as
// the application's exporter does.
func (r *probeRig) export() {
	r.t.Helper()
	body, _ := otlptest.TraceBody(2)
	req, _ := http.NewRequest(http.MethodPost, r.proxy.URL()+tracesPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Authorization", "Bearer a")
	resp, err := r.rt.Client().Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
}

// outageWithNoConnection stores n exports while the proxy refuses
// connections, has one probe refused, lets connections through again and
// waits until the probe that connects has ended the wait and the sender
// is idle.
func (r *probeRig) outageWithNoConnection(n int) {
	r.t.Helper()
	r.setMode(otlptest.Refuse)
	for range n {
		r.export()
	}
	if e := r.next("wait"); e.out != retry.Unreachable {
		r.t.Fatalf("wait %+v", e)
	}
	r.clock.Advance(DefaultProbeInterval)
	if e := r.next("probe"); e.reachable {
		r.t.Fatal("a probe through a refusing proxy succeeded")
	}
	r.setMode(otlptest.Pass)
	r.clock.Advance(DefaultProbeInterval)
	if e := r.next("probe"); !e.reachable {
		r.t.Fatal("the probe that connected did not end the wait")
	}
	r.next("idle")
}

// next waits for the sender's next decision of the given kind.
func (r *probeRig) next(kind string) senderEvent {
	r.t.Helper()
	return waitEvent(r.t, r.events, kind)
}

// gatedServer is an OTLP/HTTP receiver on 127.0.0.1 that holds empty
// exports (probes) until open, answers the others 200 at once, and
// checks every request's token.
type gatedServer struct {
	addr string
	gate chan struct{}
	once sync.Once
	mu   sync.Mutex
	n    int // requests with exports answered
	bad  int // requests without the token
}

func startGatedServer(t *testing.T) *gatedServer {
	s := &gatedServer{gate: make(chan struct{})}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		if r.Header.Get("Authorization") != "Bearer a" {
			s.bad++
		}
		s.mu.Unlock()
		if len(body) == 0 {
			<-s.gate
		} else {
			s.mu.Lock()
			s.n++
			s.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() { s.open(); srv.Close() })
	s.addr = ln.Addr().String()
	return s
}

func (s *gatedServer) open() { s.once.Do(func() { close(s.gate) }) }

func (s *gatedServer) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *gatedServer) badCredentials() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bad
}
