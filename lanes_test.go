package otlpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/internal/retry"
)

const metricsPath = "/v1/metrics"

var (
	tokenA = http.Header{"Authorization": {"Bearer token-a"}}
	tokenB = http.Header{"Authorization": {"Bearer token-b"}}
)

// twoCollectors starts A and B, each checking that every request carries
// its own token and no other.
func twoCollectors(t *testing.T) (a, b *otlptest.Collector) {
	a, b = otlptest.StartCollector(t), otlptest.StartCollector(t)
	a.RequireHeader("Authorization", tokenA.Get("Authorization"))
	b.RequireHeader("Authorization", tokenB.Get("Authorization"))
	return a, b
}

// post sends one export to endpoint through rt, as an exporter does, and
// tells whether it was stored rather than delivered.
func post(t *testing.T, rt *Transport, endpoint string, header http.Header) (spooled bool) {
	t.Helper()
	body, _ := otlptest.TraceBody(2)
	if strings.HasSuffix(endpoint, metricsPath) {
		body = otlptest.MetricsBody(2)
	}
	req, _ := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := rt.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export to %s: %d", endpoint, resp.StatusCode)
	}
	return resp.Header.Get("Otlpretry-Spooled") == "1"
}

// nextEventFor waits for the sender's next decision of the given kind
// about the destination of endpoint.
func (h *harness) nextEventFor(kind, endpoint string) senderEvent {
	h.t.Helper()
	u, _ := url.Parse(endpoint)
	dest := destinationOf(u)
	for {
		if e := h.nextEvent(kind); e.dest == dest {
			return e
		}
	}
}

// destinationStats returns the Stats entry of endpoint.
func destinationStats(t *testing.T, st Stats, endpoint string) DestinationStats {
	t.Helper()
	for _, d := range st.Destinations {
		if d.URL == endpoint {
			return d
		}
	}
	t.Fatalf("no destination %s in %+v", endpoint, st.Destinations)
	return DestinationStats{}
}

// waitData waits until a collector's count (WaitSpans, WaitDataPoints)
// reaches n: stored exports may arrive merged, fewer requests than exports.
func waitData(t *testing.T, wait func(context.Context, int) error, n int) {
	t.Helper()
	if err := wait(ctxTimeout(t, 10*time.Second), n); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, c *otlptest.Collector, path string, n int) {
	t.Helper()
	if err := c.WaitRequests(ctxTimeout(t, 10*time.Second), path, n); err != nil {
		t.Fatal(err)
	}
}

