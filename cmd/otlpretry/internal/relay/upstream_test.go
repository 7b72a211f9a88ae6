package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// grpcDest is signal's OTLP/gRPC destination at scheme://addr.
func grpcDest(signal spool.Signal, scheme, addr string, header http.Header) otlpenv.Destination {
	return otlpenv.Destination{Signal: signal, URL: &url.URL{Scheme: scheme, Host: addr},
		Protocol: otlpenv.ProtocolGRPC, Header: header}
}

// newGRPCUpstreamRelay is a relay for dests over a real transport on a
// spool in dir, configured as the command configures it (the gRPC
// destinations' headers for stored exports), its gRPC receiver served.
func newGRPCUpstreamRelay(t *testing.T, dir string, dests []otlpenv.Destination, cfg Config) (*Relay, *otlpretry.Transport, string) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	opts := []otlpretry.Option{otlpretry.WithDir(dir), otlpretry.WithCallerRetry(),
		otlpretry.WithImmediateRetryDelay(-1), otlpretry.WithLogger(quiet)}
	for _, d := range dests {
		opts = append(opts, otlpretry.WithEndpointHeaders(d.StoredURL(), d.Header))
	}
	rt, err := otlpretry.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Destinations, cfg.Transport, cfg.Stats, cfg.Logger = dests, rt, rt.Stats, quiet
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rt.Shutdown(context.Background())
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r, rt, serveGRPC(t, r)
}

