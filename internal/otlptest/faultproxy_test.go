package otlptest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"syscall"
	"testing"
	"time"
)

func proxiedCollector(t *testing.T) (*Collector, *Proxy) {
	t.Helper()
	c := StartCollector(t)
	return c, StartProxy(t, c.URL())
}

func setMode(t *testing.T, p *Proxy, m Mode) {
	t.Helper()
	if err := p.SetMode(m); err != nil {
		t.Fatalf("SetMode(%v): %v", m, err)
	}
	if got := p.Mode(); got != m {
		t.Fatalf("Mode() = %v, want %v", got, m)
	}
}

func TestProxyPass(t *testing.T) {
	c, p := proxiedCollector(t)
	body, keys := TraceBody(3)
	r, err := post(newClient(t, 5*time.Second), p.URL()+Traces.Path(), protobufCT, "", body)
	if err != nil || r.status != 200 {
		t.Fatalf("%d %v", r.status, err)
	}
	if c.Spans() != len(keys) {
		t.Fatalf("Spans() = %d, want %d", c.Spans(), len(keys))
	}
	if p.Accepted() != 1 || p.Handled(Pass) != 1 {
		t.Fatalf("Accepted %d Handled(Pass) %d, want 1, 1", p.Accepted(), p.Handled(Pass))
	}
}

func TestProxyRefuse(t *testing.T) {
	c, p := proxiedCollector(t)
	body, _ := TraceBody(1)
	setMode(t, p, Refuse)
	_, err := post(newClient(t, 5*time.Second), p.URL()+Traces.Path(), protobufCT, "", body)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want ECONNREFUSED", err)
	}
	setMode(t, p, Pass)
	r, err := post(newClient(t, 5*time.Second), p.URL()+Traces.Path(), protobufCT, "", body)
	if err != nil || r.status != 200 {
		t.Fatalf("after leaving Refuse: %d %v", r.status, err)
	}
	if c.Spans() != 1 {
		t.Fatalf("Spans() = %d, want 1", c.Spans())
	}
}

func TestProxyReset(t *testing.T) {
	c, p := proxiedCollector(t)
	setMode(t, p, Reset)
	body, _ := TraceBody(50)
	_, err := post(newClient(t, 5*time.Second), p.URL()+Traces.Path(), protobufCT, "", body)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want ECONNRESET or EOF", err)
	}
	if p.Handled(Reset) != 1 {
		t.Fatalf("Handled(Reset) = %d, want 1", p.Handled(Reset))
	}
	if c.Requests(Traces.Path()) != 0 {
		t.Fatal("Reset must not reach upstream")
	}
}

func TestProxyResetIsAnRST(t *testing.T) {
	_, p := proxiedCollector(t)
	setMode(t, p, Reset)
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /v1/traces HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read err = %v, want ECONNRESET", err)
	}
}

func TestProxyBlackhole(t *testing.T) {
	c, p := proxiedCollector(t)
	setMode(t, p, Blackhole)
	body, _ := TraceBody(1)
	_, err := post(newClient(t, 150*time.Millisecond), p.URL()+Traces.Path(), protobufCT, "", body)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a client timeout", err)
	}
	if c.Requests(Traces.Path()) != 0 {
		t.Fatal("Blackhole must not reach upstream")
	}
	if p.Handled(Blackhole) != 1 {
		t.Fatalf("Handled(Blackhole) = %d", p.Handled(Blackhole))
	}
}

func TestProxyLeavingBlackholeClosesSwallowedConnections(t *testing.T) {
	_, p := proxiedCollector(t)
	setMode(t, p, Blackhole)
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"))
	// The connect returns before the proxy has accepted; switching modes
	// before that would hand the connection to Pass instead.
	if err := p.WaitAccepted(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	setMode(t, p, Pass)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read err = %v, want the connection closed", err)
	}
}

func TestProxyLatency(t *testing.T) {
	c, p := proxiedCollector(t)
	const d = 80 * time.Millisecond
	setMode(t, p, Latency(d))
	body, _ := TraceBody(1)
	start := time.Now()
	r, err := post(newClient(t, 5*time.Second), p.URL()+Traces.Path(), protobufCT, "", body)
	if err != nil || r.status != 200 {
		t.Fatalf("%d %v", r.status, err)
	}
	if el := time.Since(start); el < d {
		t.Fatalf("round trip took %v, want >= %v", el, d)
	}
	if c.Spans() != 1 || p.Handled(Latency(time.Hour)) != 1 {
		t.Fatalf("Spans %d Handled(Latency) %d", c.Spans(), p.Handled(Latency(0)))
	}
}

