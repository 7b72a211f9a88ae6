package demo

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// Mode is how the Front treats requests.
type Mode int

const (
	// Pass forwards every request to the receiver.
	Pass Mode = iota
	// Refuse closes the listening socket and every connection, so that
	// connects fail with "connection refused", as when nothing runs on the
	// collector's host.
	Refuse
	// Unavailable answers every request 503 itself, as a load balancer
	// whose backends are gone.
	Unavailable
)

func (m Mode) String() string {
	return [...]string{"pass", "refuse", "503"}[m]
}

// Front is a fault-injecting HTTP proxy on 127.0.0.1 between the exporters
// and the receiver. It keeps its port across Refuse, like a collector that
// comes back at the same address.
type Front struct {
	addr  string
	proxy *httputil.ReverseProxy

	mu     sync.Mutex // guards all below
	mode   Mode
	srv    *http.Server // nil while refusing
	closed bool
}

// NewFront starts a Front in Pass mode forwarding to target, a base URL.
func NewFront(target string) (*Front, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	f := &Front{
		addr: ln.Addr().String(),
		proxy: &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
			Transport: tr,
			ErrorLog:  log.New(io.Discard, "", 0),
		},
	}
	f.serve(ln)
	return f, nil
}

// URL is the base URL the exporters use.
func (f *Front) URL() string { return "http://" + f.addr }

func (f *Front) serve(ln net.Listener) {
	srv := &http.Server{
		Handler:           http.HandlerFunc(f.handle),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	f.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

func (f *Front) handle(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	mode := f.mode
	f.mu.Unlock()
	if mode == Unavailable {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	f.proxy.ServeHTTP(w, r)
}

// SetMode switches modes. Leaving Refuse listens again on the same port.
func (f *Front) SetMode(m Mode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("front closed")
	}
	old := f.mode
	f.mode = m
	switch {
	case m == Refuse && f.srv != nil:
		_ = f.srv.Close() // the listener and every connection
		f.srv = nil
	case m != Refuse && f.srv == nil:
		ln, err := relisten(f.addr)
		if err != nil {
			f.mode = old
			return err
		}
		f.serve(ln)
	}
	return nil
}

// relisten binds addr again, retrying briefly: the old socket may still be
// closing.
func relisten(addr string) (net.Listener, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		ln, err := net.Listen("tcp4", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close stops the front.
func (f *Front) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.srv != nil {
		_ = f.srv.Close()
		f.srv = nil
	}
}