// post sends body to the relay's OTLP/HTTP receiver.
func post(r http.Handler, path, ct, encoding string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

// traceRequest is an export of n spans with distinct IDs from seed.
func traceRequest(t *testing.T, seed byte, n int) []byte {
	t.Helper()
	ss := &tracepb.ScopeSpans{}
	for i := range n {
		tid := bytes.Repeat([]byte{seed}, 16)
		sid := bytes.Repeat([]byte{seed, byte(i + 1)}, 4)
		ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: tid, SpanId: sid, Name: "op"})
	}
	b, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{ss}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func metricsRequest(t *testing.T, points int) []byte {
	t.Helper()
	g := &metricspb.Gauge{}
	for range points {
		g.DataPoints = append(g.DataPoints, &metricspb.NumberDataPoint{Value: &metricspb.NumberDataPoint_AsInt{AsInt: 1}})
	}
	b, err := proto.Marshal(&colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{{Name: "m", Data: &metricspb.Metric_Gauge{Gauge: g}}}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func logsRequest(t *testing.T, records int) []byte {
	t.Helper()
	sl := &logspb.ScopeLogs{}
	for range records {
		sl.LogRecords = append(sl.LogRecords, &logspb.LogRecord{SeverityText: "INFO"})
	}
	b, err := proto.Marshal(&collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{sl}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	jsonTraceID = "5b8efff798038103d269b633813fc60c"
	jsonSpanID  = "eee19b7ec3c1b174"
	// jsonTraces is OTLP/JSON as the specification writes it: hex IDs,
	// the kind as a number, 64-bit integers as strings.
	jsonTraces = `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"j"}}]},
		"scopeSpans":[{"spans":[{"traceId":"` + jsonTraceID + `","spanId":"` + jsonSpanID + `","name":"json-span","kind":2,
		"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000000001"}]}]}]}`
)

func mustHex(t *testing.T, s string, dst []byte) {
	t.Helper()
	if n, err := hex.Decode(dst, []byte(s)); err != nil || n != len(dst) {
		t.Fatalf("hex %q: %v", s, err)
	}
}

// The relay forwards to an OTLP/gRPC upstream what it receives as
// OTLP/HTTP protobuf (plain and gzip), as OTLP/HTTP JSON (converted once,
// its hex trace and span IDs intact) and as OTLP/gRPC: every item reaches
// the upstream once, over the signal's Export method, and each client is
// answered in its own protocol and media type.
func TestGRPCUpstreamFromEveryClient(t *testing.T) {
	col := otlptest.StartGRPCCollector(t)
	var dests []otlpenv.Destination
	for _, s := range otlpenv.Signals {
		dests = append(dests, grpcDest(s, "http", col.Addr(), nil))
	}
	r, rt, addr := newGRPCUpstreamRelay(t, t.TempDir(), dests, Config{})

	if w := post(r, "/v1/traces", "application/x-protobuf", "", traceRequest(t, 1, 3)); w.Code != http.StatusOK ||
		w.Header().Get("Content-Type") != "application/x-protobuf" {
		t.Fatalf("HTTP protobuf: %d %q %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	if w := post(r, "/v1/traces", "application/x-protobuf", "gzip", gzipped(traceRequest(t, 2, 2))); w.Code != http.StatusOK {
		t.Fatalf("HTTP protobuf gzip: %d %s", w.Code, w.Body)
	}
	if w := post(r, "/v1/traces", "application/json", "", []byte(jsonTraces)); w.Code != http.StatusOK ||
		w.Header().Get("Content-Type") != "application/json" || w.Body.String() != "{}" {
		t.Fatalf("HTTP JSON: %d %q %q, want 200 application/json {}", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	if w := post(r, "/v1/metrics", "application/json", "gzip", gzipped([]byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m",
		"gauge":{"dataPoints":[{"asInt":"5"},{"asDouble":1.5}]}}]}]}]}`))); w.Code != http.StatusOK {
		t.Fatalf("HTTP JSON gzip metrics: %d %s", w.Code, w.Body)
	}
	if _, err := rawCall(t, addr, traceExport, traceRequest(t, 3, 4), nil); err != nil {
		t.Fatalf("gRPC traces: %v", err)
	}
	if _, err := rawCall(t, addr, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", metricsRequest(t, 5), nil); err != nil {
		t.Fatalf("gRPC metrics: %v", err)
	}
	if w := post(r, "/v1/logs", "application/x-protobuf", "", logsRequest(t, 2)); w.Code != http.StatusOK {
		t.Fatalf("HTTP logs: %d %s", w.Code, w.Body)
	}
	if _, err := rawCall(t, addr, "/opentelemetry.proto.collector.logs.v1.LogsService/Export", logsRequest(t, 3), nil); err != nil {
		t.Fatalf("gRPC logs: %v", err)
	}

	if col.Spans() != 10 || col.SpanDuplicates() != 0 || col.DataPoints() != 7 || col.LogRecords() != 5 {
		t.Errorf("upstream has %d spans (%d duplicates), %d points, %d log records; want 10 once each, 7, 5",
			col.Spans(), col.SpanDuplicates(), col.DataPoints(), col.LogRecords())
	}
	var tid [16]byte
	var sid [8]byte
	mustHex(t, jsonTraceID, tid[:])
	mustHex(t, jsonSpanID, sid[:])
	if !col.HasSpan(tid, sid) {
		t.Errorf("the JSON span did not arrive with trace ID %s and span ID %s", jsonTraceID, jsonSpanID)
	}
	for _, c := range col.Calls() {
		if !slices.Contains([]string{traceExport, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
			"/opentelemetry.proto.collector.logs.v1.LogsService/Export"}, c.Method) {
			t.Errorf("upstream call to %s", c.Method)
		}
	}
	if st := rt.Stats(); st.Records != 0 || st.Spooled != 0 {
		t.Errorf("stats %+v: nothing should be stored", st)
	}
	// A JSON body that is not an export is refused before it is sent.
	if w := post(r, "/v1/traces", "application/json", "", []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}`)); w.Code != http.StatusBadRequest {
		t.Errorf("JSON with a bad trace ID: %d, want 400", w.Code)
	}
}

// waitReady waits until cc is connected.
func waitReady(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatalf("connection not ready: %v", s)
		}
	}
}

func flush(t *testing.T, rt *otlpretry.Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.ForceFlush(ctx); err != nil {
		t.Fatalf("ForceFlush: %v", err)
	}
}