func TestProxyHTTPStatus(t *testing.T) {
	c, p := proxiedCollector(t)
	setMode(t, p, HTTPStatus(http.StatusTooManyRequests, "7"))
	client := newClient(t, 5*time.Second)
	body, _ := TraceBody(20)

	var reused []bool
	for range 2 {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			http.MethodPost, p.URL()+Traces.Path(), bytes.NewReader(body))
		req.Header.Set("Content-Type", protobufCT)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
			t.Fatalf("got %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if len(reused) != 2 || !reused[1] {
		t.Fatalf("second request did not reuse the connection (reused=%v): body not drained?", reused)
	}
	if p.Handled(HTTPStatus(0, "")) != 2 || p.Accepted() != 1 {
		t.Fatalf("Handled %d Accepted %d, want 2, 1", p.Handled(HTTPStatus(0, "")), p.Accepted())
	}
	if c.Requests(Traces.Path()) != 0 {
		t.Fatal("HTTPStatus must not reach upstream")
	}

	// The mode change closed the kept-alive connection; a fresh client
	// avoids reading that close as this request's answer.
	setMode(t, p, HTTPStatus(http.StatusServiceUnavailable, ""))
	r, err := post(newClient(t, 5*time.Second), p.URL()+Traces.Path(), protobufCT, "", body)
	if err != nil || r.status != 503 || r.header.Get("Retry-After") != "" {
		t.Fatalf("%d %q %v", r.status, r.header.Get("Retry-After"), err)
	}
}

func TestProxyHTTPStatusHonoursConnectionClose(t *testing.T) {
	_, p := proxiedCollector(t)
	setMode(t, p, HTTPStatus(503, ""))
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || !resp.Close {
		t.Fatalf("status %d close %v", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("connection not closed after Connection: close: %v", err)
	}
}

func TestProxyModeChangeClosesOpenConnections(t *testing.T) {
	c, p := proxiedCollector(t)
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	body, _ := TraceBody(1)
	br := bufio.NewReader(conn)
	send := func() error {
		req, _ := http.NewRequest(http.MethodPost, p.URL()+Traces.Path(), bytes.NewReader(body))
		req.Header.Set("Content-Type", protobufCT)
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	if err := send(); err != nil {
		t.Fatalf("first request over Pass: %v", err)
	}
	setMode(t, p, Blackhole)
	// The kept-alive connection was made under Pass; it must not carry on
	// forwarding now that the proxy black-holes.
	if err := send(); err == nil {
		t.Fatal("keep-alive connection still forwarded after switching to Blackhole")
	}
	if c.Requests(Traces.Path()) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", c.Requests(Traces.Path()))
	}
}

func TestProxyClientThroughOutagePhases(t *testing.T) {
	c, p := proxiedCollector(t)
	client := newClient(t, 300*time.Millisecond)
	url := p.URL() + Traces.Path()
	phases := []struct {
		mode Mode
		ok   bool
	}{
		{Pass, true}, {Refuse, false}, {Pass, true}, {HTTPStatus(503, "1"), false},
		{Latency(time.Millisecond), true}, {Reset, false}, {Blackhole, false}, {Pass, true},
	}
	sent := 0
	for _, ph := range phases {
		setMode(t, p, ph.mode)
		// Each mode change closes the proxy's connections; dropping the
		// client's idle ones too keeps a stale keep-alive from turning an
		// expected success into an EOF (that race is the retrier's problem,
		// not this test's).
		client.CloseIdleConnections()
		body, _ := TraceBody(1)
		r, err := post(client, url, protobufCT, "", body)
		ok := err == nil && r.status == 200
		if ok {
			sent++
		}
		if ok != ph.ok {
			t.Fatalf("%v: status %d err %v, want ok=%v", ph.mode, r.status, err, ph.ok)
		}
	}
	if c.Spans() != sent {
		t.Fatalf("Spans() = %d, want %d", c.Spans(), sent)
	}
}

func TestProxyUpstreamDown(t *testing.T) {
	c, p := proxiedCollector(t)
	c.Stop()
	body, _ := TraceBody(1)
	if _, err := post(newClient(t, 5*time.Second), p.URL()+Traces.Path(), protobufCT, "", body); err == nil {
		t.Fatal("request succeeded with upstream down")
	}
}

func TestProxyRejectsNonLoopbackUpstream(t *testing.T) {
	for _, up := range []string{"10.0.0.1:4318", "http://192.168.1.1:4318", "example.com:80", "nonsense"} {
		if p, err := NewProxy(up); err == nil {
			p.Close()
			t.Errorf("NewProxy(%q) accepted", up)
		}
	}
}

func TestProxyClose(t *testing.T) {
	c := StartCollector(t)
	p, err := NewProxy(c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// Leave connections in several states open; Close must end them all
	// (TestMain's leak check enforces the goroutine side).
	held, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := p.WaitAccepted(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
	if err := p.SetMode(Pass); err == nil {
		t.Fatal("SetMode after Close succeeded")
	}
	if _, err := net.Dial("tcp", p.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Close: %v, want ECONNREFUSED", err)
	}
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection left open by Close")
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{
		Pass: "Pass", Refuse: "Refuse", Reset: "Reset", Blackhole: "Blackhole",
		Latency(time.Second): "Latency(1s)", HTTPStatus(503, "2"): `HTTPStatus(503, "2")`,
	} {
		if m.String() != want {
			t.Errorf("%q, want %q", m.String(), want)
		}
	}
}
