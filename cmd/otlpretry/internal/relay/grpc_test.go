package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/metric"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

const traceExport = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// serveGRPC serves r's gRPC receiver on 127.0.0.1 until the test ends and
// returns its address.
func serveGRPC(t *testing.T, r *Relay) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := r.NewGRPCServer()
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// rawCall sends body to method as it is, with the given metadata and call
// options, and returns the response's bytes.
func rawCall(t *testing.T, addr, method string, body []byte, md metadata.MD, opts ...grpc.CallOption) ([]byte, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	var resp []byte
	err = conn.Invoke(ctx, method, body, &resp, append([]grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}, opts...)...)
	return resp, err
}

// newGRPCRelay is a relay in front of col with a real transport on a spool
// in dir, its gRPC receiver served.
func newGRPCRelay(t *testing.T, col *otlptest.Collector, dir string, cfg Config, opts ...otlpretry.Option) (*Relay, *otlpretry.Transport, string) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	rt, err := otlpretry.New(append([]otlpretry.Option{otlpretry.WithDir(dir), otlpretry.WithCallerRetry(),
		otlpretry.WithImmediateRetryDelay(-1), otlpretry.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Shutdown(context.Background()) })
	cfg.Destinations, cfg.Transport, cfg.Stats = testDestinations(col.URL()), rt, rt.Stats
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	cfg.GRPCAddr = "grpc-under-test"
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, rt, serveGRPC(t, r)
}

// The OTel Go SDK's three gRPC exporters, plain and gzip-compressed, with
// the bearer token as metadata: every span, data point and log record
// reaches the HTTP upstream exactly once, and each call is counted.
func TestGRPCExportersReachUpstreamOnce(t *testing.T) {
	col := otlptest.StartCollector(t)
	r, rt, addr := newGRPCRelay(t, col, t.TempDir(), Config{AuthToken: "s3cret"})
	ctx := context.Background()
	auth := map[string]string{"authorization": "Bearer s3cret"}

	spans := 0
	for _, compressor := range []string{"", "gzip"} {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(), otlptracegrpc.WithHeaders(auth)}
		if compressor != "" {
			opts = append(opts, otlptracegrpc.WithCompressor(compressor))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			t.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
		for range 5 {
			_, span := tp.Tracer("relay-test").Start(ctx, "op")
			span.End()
			spans++
		}
		if err := tp.Shutdown(ctx); err != nil {
			t.Fatalf("traces (compressor %q): %v", compressor, err)
		}
	}

	mexp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(addr), otlpmetricgrpc.WithInsecure(), otlpmetricgrpc.WithHeaders(auth))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(mexp, sdkmetric.WithInterval(time.Hour))))
	counter, err := mp.Meter("relay-test").Int64Counter("requests")
	if err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{"/a", "/b", "/c"} {
		counter.Add(ctx, 1, metric.WithAttributes(attribute.String("route", route)))
	}
	if err := mp.Shutdown(ctx); err != nil {
		t.Fatalf("metrics: %v", err)
	}

	lexp, err := otlploggrpc.New(ctx, otlploggrpc.WithEndpoint(addr), otlploggrpc.WithInsecure(), otlploggrpc.WithHeaders(auth))
	if err != nil {
		t.Fatal(err)
	}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(lexp)))
	for i := range 4 {
		var rec otellog.Record
		rec.SetBody(attribute.IntValue(i))
		lp.Logger("relay-test").Emit(ctx, rec)
	}
	if err := lp.Shutdown(ctx); err != nil {
		t.Fatalf("logs: %v", err)
	}

	if col.Spans() != spans || col.SpanDuplicates() != 0 {
		t.Errorf("collector has %d spans (%d duplicates), want %d once each", col.Spans(), col.SpanDuplicates(), spans)
	}
	if col.DataPoints() != 3 {
		t.Errorf("collector has %d data points, want 3", col.DataPoints())
	}
	if col.LogRecords() != 4 || col.UniqueLogRecords() != 4 {
		t.Errorf("collector has %d log records (%d unique), want 4", col.LogRecords(), col.UniqueLogRecords())
	}
	if h := col.LastHeader("/v1/traces"); h.Get("Content-Type") != "application/x-protobuf" || h.Get("Authorization") != "" {
		t.Errorf("upstream headers %v: want protobuf and not the client's token", h)
	}
	if st := rt.Stats(); st.Direct != 15 || st.Records != 0 {
		t.Errorf("stats %+v, want 15 direct exports (10 traces, 1 metrics, 4 logs) and no backlog", st)
	}
	m := serve(r, "GET", "/metrics", "", nil).Body.String()
	for _, line := range []string{
		`otlpretry_relay_grpc_requests_total{code="OK",signal="traces"} 10`,
		`otlpretry_relay_grpc_requests_total{code="OK",signal="metrics"} 1`,
		`otlpretry_relay_grpc_requests_total{code="OK",signal="logs"} 4`,
	} {
		if !strings.Contains(m, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if got := r.Status().Receivers["grpc"].Requests["OK"]; got != 15 {
		t.Errorf("/status counts %d gRPC OK answers, want 15", got)
	}
}

// While the upstream is down the exporter is answered OK (stored), and
// everything arrives once it is back.
func TestGRPCStoredWhileUpstreamDownDeliveredAfter(t *testing.T) {
	col := otlptest.StartCollector(t)
	col.Stop()
	dir := t.TempDir()
	_, rt, addr := newGRPCRelay(t, col, dir, Config{}, otlpretry.WithProbe(20*time.Millisecond, time.Second))
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	for range 6 {
		_, span := tp.Tracer("relay-test").Start(ctx, "op")
		span.End()
	}
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("exporter saw %v while the upstream was down, want success (stored)", err)
	}
	if n := spoolRecords(t, dir); n != 6 || col.Spans() != 0 {
		t.Fatalf("%d records stored, %d spans delivered during the outage; want 6 and 0", n, col.Spans())
	}
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := col.WaitSpans(wctx, 6); err != nil {
		t.Fatalf("%v; stats %+v", err, rt.Stats())
	}
	for rt.Stats().Records != 0 && wctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if st := rt.Stats(); col.Spans() != 6 || col.SpanDuplicates() != 0 || st.Records != 0 || st.Delivered != 6 {
		t.Errorf("after recovery: %d spans, %d duplicates; stats %+v", col.Spans(), col.SpanDuplicates(), st)
	}
}