// With the gRPC upstream down, exports are answered as stored and kept on
// disk; once it is back they are delivered over gRPC, each once, with
// the destination's metadata. Each signal's headers go to its own
// destination only: traces and logs share a host, metrics has another.
func TestGRPCUpstreamDownStoredThenDeliveredWithOwnMetadata(t *testing.T) {
	a, b := otlptest.StartGRPCCollector(t), otlptest.StartGRPCCollector(t)
	dests := []otlpenv.Destination{
		grpcDest(spool.SignalTraces, "http", a.Addr(), http.Header{"X-Key": {"traces-secret"}}),
		grpcDest(spool.SignalMetrics, "http", b.Addr(), http.Header{"X-Key": {"metrics-secret"}, "Authorization": {"Bearer m"}}),
		grpcDest(spool.SignalLogs, "http", a.Addr(), http.Header{"X-Logs": {"logs-secret"}}),
	}
	dir := t.TempDir()
	r, rt, addr := newGRPCUpstreamRelay(t, dir, dests, Config{})

	// Up: live calls.
	if w := post(r, "/v1/traces", "application/x-protobuf", "", traceRequest(t, 1, 2)); w.Code != http.StatusOK {
		t.Fatalf("traces: %d %s", w.Code, w.Body)
	}
	if w := post(r, "/v1/metrics", "application/x-protobuf", "", metricsRequest(t, 3)); w.Code != http.StatusOK {
		t.Fatalf("metrics: %d %s", w.Code, w.Body)
	}
	// Down: stored.
	a.Stop()
	b.Stop()
	if w := post(r, "/v1/traces", "application/json", "", []byte(jsonTraces)); w.Code != http.StatusOK || w.Body.String() != "{}" {
		t.Fatalf("JSON traces while down: %d %q, want 200 {} (stored)", w.Code, w.Body)
	}
	if _, err := rawCall(t, addr, traceExport, traceRequest(t, 2, 3), nil); err != nil {
		t.Fatalf("gRPC traces while down: %v, want OK (stored)", err)
	}
	if w := post(r, "/v1/metrics", "application/x-protobuf", "", metricsRequest(t, 4)); w.Code != http.StatusOK {
		t.Fatalf("metrics while down: %d %s", w.Code, w.Body)
	}
	if w := post(r, "/v1/logs", "application/x-protobuf", "", logsRequest(t, 5)); w.Code != http.StatusOK {
		t.Fatalf("logs while down: %d %s", w.Code, w.Body)
	}
	if n := spoolRecords(t, dir); n != 4 {
		t.Fatalf("%d records on disk while down, want 4", n)
	}
	// Back: delivered over gRPC.
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	for _, cc := range r.conns {
		waitReady(t, cc)
	}
	flush(t, rt)
	if a.Spans() != 6 || a.SpanDuplicates() != 0 || b.DataPoints() != 7 || a.LogRecords() != 5 {
		t.Errorf("after recovery: %d spans (%d duplicates), %d points, %d log records; want 6 once each, 7, 5",
			a.Spans(), a.SpanDuplicates(), b.DataPoints(), a.LogRecords())
	}
	if st := rt.Stats(); st.Records != 0 || st.Delivered != 4 {
		t.Errorf("stats %+v: want 4 delivered from the spool, none left", st)
	}

	want := map[string]map[string]string{
		traceExport: {"x-key": "traces-secret"},
		"/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": {"x-key": "metrics-secret", "authorization": "Bearer m"},
		"/opentelemetry.proto.collector.logs.v1.LogsService/Export":       {"x-logs": "logs-secret"},
	}
	for name, col := range map[string]*otlptest.GRPCCollector{"a": a, "b": b} {
		for _, c := range col.Calls() {
			w, ok := want[c.Method]
			if !ok {
				t.Errorf("%s: call to %s", name, c.Method)
				continue
			}
			for _, k := range []string{"x-key", "x-logs", "authorization"} {
				got := c.MD.Get(k)
				if v, mine := w[k]; mine && (len(got) != 1 || got[0] != v) {
					t.Errorf("%s: %s call has %s=%q, want %q", name, c.Method, k, got, v)
				} else if !mine && len(got) != 0 {
					t.Errorf("%s: %s call has another destination's %s=%q", name, c.Method, k, got)
				}
			}
		}
	}
}

