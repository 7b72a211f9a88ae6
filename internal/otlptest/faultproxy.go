package otlptest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

type modeKind int

const (
	kindPass modeKind = iota
	kindRefuse
	kindReset
	kindBlackhole
	kindLatency
	kindHTTPStatus
)

// Mode is how a Proxy treats traffic. Modes are comparable values; build
// them with the variables and functions below.
type Mode struct {
	kind       modeKind
	delay      time.Duration
	status     int
	retryAfter string
}

var (
	// Pass forwards bytes both ways unchanged.
	Pass = Mode{kind: kindPass}
	// Refuse closes the listening socket so connects fail with
	// ECONNREFUSED, as when nothing runs on the collector's host.
	Refuse = Mode{kind: kindRefuse}
	// Reset accepts, reads part of the request, then aborts the connection
	// with an RST, so the client sees ECONNRESET mid-request.
	Reset = Mode{kind: kindReset}
	// Blackhole accepts and reads but never answers nor closes, as a
	// dropped route or a frozen peer does; only client timeouts help.
	Blackhole = Mode{kind: kindBlackhole}
)

// Latency forwards like Pass but holds back every chunk coming from
// upstream by d, as a slow or distant collector would.
func Latency(d time.Duration) Mode { return Mode{kind: kindLatency, delay: d} }

// HTTPStatus answers every HTTP request itself with code and, if retryAfter
// is not empty, a Retry-After header, without contacting upstream: a load
// balancer or gateway whose backend is gone. Keep-alive is honoured.
func HTTPStatus(code int, retryAfter string) Mode {
	return Mode{kind: kindHTTPStatus, status: code, retryAfter: retryAfter}
}

func (m Mode) String() string {
	switch m.kind {
	case kindPass:
		return "Pass"
	case kindRefuse:
		return "Refuse"
	case kindReset:
		return "Reset"
	case kindBlackhole:
		return "Blackhole"
	case kindLatency:
		return fmt.Sprintf("Latency(%v)", m.delay)
	case kindHTTPStatus:
		return fmt.Sprintf("HTTPStatus(%d, %q)", m.status, m.retryAfter)
	}
	return fmt.Sprintf("Mode(%d)", int(m.kind))
}

// upstreamDialTimeout bounds the dial to upstream; upstream is on loopback,
// where a dial either succeeds or is refused at once.
const upstreamDialTimeout = 5 * time.Second

// Proxy is a TCP proxy on 127.0.0.1 in front of an upstream address whose
// behaviour can be switched at any time with SetMode. It starts in Pass.
//
// A mode change applies to connections already open: every one of them is
// closed, because an HTTP client would otherwise keep using a keep-alive
// connection made under the old mode and never see the new fault.
type Proxy struct {
	addr     string
	upstream string

	// life serializes SetMode and Close, which swap the listener.
	life sync.Mutex

	mu       sync.Mutex
	mode     Mode
	ln       net.Listener // nil while refusing or closed
	conns    map[*proxyConn]struct{}
	closed   bool
	accepted int
	handled  map[modeKind]int
	changed  chan struct{} // closed and replaced on every accept

	// wg counts the accept loop and connection goroutines so Close can
	// guarantee none outlives the Proxy.
	wg sync.WaitGroup
}

// proxyConn is one client connection and, once dialled, its upstream.
type proxyConn struct {
	client net.Conn

	mu       sync.Mutex
	upstream net.Conn
	closed   bool
	done     chan struct{} // closed on close, releases Latency timers
}

func (pc *proxyConn) setUpstream(up net.Conn) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return false
	}
	pc.upstream = up
	return true
}

func (pc *proxyConn) close() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return
	}
	pc.closed = true
	close(pc.done)
	_ = pc.client.Close()
	if pc.upstream != nil {
		_ = pc.upstream.Close()
	}
}

