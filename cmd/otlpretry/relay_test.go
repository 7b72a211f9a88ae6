package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/relay"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/spoolinfo"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// The header the relay adds upstream, from OTEL_EXPORTER_OTLP_HEADERS; its
// value must never reach the disk.
const (
	secretEnv   = "OTEL_EXPORTER_OTLP_HEADERS=x-api-key=s3cr%2Fet-k3y,x-tenant=acme"
	secretValue = "s3cr/et-k3y"
)

func TestRelayForwardsToUpstream(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	dir := t.TempDir()
	r := startRelay(t, cleanEnv(t, secretEnv, "OTEL_EXPORTER_OTLP_ENDPOINT="+col.URL()), "--dir", dir)

	want := 0
	for i := range 5 {
		body, keys := otlptest.TraceBody(10)
		want += len(keys)
		resp, _ := post(t, r.url("/v1/traces"), body, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Otlpretry-Spooled") != "" {
			t.Fatalf("export %d: %d (spooled %q), want a direct 200", i, resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
		}
	}
	// A gzipped body goes upstream as it came: still gzipped.
	body, keys := otlptest.TraceBody(7)
	want += len(keys)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(body)
	zw.Close()
	if resp, _ := post(t, r.url("/v1/traces"), gz.Bytes(), http.Header{"Content-Encoding": {"gzip"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("gzipped export: %d", resp.StatusCode)
	}
	if resp, _ := post(t, r.url("/v1/metrics"), otlptest.MetricsBody(3), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics export: %d", resp.StatusCode)
	}
	if resp, _ := post(t, r.url("/v1/logs"), otlptest.LogsBody(4), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("logs export: %d", resp.StatusCode)
	}
	if got := col.Spans(); got != want {
		t.Errorf("collector has %d spans, want %d", got, want)
	}
	if got := col.DataPoints(); got != 3 {
		t.Errorf("collector has %d data points, want 3", got)
	}
	if got := col.LogRecords(); got != 4 {
		t.Errorf("collector has %d log records, want 4", got)
	}
	h := col.LastHeader("/v1/traces")
	if h.Get("Content-Encoding") != "gzip" {
		t.Errorf("upstream Content-Encoding %q, want gzip (forwarded as is)", h.Get("Content-Encoding"))
	}
	if h.Get("X-Api-Key") != secretValue || h.Get("X-Tenant") != "acme" {
		t.Errorf("upstream headers %v, want those of OTEL_EXPORTER_OTLP_HEADERS, percent-decoded", h)
	}
	if got := col.BytesReceived(); got == 0 {
		t.Error("nothing received")
	}

	// A definite refusal comes back to the client as it came, and is
	// not stored.
	col.Script(otlptest.Answer{
		Status: http.StatusBadRequest,
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:   []byte("payload refused: test"),
	})
	body, _ = otlptest.TraceBody(2)
	resp, got := post(t, r.url("/v1/traces"), body, nil)
	if resp.StatusCode != http.StatusBadRequest || string(got) != "payload refused: test" ||
		resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("refusal came back as %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), got)
	}

	st := relayStatus(t, r)
	if st.Backlog.Records != 0 || st.Spooled != 0 || st.Rejected != 1 || st.Delivered.Direct != 8 || st.Circuit != "closed" {
		t.Errorf("/status = %+v; want no backlog, 8 direct, 1 rejected", st)
	}
	resp, got = get(t, r.url("/healthz"))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(got)) != "ok" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, got)
	}
	resp, got = get(t, r.url("/metrics"))
	for _, line := range []string{
		"otlpretry_spool_records 0",
		`otlpretry_exports_total{outcome="direct"} 8`,
		`otlpretry_exports_total{outcome="rejected"} 1`,
		`otlpretry_exports_dropped_total{reason="full"} 0`,
		"otlpretry_circuit_open 0",
		`otlpretry_relay_requests_total{code="200",signal="traces"} 6`,
		`otlpretry_relay_requests_total{code="400",signal="traces"} 1`,
	} {
		if !strings.Contains(string(got), line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// Every request the relay refuses is answered as documented, reaches
// neither the transport nor the spool (the upstream is down, so anything
// the transport got would be stored) nor the upstream.
func TestRelayRefusesBadRequestsAndStoresNothing(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	proxy := otlptest.StartProxy(t, col.URL())
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, cleanEnv(t), "--endpoint", proxy.URL(), "--dir", dir, "--auth-token-file", tokenFile)
	body, _ := otlptest.TraceBody(3)
	good := http.Header{"Authorization": {"Bearer tok-123"}}

	for _, c := range []struct {
		name, method, path string
		header             http.Header
		want               int
	}{
		{"unknown path", "POST", "/v1/profiles", good, 404},
		{"root", "POST", "/", good, 404},
		{"GET", "GET", "/v1/traces", good, 405},
		{"PUT", "PUT", "/v1/metrics", good, 405},
		{"no token", "POST", "/v1/traces", nil, 401},
		{"wrong token", "POST", "/v1/traces", http.Header{"Authorization": {"Bearer tok-124"}}, 401},
		{"token prefix", "POST", "/v1/traces", http.Header{"Authorization": {"Bearer tok-12"}}, 401},
		{"basic", "POST", "/v1/logs", http.Header{"Authorization": {"Basic tok-123"}}, 401},
		{"content type", "POST", "/v1/traces", http.Header{"Authorization": {"Bearer tok-123"}, "Content-Type": {"text/plain"}}, 415},
		{"encoding", "POST", "/v1/traces", http.Header{"Authorization": {"Bearer tok-123"}, "Content-Encoding": {"br"}}, 415},
	} {
		req, _ := http.NewRequest(c.method, r.url(c.path), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		for k, v := range c.header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
		if c.want == 405 && resp.Header.Get("Allow") != "POST" {
			t.Errorf("%s: Allow %q, want POST", c.name, resp.Header.Get("Allow"))
		}
		if c.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
		}
	}

	// Too large, announced by Content-Length: refused before any byte of
	// the body is read.
	if code := rawPost(t, r.Addr, relay.DefaultMaxBodyBytes+1, false); code != 413 {
		t.Errorf("Content-Length over 64 MiB: %d, want 413", code)
	}
	// Too large, chunked: refused once 64 MiB have been read.
	if code := rawPost(t, r.Addr, relay.DefaultMaxBodyBytes+1, true); code != 413 {
		t.Errorf("chunked body over 64 MiB: %d, want 413", code)
	}

	if n := countFiles(t, dir); n != 0 {
		t.Fatalf("the spool holds %d file(s) after refused requests, want none", n)
	}
	st := relayStatus(t, r)
	if st.Spooled != 0 || st.Backlog.Records != 0 || st.Dropped.Total != 0 {
		t.Errorf("/status after refused requests: %+v", st)
	}
	if n := col.Requests("/v1/traces") + col.Requests("/v1/metrics") + col.Requests("/v1/logs"); n != 0 {
		t.Errorf("upstream got %d requests", n)
	}

	// Control: the same export with the token is accepted and stored,
	// since the upstream is down.
	resp, _ := post(t, r.url("/v1/traces"), body, good)
	if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "1" {
		t.Fatalf("good export: %d, spooled %q; want a 200 after storing", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
	}
	if st := relayStatus(t, r); st.Backlog.Records != 1 {
		t.Errorf("backlog %d after the good export, want 1", st.Backlog.Records)
	}

	// SIGTERM: a clean exit within the bound, the backlog left on disk.
	start := time.Now()
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("SIGTERM to exit: %v", time.Since(start))
	rep, err := spoolinfo.Inspect(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Total.Records != 1 {
		t.Errorf("after shutdown the spool holds %d records, want 1", rep.Total.Records)
	}
}

// A relay killed with SIGKILL during an outage loses nothing it
// acknowledged: the next run on the same folder delivers it all.
func TestRelayKilledDuringOutageDeliversAfterRestart(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	proxy := otlptest.StartProxy(t, col.URL())
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := cleanEnv(t, secretEnv)
	r := startRelay(t, env, "--endpoint", proxy.URL(), "--dir", dir)

	var (
		mu   sync.Mutex
		keys []otlptest.SpanKey
		wg   sync.WaitGroup
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				body, k := otlptest.TraceBody(5)
				resp, _ := post(t, r.url("/v1/traces"), body, nil)
				if resp.StatusCode != http.StatusOK {
					t.Errorf("client %d export %d: %d", w, i, resp.StatusCode)
					continue
				}
				mu.Lock()
				keys = append(keys, k...) // acknowledged: must arrive
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if st := relayStatus(t, r); st.Backlog.Records != 40 {
		t.Errorf("backlog %d before the kill, want 40", st.Backlog.Records)
	}
	// The credentials from OTEL_EXPORTER_OTLP_HEADERS are nowhere on disk.
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(secretValue)) {
				t.Errorf("%s holds the secret header value", path)
			}
		}
		return nil
	})
	if code := r.signal(syscall.SIGKILL, 10*time.Second); code != -1 {
		t.Fatalf("exit code %d, want death by SIGKILL", code)
	}
	if col.Spans() != 0 {
		t.Fatalf("the collector got %d spans during the outage", col.Spans())
	}

	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r2 := startRelay(t, env, "--endpoint", proxy.URL(), "--dir", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := col.WaitSpans(ctx, len(keys)); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted relay delivered %d spans in %v", len(keys), time.Since(start))
	for _, k := range keys {
		if !col.HasSpan(k.TraceID, k.SpanID) {
			t.Errorf("span %v acknowledged but not delivered", k)
		}
	}
	if h := col.LastHeader("/v1/traces"); h.Get("X-Api-Key") != secretValue {
		t.Errorf("the backlog was sent without the configured headers: %v", h)
	}
	deadline := time.Now().Add(10 * time.Second)
	for relayStatus(t, r2).Backlog.Records != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if code := r2.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if rep, err := spoolinfo.Inspect(dir, time.Now()); err != nil || rep.Total.Records != 0 {
		t.Errorf("spool after delivery: %+v, %v", rep, err)
	}
}

func TestRelayConfigErrors(t *testing.T) {
	t.Parallel()
	env := cleanEnv(t)
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"no endpoint", nil, nil, "no upstream: give --endpoint or set OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"bad endpoint", nil, []string{"--endpoint", "ftp://x"}, "http:// or https://"},
		{"base variable ends in /v1/traces", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9/v1/traces"}, nil,
			`OTEL_EXPORTER_OTLP_ENDPOINT "http://127.0.0.1:9/v1/traces" is a base URL, to which /v1/<signal> is appended, but it already ends in /v1/traces: ` +
				`set OTEL_EXPORTER_OTLP_ENDPOINT to "http://127.0.0.1:9", or give this full URL with --traces-endpoint or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as given)`},
		{"base flag ends in /v1/logs", nil, []string{"--endpoint", "http://127.0.0.1:9/otlp/v1/logs"},
			`--endpoint "http://127.0.0.1:9/otlp/v1/logs" is a base URL`},
		{"no scheme", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318"}, nil,
			`OTEL_EXPORTER_OTLP_ENDPOINT: endpoint "collector:4318": no scheme: write http://collector:4318 (or https:// for TLS)`},
		{"gRPC scheme", nil, []string{"--endpoint", "grpc://127.0.0.1:4317"},
			`--endpoint: endpoint "grpc://127.0.0.1:4317": unsupported scheme "grpc": want an http:// or https:// URL (OTLP/HTTP)`},
		{"signal endpoint without scheme", []string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=127.0.0.1:9/v1/metrics"}, nil,
			"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: endpoint"},
		{"signal flag without scheme", nil, []string{"--logs-endpoint", "c:9"}, "--logs-endpoint: endpoint \"c:9\": no scheme"},
		{"loop", nil, []string{"--endpoint", "http://localhost:4318", "--listen", "127.0.0.1:4318"}, "own address"},
		{"signal loop", nil, []string{"--endpoint", "http://127.0.0.1:9", "--traces-endpoint", "http://localhost:4318/v1/traces", "--listen", "127.0.0.1:4318"},
			"(--traces-endpoint) is the relay's own address"},
		{"bad headers", []string{"OTEL_EXPORTER_OTLP_HEADERS=novalue"}, []string{"--endpoint", "http://127.0.0.1:9"}, "header #1"},
		{"bad signal headers", []string{"OTEL_EXPORTER_OTLP_LOGS_HEADERS=a=1,novalue"}, []string{"--endpoint", "http://127.0.0.1:9"},
			"OTEL_EXPORTER_OTLP_LOGS_HEADERS: header #2: missing '='"},
		{"one URL, two credentials", []string{
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:9/all", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:9/all",
			"OTEL_EXPORTER_OTLP_TRACES_HEADERS=authorization=a",
		}, nil, "traces and logs are both sent to http://127.0.0.1:9/all but with different headers"},
		{"bad sync", nil, []string{"--endpoint", "http://127.0.0.1:9", "--sync", "maybe"}, "unknown sync mode"},
		{"stray argument", nil, []string{"extra"}, "unexpected argument"},
	} {
		dir := t.TempDir()
		res := runCmd(t, append(append([]string{}, env...), c.env...), append([]string{"relay", "--dir", dir}, c.args...)...)
		if res.code != exitUsage || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", c.name, res.code, res.stderr, exitUsage, c.want)
		}
		if n := spoolRecords(t, dir); n != 0 {
			t.Errorf("%s: the spool holds %d record(s)", c.name, n)
		}
	}
}