// The upstream's refusals come back to each client in its protocol, and
// nothing refused is stored: InvalidArgument is 400 with a google.rpc.Status
// body, PermissionDenied 403, and to a gRPC client the status as it came.
func TestGRPCUpstreamRefusals(t *testing.T) {
	col := otlptest.StartGRPCCollector(t)
	dir := t.TempDir()
	r, rt, addr := newGRPCUpstreamRelay(t, dir, []otlpenv.Destination{grpcDest(spool.SignalTraces, "http", col.Addr(), nil)}, Config{})
	col.Script(status.Error(codes.InvalidArgument, "bad span"), status.Error(codes.PermissionDenied, "no"),
		status.Error(codes.InvalidArgument, "bad span"), status.Error(codes.ResourceExhausted, "too big"))

	w := post(r, "/v1/traces", "application/x-protobuf", "", traceRequest(t, 1, 1))
	var st spb.Status
	if w.Code != http.StatusBadRequest || proto.Unmarshal(w.Body.Bytes(), &st) != nil ||
		st.GetCode() != int32(codes.InvalidArgument) || st.GetMessage() != "upstream answered InvalidArgument: bad span" {
		t.Errorf("InvalidArgument to HTTP protobuf: %d %q", w.Code, w.Body)
	}
	if w := post(r, "/v1/traces", "application/json", "", []byte(jsonTraces)); w.Code != http.StatusForbidden ||
		!bytes.Contains(w.Body.Bytes(), []byte(`"upstream answered PermissionDenied: no"`)) {
		t.Errorf("PermissionDenied to HTTP JSON: %d %q", w.Code, w.Body)
	}
	_, err := rawCall(t, addr, traceExport, traceRequest(t, 2, 1), nil)
	if s, _ := status.FromError(err); s.Code() != codes.InvalidArgument || s.Message() != "bad span" {
		t.Errorf("InvalidArgument to gRPC: %v", err)
	}
	if w := post(r, "/v1/traces", "application/x-protobuf", "", traceRequest(t, 3, 1)); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("ResourceExhausted without RetryInfo to HTTP: %d, want 413", w.Code)
	}
	if n := spoolRecords(t, dir); n != 0 || rt.Stats().Rejected != 4 {
		t.Errorf("%d records stored, %d rejected; want none stored, 4 rejected", n, rt.Stats().Rejected)
	}
}

// An https:// gRPC destination is reached over TLS: the upstream serves
// TLS only, and gets every span, live and stored while it was down, with
// the metadata. Without the test root the connection is refused, and the
// relay stores the export rather than send it without TLS.
func TestGRPCUpstreamTLS(t *testing.T) {
	cert, pool := otlptest.Certificate(t)
	col := otlptest.StartGRPCCollector(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	dests := []otlpenv.Destination{grpcDest(spool.SignalTraces, "https", col.Addr(), http.Header{"X-Key": {"k"}})}
	r, rt, addr := newGRPCUpstreamRelay(t, t.TempDir(), dests, Config{GRPCTLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})

	if w := post(r, "/v1/traces", "application/x-protobuf", "", traceRequest(t, 1, 2)); w.Code != http.StatusOK {
		t.Fatalf("over TLS: %d %s", w.Code, w.Body)
	}
	col.Stop()
	if _, err := rawCall(t, addr, traceExport, traceRequest(t, 2, 3), nil); err != nil {
		t.Fatalf("while down: %v", err)
	}
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, r.conns[0])
	flush(t, rt)
	if col.Spans() != 5 || col.SpanDuplicates() != 0 {
		t.Errorf("upstream has %d spans (%d duplicates), want 5 once each", col.Spans(), col.SpanDuplicates())
	}
	for _, c := range col.Calls() {
		if got := c.MD.Get("x-key"); len(got) != 1 || got[0] != "k" {
			t.Errorf("call without the metadata: %v", c.MD)
		}
	}

	// The system's roots do not trust the test certificate: nothing is
	// delivered, the export is kept.
	dir := t.TempDir()
	r2, _, _ := newGRPCUpstreamRelay(t, dir, dests, Config{})
	before := len(col.Calls())
	if w := post(r2, "/v1/traces", "application/x-protobuf", "", traceRequest(t, 3, 1)); w.Code != http.StatusOK {
		t.Fatalf("untrusted certificate: %d %s, want 200 (stored)", w.Code, w.Body)
	}
	if n := spoolRecords(t, dir); n != 1 || len(col.Calls()) != before {
		t.Errorf("untrusted certificate: %d records stored, %d calls reached the upstream; want 1, none", n, len(col.Calls())-before)
	}
}
