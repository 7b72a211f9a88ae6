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
	mu     sync.Mutex // guards live and parsed
	live   map[endpointID]liveRequest
	parsed map[string]endpointID // stored URL -> its endpoint, so a drain parses each URL once
	seen   chan struct{}         // closed at the first live request
}

// maxParsed bounds the parsed cache; past it the cache starts again.
const maxParsed = 256

// endpointID names an endpoint without anything secret. A struct rather
// than a string so that observing a request, on every export, allocates
// nothing.
type endpointID struct{ scheme, host, path string }

func idOf(u *url.URL) endpointID {
	return endpointID{scheme: u.Scheme, host: strings.ToLower(u.Host), path: u.Path}
}

type liveRequest struct {
	url    url.URL
	header http.Header
}

func newEndpoints() *endpoints {
	return &endpoints{live: map[endpointID]liveRequest{}, parsed: map[string]endpointID{}, seen: make(chan struct{})}
}

func (e *endpoints) observe(req *http.Request) {
	id := idOf(req.URL)
	e.mu.Lock()
	defer e.mu.Unlock()
	if prev, ok := e.live[id]; ok && prev.url == *req.URL && sameHeader(prev.header, req.Header) {
		return
	}
	if len(e.live) == 0 {
		close(e.seen)
	}
	e.live[id] = liveRequest{url: *req.URL, header: req.Header.Clone()}
}

// lookup finds the live request to the endpoint of a stored URL.
func (e *endpoints) lookup(recordURL string) (liveRequest, bool) {
	e.mu.Lock()
	id, ok := e.parsed[recordURL]
	e.mu.Unlock()
	if !ok {
		u, err := url.Parse(recordURL)
		if err != nil {
			return liveRequest{}, false
		}
		id = idOf(u)
		e.mu.Lock()
		if len(e.parsed) >= maxParsed {
			clear(e.parsed)
		}
		e.parsed[recordURL] = id
		e.mu.Unlock()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	l, ok := e.live[id]
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
