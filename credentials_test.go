package otlpretry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// storeFor exports n spans to endpoint with header through a transport on
// dir while the endpoint is down, so that they are stored, and shuts that
// transport down: what a process killed or stopped during an outage leaves.
func storeFor(t *testing.T, dir, endpoint string, header http.Header, n int) {
	t.Helper()
	rt, err := New(WithDir(dir), WithImmediateRetryDelay(-1), WithMaxHold(-1), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		body, _ := otlptest.TraceBody(2)
		if strings.HasSuffix(endpoint, "/v1/metrics") {
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
		if resp.Header.Get("Otlpretry-Spooled") != "1" {
			t.Fatalf("export to %s not stored: %d", endpoint, resp.StatusCode)
		}
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestEndpointHeadersNeverCrossDestinations: exports left for two
// destinations, each with its own token configured, reach each destination
// with its own token only; both receivers check every request.
func TestEndpointHeadersNeverCrossDestinations(t *testing.T) {
	a, b := otlptest.StartCollector(t), otlptest.StartCollector(t)
	a.RequireHeader("Authorization", "Bearer token-a")
	b.RequireHeader("Authorization", "Bearer token-b")
	a.Stop()
	b.Stop()
	dir := filepath.Join(t.TempDir(), "spool")
	storeFor(t, dir, a.Endpoint(otlptest.Traces), http.Header{"Authorization": {"Bearer token-a"}}, 3)
	storeFor(t, dir, b.Endpoint(otlptest.Metrics), http.Header{"Authorization": {"Bearer token-b"}}, 2)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}

	rt, err := New(WithDir(dir), WithLogger(slog.New(slog.DiscardHandler)),
		WithEndpointHeaders(a.URL(), http.Header{"Authorization": {"Bearer token-a"}}),
		WithEndpointHeaders(b.Endpoint(otlptest.Metrics), http.Header{"Authorization": {"Bearer token-b"}}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	if err := rt.ForceFlush(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := rt.Stats()
	if a.BadCredentials() != 0 || b.BadCredentials() != 0 {
		t.Fatalf("requests with a missing or crossed token: A %d, B %d", a.BadCredentials(), b.BadCredentials())
	}
	// Each destination's backlog goes in one merged request.
	if a.Requests("/v1/traces") != 1 || a.Spans() != 6 || b.Requests("/v1/metrics") != 1 || b.DataPoints() != 4 ||
		st.Delivered != 5 || st.Quarantined != 0 || st.Records != 0 {
		t.Fatalf("A %d requests %d spans, B %d requests %d data points, stats %+v",
			a.Requests("/v1/traces"), a.Spans(), b.Requests("/v1/metrics"), b.DataPoints(), st)
	}
}

// TestRefusedCredentialsWaitForALiveRequest: an export left by another
// process, sent without its destination's credentials (none live, none
// configured), is refused with 401; it is not quarantined but waits, and
// once a live request to the destination brings them it is delivered with
// them.
func TestRefusedCredentialsWaitForALiveRequest(t *testing.T) {
	coll := otlptest.StartCollector(t)
	coll.RequireHeader("Authorization", "Bearer token-a")
	coll.Stop()
	dir := filepath.Join(t.TempDir(), "spool")
	storeFor(t, dir, coll.Endpoint(otlptest.Traces), http.Header{"Authorization": {"Bearer token-a"}}, 1)
	if err := coll.Start(); err != nil {
		t.Fatal(err)
	}

	h := newHarnessOn(t, coll, dir)
	e := h.nextEvent("wait") // the left-over export was refused for want of credentials
	if st := h.rt.Stats(); st.Quarantined != 0 || st.Records != 1 || coll.BadCredentials() != 1 {
		t.Fatalf("after the 401: %+v, refused requests %d", st, coll.BadCredentials())
	}
	if !h.logs.has(slog.LevelWarn, "want of credentials") {
		t.Error("no warning that the export waits for credentials")
	}

	// A refusal of credentials says nothing of the live path: the circuit
	// stays closed and a live export with its credentials goes direct.
	if h.rt.Stats().CircuitOpen {
		t.Error("the circuit opened for a refusal of credentials")
	}
	resp, _, err := h.export(2, http.Header{"Authorization": {"Bearer token-a"}})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "" {
		t.Fatalf("live export: %d, spooled %q", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
	}
	h.clock.Advance(e.wait)
	h.nextEvent("idle")
	if st := h.rt.Stats(); st.Delivered != 1 || st.Quarantined != 0 || st.Records != 0 || coll.Spans() != 4 || coll.BadCredentials() != 1 {
		t.Fatalf("after the live request: %+v, spans %d, refused requests %d", st, coll.Spans(), coll.BadCredentials())
	}
}

// TestEndpointHeadersMatchTheirDestination: the longest configured URL of
// the same scheme and host whose path is the record's path or a parent of
// it gives the headers; nothing else does.
func TestEndpointHeadersMatchTheirDestination(t *testing.T) {
	c, err := newConfig([]Option{WithDir(t.TempDir()),
		WithEndpointHeaders("https://collector:4318", http.Header{"K": {"base"}}),
		WithEndpointHeaders("https://collector:4318/v1/traces", http.Header{"K": {"traces"}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ url, want string }{
		{"https://collector:4318/v1/traces", "traces"},
		{"https://COLLECTOR:4318/v1/metrics", "base"},
		{"https://collector:4318/v1/tracesx", "base"},
		{"http://collector:4318/v1/traces", ""},
		{"https://collector:4319/v1/traces", ""},
		{"https://other:4318/v1/traces", ""},
	} {
		u, _ := http.NewRequest(http.MethodPost, tc.url, nil)
		h, ok := c.headersFor(u.URL)
		if got := h.Get("K"); got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: got %q (%v), want %q", tc.url, got, ok, tc.want)
		}
	}
	if _, err := New(WithDir(t.TempDir()), WithEndpointHeaders("collector:4318", nil)); err == nil {
		t.Error("a URL without a scheme must fail New")
	}
}

// TestNoteNamesDestinationsWaitingForCredentials: a process whose stored
// exports wait for credentials says so in its note in the spool folder,
// which `otlpretry status` reads; once they are delivered the note says
// the destination is healthy.
func TestNoteNamesDestinationsWaitingForCredentials(t *testing.T) {
	coll := otlptest.StartCollector(t)
	coll.RequireHeader("Authorization", "Bearer token-a")
	coll.Stop()
	dir := filepath.Join(t.TempDir(), "spool")
	storeFor(t, dir, coll.Endpoint(otlptest.Traces), http.Header{"Authorization": {"Bearer token-a"}}, 2)
	if err := coll.Start(); err != nil {
		t.Fatal(err)
	}
	rt, err := New(WithDir(dir), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	if err := rt.ForceFlush(ctxTimeout(t, 10*time.Second)); !errors.Is(err, ErrNotDelivered) {
		t.Fatalf("ForceFlush: %v, want ErrNotDelivered", err)
	}
	note := func() ownerNote {
		t.Helper()
		owners, err := spool.Owners(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range owners {
			if o.Alive && o.Note != nil {
				var n ownerNote
				if err := json.Unmarshal(o.Note, &n); err != nil {
					t.Fatalf("note %q: %v", o.Note, err)
				}
				return n
			}
		}
		t.Fatalf("no note from the live process: %+v", owners)
		return ownerNote{}
	}
	want := noteDestination{URL: coll.Endpoint(otlptest.Traces), State: "waiting for credentials"}
	if n := note(); len(n.Destinations) != 1 || n.Destinations[0] != want {
		t.Fatalf("note %+v, want %+v", n, want)
	}

	body, _ := otlptest.TraceBody(1)
	req, _ := http.NewRequest(http.MethodPost, coll.Endpoint(otlptest.Traces), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Authorization", "Bearer token-a")
	resp, err := rt.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if err := rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := note(); len(n.Destinations) != 1 || n.Destinations[0].State != "healthy" {
		t.Fatalf("note after delivery %+v, want healthy", n)
	}
	if coll.BadCredentials() != 0 || coll.Spans() != 5 {
		t.Fatalf("refused requests %d, spans %d", coll.BadCredentials(), coll.Spans())
	}
}
