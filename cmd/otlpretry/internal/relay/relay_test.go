package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/otlpretry/otlpretry"
)

// downstream counts requests and fails them all, like a refused connection.
type downstream struct{ n atomic.Int64 }

func (d *downstream) RoundTrip(*http.Request) (*http.Response, error) {
	d.n.Add(1)
	return nil, errors.New("connection refused")
}

func newTestRelay(t *testing.T, maxBytes int64) (*Relay, *otlpretry.Transport, *downstream) {
	t.Helper()
	down := &downstream{}
	quiet := slog.New(slog.DiscardHandler)
	rt, err := otlpretry.New(otlpretry.WithDir(t.TempDir()), otlpretry.WithTransport(down),
		otlpretry.WithMaxBytes(maxBytes), otlpretry.WithImmediateRetryDelay(-1),
		otlpretry.WithProbe(-1, 0), otlpretry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Shutdown(context.Background()) })
	u, _ := url.Parse("http://upstream.invalid:4318")
	r, err := New(Config{Upstream: u, Transport: rt, Stats: rt.Stats, Logger: quiet, MaxBodyBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return r, rt, down
}

func serve(r http.Handler, method, path, ct string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

func TestStoredWhenUpstreamDownAndFullSpoolAsksToRetry(t *testing.T) {
	r, rt, down := newTestRelay(t, 4096)
	w := serve(r, "POST", "/v1/traces", "application/x-protobuf", bytes.Repeat([]byte{1}, 1000))
	if w.Code != 200 || w.Header().Get("Otlpretry-Spooled") != "1" {
		t.Fatalf("%d %v, want a 200 after storing", w.Code, w.Header())
	}
	if rt.Stats().Records != 1 || down.n.Load() == 0 {
		t.Fatalf("stats %+v, %d attempts", rt.Stats(), down.n.Load())
	}
	// Over the spool's cap: neither delivered nor stored, so the client
	// is told to come back.
	w = serve(r, "POST", "/v1/traces", "application/x-protobuf", bytes.Repeat([]byte{1}, 3500))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("%d %v, want 503 with Retry-After", w.Code, w.Header())
	}
	m := serve(r, "GET", "/metrics", "", nil).Body.String()
	for _, line := range []string{
		`otlpretry_relay_requests_total{code="503",signal="traces"} 1`,
		`otlpretry_exports_dropped_total{reason="full"} 1`,
		"otlpretry_spool_records 1",
		"otlpretry_circuit_open 1",
	} {
		if !strings.Contains(m, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestEmptyExportAnsweredLocally(t *testing.T) {
	r, rt, down := newTestRelay(t, 1<<20)
	w := serve(r, "POST", "/v1/logs", "application/json", nil)
	if w.Code != 200 || w.Body.String() != "{}" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%d %q %v", w.Code, w.Body.String(), w.Header())
	}
	w = serve(r, "POST", "/v1/logs", "application/x-protobuf", nil)
	if w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("%d %q", w.Code, w.Body.String())
	}
	if down.n.Load() != 0 || rt.Stats().Records != 0 {
		t.Errorf("an empty export went on: %d attempts, %+v", down.n.Load(), rt.Stats())
	}
}

func TestLimitsAndRoutes(t *testing.T) {
	r, rt, down := newTestRelay(t, 1<<20)
	for _, c := range []struct {
		method, path, ct string
		body             []byte
		want             int
	}{
		{"POST", "/v1/traces", "application/x-protobuf", make([]byte, 1<<20+1), 413},
		{"POST", "/v1/traces", "", []byte("x"), 415},
		{"POST", "/v1/traces", "application/protobuf; x", []byte("x"), 415},
		{"DELETE", "/v1/traces", "application/x-protobuf", nil, 405},
		{"POST", "/v1/traces/", "application/x-protobuf", []byte("x"), 404},
		{"POST", "/healthz", "", nil, 405},
		{"GET", "/healthz", "", nil, 200},
		{"GET", "/status", "", nil, 200},
		{"GET", "/metrics", "", nil, 200},
	} {
		w := serve(r, c.method, c.path, c.ct, c.body)
		if w.Code != c.want {
			t.Errorf("%s %s (%s, %d bytes): %d, want %d", c.method, c.path, c.ct, len(c.body), w.Code, c.want)
		}
	}
	if down.n.Load() != 0 || rt.Stats().Records != 0 || rt.Stats().Dropped.Total() != 0 {
		t.Errorf("a refused request went on: %d attempts, %+v", down.n.Load(), rt.Stats())
	}
}

func TestBearerToken(t *testing.T) {
	u, _ := url.Parse("http://u:4318")
	r, err := New(Config{Upstream: u, AuthToken: "s3cret", Stats: func() otlpretry.Stats { return otlpretry.Stats{} },
		Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Header.Get("Authorization") != "" {
				t.Error("the client's token was forwarded upstream")
			}
			return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(""))}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	for auth, want := range map[string]int{
		"": 401, "Bearer": 401, "Bearer ": 401, "Bearer s3cre": 401, "Bearer s3cret2": 401, "Basic s3cret": 401,
		"Bearer s3cret": 200, "bearer s3cret": 200,
	} {
		req := httptest.NewRequest("POST", "/v1/traces", strings.NewReader("x"))
		req.Header.Set("Content-Type", "application/x-protobuf")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != want {
			t.Errorf("Authorization %q: %d, want %d", auth, w.Code, want)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