// recorder is a collector on 127.0.0.1 that keeps the path and headers of
// every request it gets; while down it answers 503.
type recorder struct {
	*httptest.Server
	down atomic.Bool
	mu   sync.Mutex // guards seen
	seen []seenRequest
}

type seenRequest struct {
	path   string
	header http.Header
	ok     bool
}

func startRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		down := r.down.Load()
		r.mu.Lock()
		r.seen = append(r.seen, seenRequest{path: req.URL.Path, header: req.Header.Clone(), ok: !down})
		r.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) requests() []seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seenRequest(nil), r.seen...)
}

// accepted counts the requests to path answered 200.
func (r *recorder) accepted(path string) int {
	n := 0
	for _, s := range r.requests() {
		if s.ok && s.path == path {
			n++
		}
	}
	return n
}

// Each signal goes to its own endpoint with its own headers: per-signal
// endpoints used as given, the base one with /v1/<signal> appended; live
// exports, exports stored during an outage and exports left on disk by an
// earlier run alike. Every request either collector gets is checked, so a
// token sent to the wrong collector, or none, fails the test.
func TestRelayPerSignalEndpointsAndHeaders(t *testing.T) {
	t.Parallel()
	a, b := startRecorder(t), startRecorder(t)
	dir := t.TempDir()
	env := cleanEnv(t,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+b.URL+"/base",
		"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20general-token",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="+a.URL+"/custom/traces",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS=authorization=Bearer%20traces-token,x-tenant=a",
		// One export per request: the checks below count requests.
		"OTLPRETRY_MAX_REQUEST_BYTES=-1",
	)
	args := []string{"--dir", dir, "--logs-endpoint", b.URL + "/logs-in"}
	send := func(r *relayProc, traces, metrics, logs int) {
		t.Helper()
		for _, c := range []struct {
			path string
			n    int
		}{{"/v1/traces", traces}, {"/v1/metrics", metrics}, {"/v1/logs", logs}} {
			for range c.n {
				var body []byte
				switch c.path {
				case "/v1/traces":
					body, _ = otlptest.TraceBody(2)
				case "/v1/metrics":
					body = otlptest.MetricsBody(2)
				default:
					body = otlptest.LogsBody(2)
				}
				if resp, got := post(t, r.url(c.path), body, nil); resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %s", c.path, resp.StatusCode, got)
				}
			}
		}
	}

	// Both down: every export is stored, then left on disk.
	a.down.Store(true)
	b.down.Store(true)
	r := startRelay(t, env, args...)
	send(r, 3, 2, 2)
	st := relayStatus(t, r)
	if st.Backlog.Records != 7 {
		t.Errorf("backlog %d during the outage, want 7", st.Backlog.Records)
	}
	want := map[string]string{
		"traces": a.URL + "/custom/traces", "metrics": b.URL + "/base/v1/metrics", "logs": b.URL + "/logs-in",
	}
	if st.Upstream != b.URL+"/base" || fmt.Sprint(st.Upstreams) != fmt.Sprint(want) {
		t.Errorf("/status upstream %q, upstreams %v; want %s/base and %v", st.Upstream, st.Upstreams, b.URL, want)
	}
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}

	// Both up: a new run delivers what the first left, and live exports.
	a.down.Store(false)
	b.down.Store(false)
	r = startRelay(t, env, args...)
	send(r, 1, 1, 1)
	deadline := time.Now().Add(30 * time.Second)
	for a.accepted("/custom/traces") < 4 || b.accepted("/base/v1/metrics") < 3 || b.accepted("/logs-in") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("not delivered within 30 s: A %d traces, B %d metrics, %d logs",
				a.accepted("/custom/traces"), b.accepted("/base/v1/metrics"), b.accepted("/logs-in"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for relayStatus(t, r).Backlog.Records != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	for _, s := range a.requests() {
		if s.path != "/custom/traces" || s.header.Get("Authorization") != "Bearer traces-token" || s.header.Get("X-Tenant") != "a" {
			t.Errorf("A got %s with Authorization %q, X-Tenant %q; want only /custom/traces with the traces token",
				s.path, s.header.Get("Authorization"), s.header.Get("X-Tenant"))
		}
	}
	for _, s := range b.requests() {
		if (s.path != "/base/v1/metrics" && s.path != "/logs-in") || s.header.Get("Authorization") != "Bearer general-token" ||
			s.header.Values("X-Tenant") != nil {
			t.Errorf("B got %s with Authorization %q, X-Tenant %q; want metrics and logs with the general token only",
				s.path, s.header.Get("Authorization"), s.header.Get("X-Tenant"))
		}
	}
	if n := spoolRecords(t, dir); n != 0 {
		t.Errorf("the spool holds %d record(s) after delivery", n)
	}
}

// SIGTERM while an upload is still being received: the shutdown timeout
// cuts it, but the relay never acknowledged it, so it exits 0, and stores
// nothing of it.
func TestRelayExitsZeroWhenTimeoutCutsAnUpload(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	dir := t.TempDir()
	r := startRelay(t, cleanEnv(t), "--endpoint", col.URL(), "--dir", dir, "--shutdown-timeout", "300ms")

	conn, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	// With Expect: 100-continue the relay says when its handler starts
	// reading the body: from then on the upload is in flight.
	fmt.Fprintf(conn, "POST /v1/traces HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-protobuf\r\n"+
		"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n", r.Addr)
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("want 100 Continue, got %q, %v", line, err)
	}
	if _, err := conn.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM cut an upload, want 0:\n%s", code, r.Stderr.String())
	}
	if !strings.Contains(r.Stderr.String(), "requests still in flight at the shutdown timeout were cut") {
		t.Errorf("no line about the cut upload:\n%s", r.Stderr.String())
	}
	// The client was never told its export was taken.
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "HTTP/1.1 2") {
			t.Errorf("the cut upload was answered %q", line)
		}
		if err != nil {
			break
		}
	}
	if n := spoolRecords(t, dir); n != 0 || col.Requests("/v1/traces") != 0 {
		t.Errorf("the cut upload left %d record(s) and reached the collector %d time(s)", n, col.Requests("/v1/traces"))
	}
}

