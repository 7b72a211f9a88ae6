package otlpretry

import (
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
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
