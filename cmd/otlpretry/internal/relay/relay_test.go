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

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// downstream counts requests and fails them all, like a refused connection.
type downstream struct{ n atomic.Int64 }

func (d *downstream) RoundTrip(*http.Request) (*http.Response, error) {
	d.n.Add(1)
	return nil, errors.New("connection refused")
}

func newTestRelay(t testing.TB, maxBytes int64) (*Relay, *otlpretry.Transport, *downstream) {
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
	r, err := New(Config{Destinations: testDestinations("http://upstream.invalid:4318"), Transport: rt, Stats: rt.Stats, Logger: quiet, MaxBodyBytes: 1 << 20})
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
	w := serve(r, "POST", "/v1/traces", "application/x-protobuf", protobufBody(1000))
	if w.Code != 200 || w.Header().Get("Otlpretry-Spooled") != "1" {
		t.Fatalf("%d %v, want a 200 after storing", w.Code, w.Header())
	}
	if rt.Stats().Records != 1 || down.n.Load() == 0 {
		t.Fatalf("stats %+v, %d attempts", rt.Stats(), down.n.Load())
	}
	// Over the spool's cap: neither delivered nor stored, so the client
	// is told to come back.
	w = serve(r, "POST", "/v1/traces", "application/x-protobuf", protobufBody(3500))
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
	r, err := New(Config{Destinations: testDestinations("http://u:4318"), AuthToken: "s3cret", Stats: func() otlpretry.Stats { return otlpretry.Stats{} },
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
		req := httptest.NewRequest("POST", "/v1/traces", bytes.NewReader(protobufBody(10)))
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

// testDestinations sends each signal to base/v1/<signal>, without headers.
func testDestinations(base string) []otlpenv.Destination {
	var dests []otlpenv.Destination
	for _, s := range otlpenv.Signals {
		u, err := url.Parse(base + "/v1/" + s.String())
		if err != nil {
			panic(err)
		}
		dests = append(dests, otlpenv.Destination{Signal: s, URL: u, From: otlpenv.EndpointVar})
	}
	return dests
}

// protobufBody is a well-formed export of any signal, exactly n bytes
// long (n >= 4): one resource_* entry holding a field no OTLP schema
// knows, padded.
func protobufBody(n int) []byte {
	for pad := n; pad >= 0; pad-- {
		inner := protowire.AppendTag(nil, 999, protowire.BytesType)
		inner = protowire.AppendBytes(inner, make([]byte, pad))
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, inner)
		if len(b) == n {
			return b
		}
	}
	panic("no body of that size")
}

// fakeUpstream is a collector on 127.0.0.1 that counts what it gets; while
// down it answers 503.
type fakeUpstream struct {
	*httptest.Server
	requests atomic.Int64
	down     atomic.Bool
}

func startUpstream(t *testing.T) *fakeUpstream {
	u := &fakeUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		u.requests.Add(1)
		if u.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(u.Close)
	return u
}

// spoolRecords counts the records a spool folder holds, with spool.Walk.
func spoolRecords(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	if err := spool.Walk(dir, func(_ spool.StoredRecord, err error) error {
		n++
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// A body the upstream could not decode is answered 400 with the reason,
// one too large once inflated 413, whether the upstream is up or down:
// it reaches neither the upstream nor the spool, and is logged once.
func TestMalformedBodiesRefusedUpOrDown(t *testing.T) {
	good, _ := otlptest.TraceBody(3)
	for _, down := range []bool{false, true} {
		t.Run(map[bool]string{false: "upstream up", true: "upstream down"}[down], func(t *testing.T) {
			up := startUpstream(t)
			up.down.Store(down)
			dir := t.TempDir()
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			rt, err := otlpretry.New(otlpretry.WithDir(dir), otlpretry.WithImmediateRetryDelay(-1),
				otlpretry.WithProbe(0, 0), otlpretry.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Shutdown(context.Background())
			r, err := New(Config{Destinations: testDestinations(up.URL), Transport: rt, Stats: rt.Stats,
				Logger: logger, MaxBodyBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name, ct, enc string
				body          []byte
				code          int
				msg           string
			}{
				{"garbage as protobuf", "application/x-protobuf", "", []byte("hello, this is not protobuf"), 400,
					"the body is not valid protobuf (ExportTraceServiceRequest): at byte 2: field 13"},
				{"truncated protobuf", "application/x-protobuf", "", good[:len(good)-5], 400,
					"its length runs past the end of the message"},
				{"invalid JSON", "application/json", "", []byte(`{"resourceSpans":[}`), 400,
					"the body is not valid JSON: at byte 19: invalid character '}'"},
				{"invalid JSON with charset", "application/json; charset=utf-8", "", []byte(`{"resourceSpans"`), 400,
					"the body is not valid JSON"},
				{"gzip that is not", "application/x-protobuf", "gzip", good, 400,
					"Content-Encoding is gzip but the body is not compressed that way"},
				{"gzip bomb", "application/x-protobuf", "gzip", gzipped(make([]byte, 2<<20)), 413,
					"the body inflates to over 1048576 bytes"},
			} {
				req := httptest.NewRequest("POST", "/v1/traces", bytes.NewReader(c.body))
				req.Header.Set("Content-Type", c.ct)
				if c.enc != "" {
					req.Header.Set("Content-Encoding", c.enc)
				}
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				if w.Code != c.code || !strings.Contains(w.Body.String(), c.msg) {
					t.Errorf("%s: %d %q, want %d saying %q", c.name, w.Code, w.Body.String(), c.code, c.msg)
				}
				if n := up.requests.Load(); n != 0 {
					t.Fatalf("%s: the upstream got %d request(s)", c.name, n)
				}
			}
			if n := spoolRecords(t, dir); n != 0 {
				t.Errorf("the spool holds %d record(s) after refused bodies", n)
			}
			if st := rt.Stats(); st.Spooled != 0 || st.Direct != 0 || st.Dropped.Total() != 0 {
				t.Errorf("stats after refused bodies: %+v", st)
			}
			if n := strings.Count(logs.String(), "refused a body"); n != 1 {
				t.Errorf("%d log lines about refused bodies, want 1 (rate-limited):\n%s", n, logs.String())
			}

			// Control: a good body goes on, stored while the upstream is
			// down, so the checks above could have seen a record.
			w := serve(r, "POST", "/v1/traces", "application/x-protobuf", good)
			if w.Code != 200 || up.requests.Load() == 0 {
				t.Fatalf("good export: %d, %d upstream requests", w.Code, up.requests.Load())
			}
			want := 0
			if down {
				want = 1
			}
			if n := spoolRecords(t, dir); n != want {
				t.Errorf("the spool holds %d record(s) after the good export, want %d", n, want)
			}
		})
	}
}

// The answer for a stored export keeps the request's media type whatever
// its parameters: JSON is answered with an empty JSON response.
func TestStoredAnswerKeepsMediaType(t *testing.T) {
	r, rt, _ := newTestRelay(t, 1<<20)
	for _, c := range []struct{ ct, wantCT, wantBody string }{
		{"application/json; charset=utf-8", "application/json", "{}"},
		{"Application/JSON", "application/json", "{}"},
		{"application/json", "application/json", "{}"},
		{"application/x-protobuf; proto=opentelemetry", "application/x-protobuf", ""},
	} {
		body := protobufBody(20)
		if strings.Contains(c.wantCT, "json") {
			body = []byte(`{"resourceSpans":[]}`)
		}
		w := serve(r, "POST", "/v1/traces", c.ct, body)
		if w.Code != 200 || w.Header().Get("Otlpretry-Spooled") != "1" ||
			w.Header().Get("Content-Type") != c.wantCT || w.Body.String() != c.wantBody {
			t.Errorf("%s: %d %q %q (spooled %q), want 200 %s %q", c.ct, w.Code, w.Header().Get("Content-Type"),
				w.Body.String(), w.Header().Get("Otlpretry-Spooled"), c.wantCT, c.wantBody)
		}
	}
	if n := rt.Stats().Records; n != 4 {
		t.Errorf("%d stored, want 4", n)
	}
}

// A signal without a destination is refused, saying how to give one.
func TestSignalWithoutDestination(t *testing.T) {
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) {
		t.Error("a request for a signal without destination went on")
		return nil, errors.New("no")
	})
	r, err := New(Config{Destinations: testDestinations("http://u:4318")[:1], Transport: rt,
		Stats: func() otlpretry.Stats { return otlpretry.Stats{} }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w := serve(r, "POST", "/v1/metrics", "application/x-protobuf", protobufBody(10))
	if w.Code != 404 || !strings.Contains(w.Body.String(), "forwards no metrics: start it with --metrics-endpoint") {
		t.Errorf("%d %q", w.Code, w.Body.String())
	}
}