func relayStatus(t *testing.T, r *relayProc) relay.Status {
	t.Helper()
	resp, b := get(t, r.url("/status"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/status: %d %s", resp.StatusCode, b)
	}
	var st relay.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("/status: %v: %s", err, b)
	}
	return st
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// rawPost sends a traces export of size bytes over a bare connection
// (chunked or with a Content-Length) with the right token, writing the body
// while reading the answer, and returns the status code.
func rawPost(t *testing.T, addr string, size int64, chunked bool) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	head := "POST /v1/traces HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer tok-123\r\nContent-Type: application/x-protobuf\r\n"
	if chunked {
		head += "Transfer-Encoding: chunked\r\n\r\n"
	} else {
		head += fmt.Sprintf("Content-Length: %d\r\n\r\n", size)
	}
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	go func() {
		// Write errors are expected once the relay has answered and
		// closed the connection.
		chunk := make([]byte, 1<<20)
		for sent := int64(0); sent < size; {
			n := min(int64(len(chunk)), size-sent)
			if chunked {
				if _, err := fmt.Fprintf(conn, "%x\r\n", n); err != nil {
					return
				}
			}
			if _, err := conn.Write(chunk[:n]); err != nil {
				return
			}
			if chunked {
				if _, err := io.WriteString(conn, "\r\n"); err != nil {
					return
				}
			}
			sent += n
		}
		if chunked {
			io.WriteString(conn, "0\r\n\r\n")
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// spoolRecords counts the records a spool folder holds, with spool.Walk.
func spoolRecords(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := spool.Walk(dir, func(_ spool.StoredRecord, err error) error {
		n++
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

// countFiles counts regular files under dir.
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasSuffix(path, ".lock") {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
