package demo

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestTCPFrontModes(t *testing.T) {
	r, err := NewGRPCReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := NewTCPFront(r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := dialReceiver(t, f.Addr())
	if err := exportAll(ctx, cc); err != nil {
		t.Fatalf("pass: %v", err)
	}

	if err := f.SetMode(Refuse); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp4", f.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("refuse: connect gave %v, want connection refused", err)
	}
	if err := exportAll(ctx, cc); err == nil {
		t.Error("refuse: an export went through")
	}
	if err := f.SetMode(Unavailable); err == nil {
		t.Error("a TCP front took a mode it cannot play")
	}

	if err := f.SetMode(Pass); err != nil {
		t.Fatal(err)
	}
	// The same address serves again: a new connection's exports go through.
	if err := exportAll(ctx, dialReceiver(t, f.Addr())); err != nil {
		t.Fatalf("pass again: %v", err)
	}
	if got := r.Counts().Requests; got != 6 {
		t.Errorf("receiver got %d requests, want 6", got)
	}
}
