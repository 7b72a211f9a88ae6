package otlptest

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// loopbackHost is the only host this package ever listens on. The test
// machines must never expose a port, so this is enforced rather than merely
// defaulted.
const loopbackHost = "127.0.0.1"

// relistenTimeout bounds how long Collector.Start and Proxy.SetMode wait for
// a just-released port to become bindable again.
const relistenTimeout = 2 * time.Second

// relistenBackoff is the pause between bind attempts. The kernel offers no
// notification for "port became free", so polling is the only option here.
const relistenBackoff = 10 * time.Millisecond

// listenLoopback listens on addr, which must be 127.0.0.1:PORT.
//
// Restarting a server on the same port is central to outage tests (clients
// keep their configured URL across a "redeploy"). Go sets SO_REUSEADDR, so
// TIME_WAIT sockets do not block the bind, but the old socket may still be
// mid-close in another goroutine, so EADDRINUSE is retried for up to retryFor.
func listenLoopback(addr string, retryFor time.Duration) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("otlptest: listen address %q: %w", addr, err)
	}
	if host != loopbackHost {
		return nil, fmt.Errorf("otlptest: refusing to listen on %q: only %s is allowed", addr, loopbackHost)
	}
	deadline := time.Now().Add(retryFor)
	var tick *time.Ticker
	for {
		ln, err := net.Listen("tcp4", addr)
		if err == nil {
			if tick != nil {
				tick.Stop()
			}
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || !time.Now().Before(deadline) {
			if tick != nil {
				tick.Stop()
			}
			return nil, fmt.Errorf("otlptest: listen on %s: %w", addr, err)
		}
		if tick == nil {
			tick = time.NewTicker(relistenBackoff)
		}
		<-tick.C
	}
}