// NewProxy starts a Proxy on a free port of 127.0.0.1 forwarding to
// upstream, given as "host:port" or as a URL such as Collector.URL().
// Upstream must be on the loopback interface: tests never send traffic off
// the machine.
func NewProxy(upstream string) (*Proxy, error) {
	if strings.Contains(upstream, "://") {
		u, err := url.Parse(upstream)
		if err != nil {
			return nil, fmt.Errorf("otlptest: upstream %q: %w", upstream, err)
		}
		upstream = u.Host
	}
	host, _, err := net.SplitHostPort(upstream)
	if err != nil {
		return nil, fmt.Errorf("otlptest: upstream %q: %w", upstream, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("otlptest: refusing non-loopback upstream %q", upstream)
	}
	ln, err := listenLoopback(loopbackHost+":0", 0)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		addr:     ln.Addr().String(),
		upstream: upstream,
		mode:     Pass,
		ln:       ln,
		conns:    make(map[*proxyConn]struct{}),
		handled:  make(map[modeKind]int),
		changed:  make(chan struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop(ln)
	return p, nil
}

// StartProxy is NewProxy for tests and benchmarks: it fails tb on error and
// closes the Proxy when tb ends.
func StartProxy(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	p, err := NewProxy(upstream)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's address, "127.0.0.1:PORT"; it stays the same
// across Refuse.
func (p *Proxy) Addr() string { return p.addr }

// URL returns "http://127.0.0.1:PORT", to be used where the collector's base
// URL would be.
func (p *Proxy) URL() string { return "http://" + p.addr }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Accepted returns how many client connections the proxy accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// WaitAccepted blocks until the proxy has accepted at least n connections
// or ctx ends. A client's connect returns before the proxy's accept, so a
// test that switches modes right after connecting uses this to know which
// mode the connection was handed to.
func (p *Proxy) WaitAccepted(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		have := p.accepted
		ch := p.changed
		p.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("otlptest: waiting for %d accepted connections, have %d: %w", n, have, ctx.Err())
		}
	}
}

// Handled returns how often the proxy acted in m's kind of mode (Latency and
// HTTPStatus regardless of their parameters): connections forwarded for
// Pass and Latency, connections reset for Reset, connections swallowed for
// Blackhole, HTTP requests answered for HTTPStatus. Refused connects never
// reach the proxy, so Handled(Refuse) is always 0.
func (p *Proxy) Handled(m Mode) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handled[m.kind]
}

// SetMode switches to m and closes every open connection. Leaving Refuse
// re-listens on the same port, retrying for up to about 2 s; if that fails
// the proxy stays in Refuse and the error is returned.
func (p *Proxy) SetMode(m Mode) error {
	p.life.Lock()
	defer p.life.Unlock()

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("otlptest: SetMode on closed Proxy")
	}
	old := p.mode
	if old == m {
		p.mu.Unlock()
		return nil
	}
	p.mode = m
	conns := p.takeConnsLocked()
	var ln net.Listener
	if m.kind == kindRefuse {
		ln, p.ln = p.ln, nil
	}
	p.mu.Unlock()

	if ln != nil {
		_ = ln.Close()
	}
	for _, pc := range conns {
		pc.close()
	}
	if old.kind != kindRefuse || m.kind == kindRefuse {
		return nil
	}
	ln, err := listenLoopback(p.addr, relistenTimeout)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.mode = Refuse
		return err
	}
	p.ln = ln
	p.wg.Add(1)
	go p.acceptLoop(ln)
	return nil
}

// takeConnsLocked empties the connection set; closing a connection makes
// its goroutine exit, which would otherwise race to delete it.
func (p *Proxy) takeConnsLocked() []*proxyConn {
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	clear(p.conns)
	return conns
}

// Close stops listening, closes every connection and waits for all of the
// proxy's goroutines to end. It is idempotent.
func (p *Proxy) Close() {
	p.life.Lock()
	defer p.life.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	ln := p.ln
	p.ln = nil
	conns := p.takeConnsLocked()
	p.mu.Unlock()

	if ln != nil {
		_ = ln.Close()
	}
	for _, pc := range conns {
		pc.close()
	}
	p.wg.Wait()
}

