package otlpretry

import (
	"net/http"
	"net/url"
	"sync"
)

// endpoints remembers, in memory only, the full URL and headers of the
// latest live request to each destination, so that spooled exports, which
// carry neither credentials nor query strings, are sent with the current
// ones.
type endpoints struct {
	mu   sync.Mutex // guards live
	live map[destination]liveRequest
	// grpc keeps the live connections and metadata of gRPC destinations.
	grpc *grpcConns
}

type liveRequest struct {
	url    url.URL
	header http.Header
}

func newEndpoints() *endpoints {
	return &endpoints{live: map[destination]liveRequest{}, grpc: newGRPCConns()}
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
// a live connection, with no request.
func (e *endpoints) lookup(d destination) (liveRequest, bool) {
	if d.isGRPC() {
		return liveRequest{}, e.grpc.has(d)
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
