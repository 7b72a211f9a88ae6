package otlptest

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestListenLoopbackRejectsOtherAddresses(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "localhost:0", "[::1]:0", "127.0.0.2:0", "garbage"} {
		ln, err := listenLoopback(addr, 0)
		if err == nil {
			ln.Close()
			t.Errorf("listenLoopback(%q) succeeded, want refusal", addr)
		}
	}
}

func TestListenLoopbackRebindsSamePort(t *testing.T) {
	ln, err := listenLoopback("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ln2, err := listenLoopback(addr, relistenTimeout)
	if err != nil {
		t.Fatalf("rebind %s: %v", addr, err)
	}
	defer ln2.Close()
	if got := ln2.Addr().String(); got != addr {
		t.Fatalf("rebound on %s, want %s", got, addr)
	}
}

func TestListenLoopbackGivesUpWhilePortBusy(t *testing.T) {
	ln, err := listenLoopback("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	start := time.Now()
	_, err = listenLoopback(ln.Addr().String(), 30*time.Millisecond)
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("err = %v, want EADDRINUSE", err)
	}
	if waited := time.Since(start); waited < 30*time.Millisecond {
		t.Fatalf("gave up after %v, want at least the retry window", waited)
	}
}

func TestListenLoopbackWaitsForPortRelease(t *testing.T) {
	busy, err := listenLoopback("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()

	type result struct {
		ln  net.Listener
		err error
	}
	got := make(chan result, 1)
	go func() {
		ln, err := listenLoopback(addr, relistenTimeout)
		got <- result{ln, err}
	}()
	// Whether the goroutine has made its first attempt yet or not, freeing
	// the port now must let it bind within the retry window.
	busy.Close()
	r := <-got
	if r.err != nil {
		t.Fatalf("listen after release: %v", r.err)
	}
	r.ln.Close()
}