func (p *Proxy) acceptLoop(ln net.Listener) {
	defer p.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return // listener closed by SetMode(Refuse) or Close
		}
		// Registering under the same lock that SetMode takes guarantees a
		// connection is either closed by a mode change or handled in the
		// new mode, never left running in the old one.
		p.mu.Lock()
		if p.closed || p.ln != ln {
			p.mu.Unlock()
			_ = conn.Close()
			return
		}
		pc := &proxyConn{client: conn, done: make(chan struct{})}
		p.conns[pc] = struct{}{}
		p.accepted++
		close(p.changed)
		p.changed = make(chan struct{})
		mode := p.mode
		if mode.kind != kindReset && mode.kind != kindHTTPStatus {
			p.handled[mode.kind]++
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pc, mode)
	}
}

func (p *Proxy) serve(pc *proxyConn, m Mode) {
	defer p.wg.Done()
	defer func() {
		pc.close()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	switch m.kind {
	case kindPass, kindLatency:
		p.forward(pc, m.delay)
	case kindReset:
		p.reset(pc)
	case kindBlackhole:
		_, _ = io.Copy(io.Discard, pc.client)
	case kindHTTPStatus:
		p.answer(pc, m)
	}
}

func (p *Proxy) forward(pc *proxyConn, delay time.Duration) {
	up, err := net.DialTimeout("tcp", p.upstream, upstreamDialTimeout)
	if err != nil {
		return // the client sees its connection closed, as with a dead backend
	}
	if !pc.setUpstream(up) {
		_ = up.Close()
		return
	}
	toUpstream := make(chan struct{})
	go func() {
		defer close(toUpstream)
		_, _ = io.Copy(up, pc.client)
		pc.close()
	}()
	copyDelayed(pc.client, up, delay, pc.done)
	pc.close()
	<-toUpstream
}

// copyDelayed copies src to dst, waiting delay before writing each chunk.
func copyDelayed(dst io.Writer, src io.Reader, delay time.Duration, done <-chan struct{}) {
	if delay <= 0 {
		_, _ = io.Copy(dst, src)
		return
	}
	buf := make([]byte, 32<<10)
	t := time.NewTimer(0)
	<-t.C
	defer t.Stop()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			t.Reset(delay)
			select {
			case <-t.C:
			case <-done:
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) reset(pc *proxyConn) {
	// Wait for the request to start so the reset hits it mid-flight rather
	// than looking like a refused or idle-closed connection.
	buf := make([]byte, 512)
	if _, err := pc.client.Read(buf); err != nil {
		return
	}
	if tcp, ok := pc.client.(*net.TCPConn); ok {
		// Linger 0 turns Close into an RST instead of a FIN.
		_ = tcp.SetLinger(0)
	}
	p.mu.Lock()
	p.handled[kindReset]++
	p.mu.Unlock()
	pc.close()
}

func (p *Proxy) answer(pc *proxyConn, m Mode) {
	br := bufio.NewReader(pc.client)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		// The whole body must be consumed or the next request on this
		// keep-alive connection would be parsed from its middle.
		_, err = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
		if err != nil {
			return
		}
		var b strings.Builder
		fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n", m.status, http.StatusText(m.status))
		if m.retryAfter != "" {
			fmt.Fprintf(&b, "Retry-After: %s\r\n", m.retryAfter)
		}
		if req.Close {
			b.WriteString("Connection: close\r\n")
		}
		b.WriteString("\r\n")
		// Counted before writing so a client that has the answer in hand
		// always finds it counted.
		p.mu.Lock()
		p.handled[kindHTTPStatus]++
		p.mu.Unlock()
		if _, err := io.WriteString(pc.client, b.String()); err != nil {
			return
		}
		if req.Close {
			return
		}
	}
}