// An export the relay can neither deliver nor store is answered
// Unavailable with a RetryInfo of RetryAfter, which OTLP clients retry.
func TestGRPCSpoolFullIsUnavailableWithRetryInfo(t *testing.T) {
	r, rt, _ := newTestRelay(t, 4096)
	addr := serveGRPC(t, r)
	if _, err := rawCall(t, addr, traceExport, protobufBody(1000), nil); err != nil {
		t.Fatalf("first export: %v, want OK (stored)", err)
	}
	_, err := rawCall(t, addr, traceExport, protobufBody(3500), nil)
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("over the spool's cap: %v, want Unavailable", err)
	}
	if got := retryDelay(st); got != RetryAfter {
		t.Errorf("RetryInfo delay %v, want %v", got, RetryAfter)
	}
	if n := rt.Stats().Records; n != 1 {
		t.Errorf("%d stored, want 1", n)
	}
	m := serve(r, "GET", "/metrics", "", nil).Body.String()
	if line := `otlpretry_relay_grpc_requests_total{code="Unavailable",signal="traces"} 1`; !strings.Contains(m, line+"\n") {
		t.Errorf("/metrics lacks %q", line)
	}
}

func retryDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return -1
}

// What the relay refuses itself reaches neither the upstream nor the
// spool: bodies that are not exports, messages over the cap (also once
// inflated), no or a wrong token.
func TestGRPCRefusalsStoreNothing(t *testing.T) {
	col := otlptest.StartCollector(t)
	col.Stop() // anything that went on would be stored
	dir := t.TempDir()
	_, rt, addr := newGRPCRelay(t, col, dir, Config{AuthToken: "s3cret", MaxBodyBytes: 64 << 10})
	good := metadata.Pairs("authorization", "Bearer s3cret")
	traces, _ := otlptest.TraceBody(3)
	for _, c := range []struct {
		name string
		body []byte
		md   metadata.MD
		opts []grpc.CallOption
		code codes.Code
		msg  string
	}{
		{"garbage", []byte("hello, this is not protobuf"), good, nil, codes.InvalidArgument,
			"the body is not valid protobuf (ExportTraceServiceRequest): at byte 2: field 13"},
		{"truncated", traces[:len(traces)-5], good, nil, codes.InvalidArgument, "runs past the end of the message"},
		{"too large", protobufBody(64<<10 + 1), good, nil, codes.ResourceExhausted, "larger than max"},
		// The client compresses it to about 1 KiB.
		{"inflates too large", protobufBody(1 << 20), good, []grpc.CallOption{grpc.UseCompressor("gzip")},
			codes.ResourceExhausted, "after decompression larger than max"},
		{"no token", traces, nil, nil, codes.Unauthenticated, "bearer token"},
		{"wrong token", traces, metadata.Pairs("authorization", "Bearer s3cre"), nil, codes.Unauthenticated, "bearer token"},
		{"two tokens", traces, metadata.Pairs("authorization", "Bearer x", "authorization", "Bearer s3cret"), nil, codes.Unauthenticated, "bearer token"},
	} {
		_, err := rawCall(t, addr, traceExport, c.body, c.md, c.opts...)
		if st, _ := status.FromError(err); st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.code, c.msg)
		}
	}
	if n := spoolRecords(t, dir); n != 0 {
		t.Errorf("the spool holds %d record(s) after refused calls", n)
	}
	if st := rt.Stats(); st.Spooled != 0 || st.Direct != 0 || st.Dropped.Total() != 0 {
		t.Errorf("stats after refused calls: %+v", st)
	}
	// Control: the same export with the token is taken, and stored since
	// the upstream is down.
	if _, err := rawCall(t, addr, traceExport, traces, good); err != nil {
		t.Fatalf("good export: %v", err)
	}
	if n := spoolRecords(t, dir); n != 1 {
		t.Errorf("the spool holds %d record(s) after the good export, want 1", n)
	}
}