// TestFailingDestinationNeverDelaysAnother: traces go to A, metrics to B,
// through one Transport. While A refuses connections or answers 503, B's
// live exports all go direct (none stored), and B's backlog, left by an
// earlier process, drains; A's exports are stored and delivered once A
// is back. Every request carries its own destination's token.
func TestFailingDestinationNeverDelaysAnother(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(a *otlptest.Collector)
		up   func(t *testing.T, a *otlptest.Collector)
		want retry.Outcome
	}{
		{"refused", func(a *otlptest.Collector) { a.Stop() },
			func(t *testing.T, a *otlptest.Collector) {
				if err := a.Start(); err != nil {
					t.Fatal(err)
				}
			}, retry.Unreachable},
		{"503", func(a *otlptest.Collector) { a.SetDefault(otlptest.Answer{Status: 503}) },
			func(t *testing.T, a *otlptest.Collector) { a.ResetDefault() }, retry.ServerBusy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := twoCollectors(t)
			dir := filepath.Join(t.TempDir(), "spool")
			b.Stop()
			storeFor(t, dir, b.Endpoint(otlptest.Metrics), tokenB, 3)
			if err := b.Start(); err != nil {
				t.Fatal(err)
			}
			tc.down(a)
			h := newHarnessOn(t, a, dir, WithImmediateRetryDelay(-1), WithMaxHold(-1),
				WithEndpointHeaders(b.URL(), tokenB))
			aURL, bURL := a.Endpoint(otlptest.Traces), b.Endpoint(otlptest.Metrics)

			if !post(t, h.rt, aURL, tokenA) {
				t.Fatal("export to A while it is down was not stored")
			}
			e := h.nextEventFor("wait", aURL)
			if e.out != tc.want {
				t.Fatalf("A's wait follows %v, want %v", e.out, tc.want)
			}
			// B's backlog drains while A waits, the clock standing still.
			waitData(t, b.WaitDataPoints, 6)
			for i := range 5 {
				if post(t, h.rt, bURL, tokenB) {
					t.Fatalf("live export %d to B was stored while A is down", i)
				}
				if !post(t, h.rt, aURL, tokenA) {
					t.Fatalf("live export %d to A went direct while its circuit is open", i)
				}
			}
			st := h.rt.Stats()
			if st.Direct != 5 || st.Spooled != 6 || st.Delivered != 3 || b.DataPoints() != 16 || !st.CircuitOpen {
				t.Fatalf("while A is down: %+v, B data points %d", st, b.DataPoints())
			}
			da, db := destinationStats(t, st, aURL), destinationStats(t, st, bURL)
			if da.State != "waiting" || !da.CircuitOpen || da.Cause == "" || da.NextAttempt.IsZero() {
				t.Errorf("A: %+v", da)
			}
			if db.State != "healthy" || db.CircuitOpen || db.Cause != "" {
				t.Errorf("B: %+v", db)
			}

			tc.up(t, a)
			h.clock.Advance(e.wait)
			if err := h.rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			st = h.rt.Stats()
			if st.Records != 0 || st.Delivered != 9 || a.Spans() != 12 || st.Quarantined != 0 || st.CircuitOpen {
				t.Fatalf("after A's return: %+v, A spans %d", st, a.Spans())
			}
			if a.BadCredentials() != 0 || b.BadCredentials() != 0 {
				t.Fatalf("requests with a missing or crossed token: A %d, B %d", a.BadCredentials(), b.BadCredentials())
			}
		})
	}
}

// TestRetryAfterHoldsOnlyItsDestination: A's Retry-After of 30 s holds
// A's exports, and only A's: B's backlog is delivered meanwhile, and A is
// tried again when the 30 s are over, not before.
func TestRetryAfterHoldsOnlyItsDestination(t *testing.T) {
	a, b := twoCollectors(t)
	dir := filepath.Join(t.TempDir(), "spool")
	b.Stop()
	storeFor(t, dir, b.Endpoint(otlptest.Metrics), tokenB, 2)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	a.Script(otlptest.Answer{Status: 503, Header: http.Header{"Retry-After": {"30"}}})
	h := newHarnessOn(t, a, dir, WithImmediateRetryDelay(-1), WithMaxHold(-1),
		WithEndpointHeaders(b.URL(), tokenB))
	aURL, bURL := a.Endpoint(otlptest.Traces), b.Endpoint(otlptest.Metrics)
	if !post(t, h.rt, aURL, tokenA) {
		t.Fatal("A's 503 did not store the export")
	}
	if e := h.nextEventFor("wait", aURL); e.wait != 30*time.Second {
		t.Fatalf("A waits %v, want its Retry-After of 30 s", e.wait)
	}
	waitData(t, b.WaitDataPoints, 4)
	if post(t, h.rt, bURL, tokenB) {
		t.Fatal("a live export to B was stored during A's Retry-After")
	}
	h.clock.Advance(29 * time.Second)
	if got := destinationStats(t, h.rt.Stats(), aURL); got.State != "waiting" || got.Cause != "HTTP 503 Service Unavailable" {
		t.Errorf("A during its Retry-After: %+v", got)
	}
	if a.Requests(tracesPath) != 1 {
		t.Fatalf("A was sent to %d times before its Retry-After ended", a.Requests(tracesPath))
	}
	h.clock.Advance(time.Second)
	waitFor(t, a, tracesPath, 2)
	h.nextEvent("idle")
	if st := h.rt.Stats(); st.Records != 0 || st.Delivered != 3 || st.Direct != 1 || a.BadCredentials()+b.BadCredentials() != 0 {
		t.Fatalf("stats %+v, bad credentials A %d B %d", st, a.BadCredentials(), b.BadCredentials())
	}
}

