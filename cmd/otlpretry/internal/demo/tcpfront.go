package demo

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// TCPFront is a fault-injecting TCP proxy on 127.0.0.1 between the
// exporters and a receiver, for protocols the HTTP Front cannot proxy
// (OTLP/gRPC). It knows two modes: Pass forwards every connection's bytes
// both ways; Refuse closes the listening socket and every connection, so
// that connects fail with "connection refused". It keeps its port across
// Refuse, like a collector that comes back at the same address.
type TCPFront struct {
	addr   string
	target string

	mu     sync.Mutex // guards all below
	ln     net.Listener
	conns  map[net.Conn]struct{} // both ends of every forwarded connection
	closed bool
}

// NewTCPFront starts a TCPFront in Pass mode forwarding to target, a
// host:port.
func NewTCPFront(target string) (*TCPFront, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &TCPFront{addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	f.ln = ln
	go f.acceptLoop(ln)
	return f, nil
}

// Addr is the host:port the exporters use.
func (f *TCPFront) Addr() string { return f.addr }

// SetMode switches to Pass or Refuse. Leaving Refuse listens again on the
// same port.
func (f *TCPFront) SetMode(m Mode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("front closed")
	}
	switch m {
	case Refuse:
		f.closeLocked()
	case Pass:
		if f.ln != nil {
			return nil
		}
		ln, err := relisten(f.addr)
		if err != nil {
			return err
		}
		f.ln = ln
		go f.acceptLoop(ln)
	default:
		return fmt.Errorf("a TCP front cannot play mode %v", m)
	}
	return nil
}

// Close stops the front.
func (f *TCPFront) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.closeLocked()
}

// closeLocked closes the listener and every connection.
func (f *TCPFront) closeLocked() {
	if f.ln != nil {
		_ = f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}

func (f *TCPFront) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by SetMode(Refuse) or Close
		}
		go f.forward(ln, c)
	}
}

// forward joins c to a new connection to the target until either side
// ends or the front closes both.
func (f *TCPFront) forward(ln net.Listener, c net.Conn) {
	up, err := net.DialTimeout("tcp4", f.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !f.track(ln, c, up) {
		_ = c.Close()
		_ = up.Close()
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done // one direction ended: end both
	f.untrack(c, up)
	_ = c.Close()
	_ = up.Close()
	<-done
}

// track registers the pair unless the listener that accepted c has been
// closed meanwhile, in which case the connection must not live on.
func (f *TCPFront) track(ln net.Listener, c, up net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != ln {
		return false
	}
	f.conns[c] = struct{}{}
	f.conns[up] = struct{}{}
	return true
}

func (f *TCPFront) untrack(c, up net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
	delete(f.conns, up)
}