// The upstream's answers come back as the OTLP specification says: its
// response, partial_success included, as it came; its refusal with the
// mapped code and its message.
func TestGRPCUpstreamAnswers(t *testing.T) {
	col := otlptest.StartCollector(t)
	_, _, addr := newGRPCRelay(t, col, t.TempDir(), Config{})
	traces, _ := otlptest.TraceBody(2)

	partial, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{
		PartialSuccess: &coltracepb.ExportTracePartialSuccess{RejectedSpans: 1, ErrorMessage: "one too old"},
	})
	col.Script(otlptest.Answer{Header: http.Header{"Content-Type": {"application/x-protobuf"}}, Body: partial})
	got, err := rawCall(t, addr, traceExport, traces, nil)
	var resp coltracepb.ExportTraceServiceResponse
	if err != nil || proto.Unmarshal(got, &resp) != nil || resp.GetPartialSuccess().GetRejectedSpans() != 1 ||
		resp.GetPartialSuccess().GetErrorMessage() != "one too old" {
		t.Errorf("partial success came back as %x, %v", got, err)
	}

	refusal, _ := proto.Marshal(&spb.Status{Code: int32(codes.InvalidArgument), Message: "payload refused: test"})
	col.Script(otlptest.Answer{Status: http.StatusBadRequest, Header: http.Header{"Content-Type": {"application/x-protobuf"}}, Body: refusal})
	_, err = rawCall(t, addr, traceExport, traces, nil)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != "upstream answered 400: payload refused: test" {
		t.Errorf("refusal came back as %v", err)
	}
}

