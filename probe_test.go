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
	srv := startGatedServer(t)
	proxy := otlptest.StartProxy(t, srv.addr)
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	events := make(chan senderEvent, 100)
	rt, err := New(WithDir(filepath.Join(t.TempDir(), "spool")), withClock(clock), withJitter(func() float64 { return 0 }),
		withEvents(func(e senderEvent) { events <- e }), WithLogger(slog.New(&logCapture{})),
		WithEndpointHeaders(proxy.URL(), http.Header{"Authorization": {"Bearer a"}}),
		WithImmediateRetryDelay(-1), WithBackoff(time.Minute, time.Minute), WithMaxHold(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	defer srv.open()
	next := func(kind string) senderEvent {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			select {
			case e := <-events:
				if e.kind == kind {
					return e
				}
			case <-ctx.Done():
				t.Fatalf("no %q event", kind)
			}
		}
	}
	for range 3 {
		body, _ := otlptest.TraceBody(2)
		req, _ := http.NewRequest(http.MethodPost, proxy.URL()+tracesPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer a")
		resp, err := rt.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if e := next("wait"); e.out != retry.Unreachable {
		t.Fatalf("wait %+v", e)
	}
	clock.Advance(DefaultProbeInterval)
	if e := next("probe"); e.reachable {
		t.Fatal("a probe through a refusing proxy succeeded")
	}
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultProbeInterval)
	if e := next("probe"); !e.reachable {
		t.Fatal("the probe that connected did not end the wait")
	}
	next("idle")
	// The probe's answer is still held: the three exports went without it.
	if st := rt.Stats(); st.Records != 0 || st.Delivered != 3 || srv.requests() == 0 {
		t.Fatalf("before the probe's answer: stats %+v, %d requests with exports", st, srv.requests())
	}
	if bad := srv.badCredentials(); bad != 0 {
		t.Fatalf("%d requests without the destination's token", bad)
	}
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