// TestLeftOversWaitForTheirOwnCredentials: exports an earlier process
// left for A and for B, with only B's headers configured here: B's go at
// once with B's token; A's wait for credentials (in Stats and in
// ForceFlush's error, which does not wait for them) and go, with A's
// token and never B's, as soon as a live request to A brings it.
func TestLeftOversWaitForTheirOwnCredentials(t *testing.T) {
	a, b := twoCollectors(t)
	a.Stop()
	b.Stop()
	dir := filepath.Join(t.TempDir(), "spool")
	storeFor(t, dir, a.Endpoint(otlptest.Traces), tokenA, 3)
	storeFor(t, dir, b.Endpoint(otlptest.Metrics), tokenB, 2)
	for _, c := range []*otlptest.Collector{a, b} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// The harness configures empty headers for its collector; here that
	// is a third one, so that A has none configured.
	h := newHarnessOn(t, otlptest.StartCollector(t), dir, WithEndpointHeaders(b.URL(), tokenB))
	aURL, bURL := a.Endpoint(otlptest.Traces), b.Endpoint(otlptest.Metrics)

	err := h.rt.ForceFlush(ctxTimeout(t, 10*time.Second))
	if !errors.Is(err, ErrNotDelivered) || !strings.Contains(err.Error(), "3 export(s)") ||
		!strings.Contains(err.Error(), aURL+": waiting for credentials") || strings.Contains(err.Error(), bURL) {
		t.Fatalf("ForceFlush: %v, want A's 3 exports waiting for credentials", err)
	}
	if b.DataPoints() != 4 || a.Requests(tracesPath) != 0 {
		t.Fatalf("B got %d data points (want 4), A %d requests (want none)", b.DataPoints(), a.Requests(tracesPath))
	}
	st := h.rt.Stats()
	if da := destinationStats(t, st, aURL); da.State != "waiting for credentials" || da.CircuitOpen {
		t.Fatalf("A: %+v", da)
	}
	if st.Records != 3 || st.CircuitOpen {
		t.Fatalf("stats %+v", st)
	}

	// A live export to A brings its token; A's backlog follows at once.
	if post(t, h.rt, aURL, tokenA) {
		t.Fatal("a live export to A was stored")
	}
	waitData(t, a.WaitSpans, 8)
	if err := h.rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	st = h.rt.Stats()
	if st.Records != 0 || st.Delivered != 5 || st.Quarantined != 0 || a.Spans() != 8 {
		t.Fatalf("stats %+v, A spans %d", st, a.Spans())
	}
	if a.BadCredentials() != 0 || b.BadCredentials() != 0 {
		t.Fatalf("requests with a missing or crossed token: A %d, B %d", a.BadCredentials(), b.BadCredentials())
	}
	if destinationStats(t, st, aURL).State != "healthy" {
		t.Fatalf("A after its credentials came: %+v", destinationStats(t, st, aURL))
	}
}

// BenchmarkCircuitLookup: the hot path reads a destination's circuit from
// the published snapshot, without locks, whatever the number of lanes.
func BenchmarkCircuitLookup(b *testing.B) {
	c := newCircuits()
	for i := range 64 {
		d := destination{scheme: "https", host: fmt.Sprintf("collector-%d:4318", i), path: "/v1/traces"}
		v := &laneView{dest: d}
		v.open.Store(i%2 == 0)
		c.add(v)
	}
	d := &delivery{circuits: c}
	u, _ := url.Parse("https://collector-7:4318/v1/traces")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d.circuitOpen(destinationOf(u)) {
				b.Fatal("collector-7's circuit is closed")
			}
		}
	})
}