// grpcAnswer maps each kind of upstream answer to the gRPC status the
// specification's clients act on.
func TestGRPCAnswerMapping(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name   string
		status int
		header http.Header
		body   string
		code   codes.Code
		msg    string
		retry  time.Duration // -1: no RetryInfo
	}{
		{"stored", 200, http.Header{"Otlpretry-Spooled": {"1"}}, "", codes.OK, "", -1},
		{"text 200", 200, http.Header{"Content-Type": {"text/plain"}}, "ok", codes.OK, "", -1},
		{"malformed protobuf 200", 200, http.Header{"Content-Type": {"application/x-protobuf"}}, "\x0a\x05ab", codes.OK, "", -1},
		{"400 text", 400, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, "bad span\nmore", codes.InvalidArgument, "upstream answered 400: bad span", -1},
		{"401", 401, nil, "", codes.Unauthenticated, "upstream answered 401", -1},
		{"403", 403, nil, "", codes.PermissionDenied, "upstream answered 403", -1},
		{"404", 404, nil, "", codes.Unimplemented, "upstream answered 404", -1},
		{"413", 413, nil, "", codes.ResourceExhausted, "upstream answered 413", -1},
		{"418", 418, nil, "", codes.Unknown, "upstream answered 418", -1},
		{"429 with Retry-After", 429, http.Header{"Retry-After": {"7"}}, "", codes.ResourceExhausted, "upstream answered 429", 7 * time.Second},
		{"503 with a date", 503, http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, "", codes.Unavailable, "upstream answered 503", 90 * time.Second},
		{"502 without Retry-After", 502, nil, "", codes.Unavailable, "upstream answered 502", RetryAfter},
		{"500", 500, nil, "", codes.Unavailable, "upstream answered 500", RetryAfter},
		{"408", 408, nil, "", codes.Unavailable, "upstream answered 408", RetryAfter},
	} {
		resp := &http.Response{StatusCode: c.status, Header: c.header, Body: io.NopCloser(strings.NewReader(c.body))}
		if resp.Header == nil {
			resp.Header = http.Header{}
		}
		out, err := grpcAnswer(resp, now)
		st, _ := status.FromError(err)
		if st.Code() != c.code || st.Message() != c.msg || retryDelay(st) != c.retry {
			t.Errorf("%s: %v (retry %v), want %v %q (retry %v)", c.name, err, retryDelay(st), c.code, c.msg, c.retry)
		}
		if err == nil && len(out) != 0 {
			t.Errorf("%s: response %q, want an empty one", c.name, out)
		}
	}
	long := strings.Repeat("é", 600)
	resp := &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader(long))}
	_, err := grpcAnswer(resp, now)
	if st, _ := status.FromError(err); len(st.Message()) > 600 || !strings.HasSuffix(st.Message(), "...") || !strings.HasPrefix(st.Message(), "upstream answered 400: é") {
		t.Errorf("long refusal: %q", st.Message())
	}
}

// A signal without a destination is Unimplemented, saying how to give one;
// an empty export is answered at once.
func TestGRPCWithoutDestinationAndEmpty(t *testing.T) {
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) {
		t.Error("a request went on")
		return nil, errors.New("no")
	})
	r, err := New(Config{Destinations: testDestinations("http://u:4318")[:1], Transport: rt,
		Stats: func() otlpretry.Stats { return otlpretry.Stats{} }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveGRPC(t, r)
	_, err = rawCall(t, addr, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", protobufBody(10), nil)
	if st, _ := status.FromError(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "forwards no metrics: start it with --metrics-endpoint") {
		t.Errorf("metrics without destination: %v", err)
	}
	if out, err := rawCall(t, addr, traceExport, nil, nil); err != nil || len(out) != 0 {
		t.Errorf("empty export: %q, %v; want an empty OK", out, err)
	}
	_, err = rawCall(t, addr, "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export", protobufBody(10), nil)
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown service: %v, want Unimplemented", err)
	}
}
