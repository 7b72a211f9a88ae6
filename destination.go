package otlpretry

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otlpretry/otlpretry/internal/bridge"
)

// destination is where an export goes: its scheme, host (lower-cased) and
// path, never anything secret. Each destination has its own delivery lane
// (lane.go). A struct rather than a string so that finding the
// destination of a live request, on every export, allocates nothing.
//
// The scheme names the protocol too: http and https for OTLP/HTTP, grpc
// and grpcs (TLS) for OTLP/gRPC, whose host is the connection's target
// and whose path is the Export method. An OTLP/HTTP and an OTLP/gRPC
// endpoint on the same host are two destinations, each with its lane.
type destination struct {
	scheme, host, path string
}

func destinationOf(u *url.URL) destination {
	return destination{scheme: u.Scheme, host: strings.ToLower(u.Host), path: u.Path}
}

// String is the destination's URL, safe to log: it has no user
// information and no query string.
func (d destination) String() string {
	return (&url.URL{Scheme: d.scheme, Host: d.host, Path: d.path}).String()
}

// isGRPC tells a destination reached over gRPC.
func (d destination) isGRPC() bool { return d.scheme == "grpc" || d.scheme == "grpcs" }

// target is d as the gRPC adapter names it.
func (d destination) target() bridge.Target {
	return bridge.Target{Scheme: d.scheme, Host: d.host, Path: d.path}
}

// laneView is what the hot path and Stats read of a lane. Only the
// delivery goroutine writes it; everyone else reads, without locks.
type laneView struct {
	dest destination
	// open: exports to the destination go straight to the spool.
	open atomic.Bool
	// wantsLive: the lane waits for a live request to the destination,
	// which brings credentials; the first to see it set reports it.
	wantsLive atomic.Bool
	// wantsReach: the lane waits on an unreachable destination, so an
	// answer on the direct path ends the wait.
	wantsReach atomic.Bool
	status     atomic.Pointer[DestinationStats]
}

// circuits publishes every lane's view: a map replaced whole when a lane
// is added, so that readers take no lock.
type circuits struct {
	m atomic.Pointer[map[destination]*laneView]
}

func newCircuits() *circuits {
	c := &circuits{}
	m := map[destination]*laneView{}
	c.m.Store(&m)
	return c
}

// view returns the view of d's lane, or nil when d has none yet.
func (c *circuits) view(d destination) *laneView { return (*c.m.Load())[d] }

// add publishes v; only the delivery goroutine calls it.
func (c *circuits) add(v *laneView) {
	old := *c.m.Load()
	m := make(map[destination]*laneView, len(old)+1)
	for k, x := range old {
		m[k] = x
	}
	m[v.dest] = v
	c.m.Store(&m)
}

// anyOpen tells whether some destination's circuit is open.
func (c *circuits) anyOpen() bool {
	for _, v := range *c.m.Load() {
		if v.open.Load() {
			return true
		}
	}
	return false
}

// DestinationStats is the state of delivery to one destination.
type DestinationStats struct {
	// URL is the destination (scheme, host and path), without user
	// information or query string.
	URL string
	// State is "healthy", "waiting" (backing off after a failure) or
	// "waiting for credentials" (exports stored for it wait for a live
	// request to it, or WithEndpointHeaders for it).
	State string
	// CircuitOpen: new exports to it go straight to the spool.
	CircuitOpen bool
	// Cause of the last failure (connection refused, name not found, TLS
	// handshake failed and why, timeout, connection reset, HTTP status),
	// empty while healthy.
	Cause string
	// NextAttempt is when the spool is next sent to it while waiting;
	// zero otherwise.
	NextAttempt time.Time
}

// Lane states as DestinationStats names them.
const (
	stateHealthy     = "healthy"
	stateWaiting     = "waiting"
	stateCredentials = "waiting for credentials"
)

// destinationCache maps stored URLs to their destination, so that a
// drain parses each URL once. Safe for concurrent use.
type destinationCache struct {
	mu sync.Mutex // guards m
	m  map[string]destinationEntry
}

type destinationEntry struct {
	dest destination
	url  *url.URL // nil when the URL cannot be used
}

// maxParsed bounds the cache; past it the cache starts again.
const maxParsed = 256

func (c *destinationCache) lookup(raw string) destinationEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[raw]; ok {
		return e
	}
	var e destinationEntry
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		e = destinationEntry{dest: destinationOf(u), url: u}
	}
	if c.m == nil || len(c.m) >= maxParsed {
		c.m = map[string]destinationEntry{}
	}
	c.m[raw] = e
	return e
}

// stats returns every lane's published state, sorted by URL.
func (c *circuits) stats() []DestinationStats {
	m := *c.m.Load()
	out := make([]DestinationStats, 0, len(m))
	for _, v := range m {
		if st := v.status.Load(); st != nil {
			out = append(out, *st)
		}
	}
	slices.SortFunc(out, func(a, b DestinationStats) int { return strings.Compare(a.URL, b.URL) })
	return out
}
