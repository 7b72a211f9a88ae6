package otlpretry

import (
	"net/http"
	"net/url"
	"sync"

	"github.com/otlpretry/otlpretry/internal/bridge"
)

// endpoints remembers, in memory only, the full URL and headers of the
// latest live request to each destination, so that spooled exports, which
// carry neither credentials nor query strings, are sent with the current
// ones.
type endpoints struct {
	mu   sync.Mutex // guards live, sender and closed
	live map[destination]liveRequest
	// sender sends stored exports to gRPC destinations over the live
	// connections it keeps; nil until the gRPC adapter (otlpretrygrpc)
	// gives one, with the first interceptor it makes for the Transport.
	sender bridge.Sender
	closed bool // Shutdown closed the sender
}

type liveRequest struct {
	url    url.URL
	header http.Header
}

func newEndpoints() *endpoints {
	return &endpoints{live: map[destination]liveRequest{}}
}

// grpcSender returns the sender of gRPC destinations, or nil.
func (e *endpoints) grpcSender() bridge.Sender {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sender
}

// senderOr returns the sender of gRPC destinations, made with newSender
// the first time (made is then true). One made after close is closed at
// once.
func (e *endpoints) senderOr(newSender func() bridge.Sender) (s bridge.Sender, made bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sender == nil {
		e.sender, made = newSender(), true
		if e.closed {
			e.sender.Close()
		}
	}
	return e.sender, made
}

// close closes the sender's own connections; the live ones are the
// exporters'.
func (e *endpoints) close() {
	e.mu.Lock()
	s := e.sender
	e.closed = true
	e.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// observe records req as the latest live request to d.
func (e *endpoints) observe(d destination, req *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if prev, ok := e.live[d]; ok && prev.url == *req.URL && sameHeader(prev.header, req.Header) {
		return
	}
	e.live[d] = liveRequest{url: *req.URL, header: req.Header.Clone()}
}

// lookup finds the live request to d. For a gRPC destination it reports
// a live call's connection and metadata, with no request.
func (e *endpoints) lookup(d destination) (liveRequest, bool) {
	if d.isGRPC() {
		s := e.grpcSender()
		return liveRequest{}, s != nil && s.Live(d.target())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	l, ok := e.live[d]
	return l, ok
}

func sameHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv := b[k]
		if len(av) != len(bv) {
			return false
		}
		for i := range av {
			if av[i] != bv[i] {
				return false
			}
		}
	}
	return true
}
