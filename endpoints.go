package otlpretry

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// endpoints remembers, in memory only, the full URL and headers of the
// latest live request to each endpoint, so that spooled exports, which
// carry neither credentials nor query strings, are sent with the current
// ones.
type endpoints struct {
	mu   sync.Mutex // guards live
	live map[string]liveRequest
	seen chan struct{} // closed at the first live request
}

type liveRequest struct {
	url    string
	header http.Header
}

func newEndpoints() *endpoints {
	return &endpoints{live: map[string]liveRequest{}, seen: make(chan struct{})}
}

// endpointKey identifies an endpoint without anything secret:
// scheme://host/path, lower-case host.
func endpointKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Scheme + "://" + strings.ToLower(u.Host) + u.Path
}

func (e *endpoints) observe(req *http.Request) {
	key := endpointKey(req.URL.String())
	e.mu.Lock()
	defer e.mu.Unlock()
	if prev, ok := e.live[key]; ok && prev.url == req.URL.String() && sameHeader(prev.header, req.Header) {
		return
	}
	if len(e.live) == 0 {
		close(e.seen)
	}
	e.live[key] = liveRequest{url: req.URL.String(), header: req.Header.Clone()}
}

func (e *endpoints) lookup(recordURL string) (liveRequest, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l, ok := e.live[endpointKey(recordURL)]
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
