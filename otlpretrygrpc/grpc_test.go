package otlpretrygrpc_test

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"
)

const grpcToken = "Bearer s3cret-grpc-token"

// newGRPCTransport opens a Transport on a fresh spool folder, with a short
// immediate-retry delay, and shuts it down at the end of the test.
func newGRPCTransport(t *testing.T, dir string, opts ...otlpretry.Option) *otlpretry.Transport {
	t.Helper()
	rt, err := otlpretry.New(append([]otlpretry.Option{
		otlpretry.WithDir(dir),
		otlpretry.WithImmediateRetryDelay(time.Millisecond),
		otlpretry.WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return rt
}

// dialGRPC opens a connection to addr through rt's DialOption, with
// attempts counted below the interceptor, and a short reconnect backoff so
// that a restarted collector is found again at once.
func dialGRPC(t *testing.T, addr string, rt *otlpretry.Transport, attempts *atomic.Int64) *grpc.ClientConn {
	t.Helper()
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if attempts != nil {
			attempts.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		otlpretrygrpc.DialOption(rt),
		grpc.WithChainUnaryInterceptor(count),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1, MaxDelay: 10 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func newTraceExporter(t *testing.T, cc *grpc.ClientConn) *otlptrace.Exporter {
	t.Helper()
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithGRPCConn(cc),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
		otlptracegrpc.WithHeaders(map[string]string{"authorization": grpcToken}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exp.Shutdown(context.Background()) })
	return exp
}

func exportSpan(ctx context.Context, exp *otlptrace.Exporter) error {
	return exp.ExportSpans(ctx, tracetest.SpanStubs{{Name: "span"}}.Snapshots())
}

// waitReady waits until cc is connected again.
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

// storeAndExit is an earlier process: a Transport on dir stores one
// export to col while col is stopped, and shuts down.
func storeAndExit(t *testing.T, col *grpcCollector, dir string) {
	t.Helper()
	ctx := context.Background()
	first, err := otlpretry.New(otlpretry.WithDir(dir), otlpretry.WithLogger(slog.New(slog.DiscardHandler)),
		otlpretry.WithImmediateRetryDelay(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	exp := newTraceExporter(t, dialGRPC(t, col.addr, first, nil))
	col.stop()
	if err := exportSpan(ctx, exp); err != nil {
		t.Fatal(err)
	}
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// storeWhileStopped stops col and makes n exports through exp, which rt
// must store: the destination refuses connections.
func storeWhileStopped(t *testing.T, col *grpcCollector, exp *otlptrace.Exporter, rt *otlpretry.Transport, n int) {
	t.Helper()
	col.stop()
	for range n {
		if err := exportSpan(context.Background(), exp); err != nil {
			t.Fatalf("export with the collector stopped: %v", err)
		}
	}
	if st := rt.Stats(); st.Records != n {
		t.Fatalf("Stats.Records = %d, want %d", st.Records, n)
	}
}

// Every class of answer, through the real otlptracegrpc exporter: OK and
// the retryable codes end in one delivery; a refusal comes back to the
// exporter as the server gave it, and nothing of it is stored.
func TestGRPCCodes(t *testing.T) {
	step := func(c codes.Code) grpcStep { return grpcStep{code: c} }
	withInfo := func(c codes.Code, d time.Duration) grpcStep {
		return grpcStep{code: c, retryInfo: true, retryDelay: d}
	}
	type want struct {
		code    codes.Code // of the exporter's error; OK for none
		calls   int        // Export calls before any flush
		spans   int        // spans received before any flush
		spooled uint64
	}
	cases := []struct {
		name   string
		script []grpcStep
		want   want
	}{
		{"OK", nil, want{codes.OK, 1, 1, 0}},
		{"Canceled then OK", []grpcStep{step(codes.Canceled)}, want{codes.OK, 2, 1, 0}},
		{"DeadlineExceeded then OK", []grpcStep{step(codes.DeadlineExceeded)}, want{codes.OK, 2, 1, 0}},
		{"Aborted then OK", []grpcStep{step(codes.Aborted)}, want{codes.OK, 2, 1, 0}},
		{"OutOfRange then OK", []grpcStep{step(codes.OutOfRange)}, want{codes.OK, 2, 1, 0}},
		{"Unavailable then OK", []grpcStep{step(codes.Unavailable)}, want{codes.OK, 2, 1, 0}},
		{"DataLoss then OK", []grpcStep{step(codes.DataLoss)}, want{codes.OK, 2, 1, 0}},
		{"ResourceExhausted with RetryInfo then OK", []grpcStep{withInfo(codes.ResourceExhausted, 20*time.Millisecond)}, want{codes.OK, 2, 1, 0}},
		{"ResourceExhausted without RetryInfo", []grpcStep{step(codes.ResourceExhausted)}, want{codes.ResourceExhausted, 1, 0, 0}},
		{"InvalidArgument", []grpcStep{step(codes.InvalidArgument)}, want{codes.InvalidArgument, 1, 0, 0}},
		{"Unauthenticated", []grpcStep{step(codes.Unauthenticated)}, want{codes.Unauthenticated, 1, 0, 0}},
		{"Unavailable twice: stored", []grpcStep{step(codes.Unavailable), step(codes.Unavailable)}, want{codes.OK, 2, 0, 1}},
		{"RetryInfo longer than the immediate wait: stored", []grpcStep{withInfo(codes.Unavailable, time.Minute)}, want{codes.OK, 1, 0, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			col := newGRPCCollector(t, tc.script...)
			rt := newGRPCTransport(t, t.TempDir())
			exp := newTraceExporter(t, dialGRPC(t, col.addr, rt, nil))

			err := exportSpan(context.Background(), exp)
			if got := status.Code(err); got != tc.want.code {
				t.Fatalf("export error %v (code %v), want code %v", err, got, tc.want.code)
			}
			if tc.want.code != codes.OK && !strings.Contains(err.Error(), "scripted "+tc.want.code.String()) {
				t.Errorf("export error %q does not carry the server's message", err)
			}
			spans, _, _, calls := col.counts()
			if calls != tc.want.calls || spans != tc.want.spans {
				t.Errorf("collector got %d calls, %d spans; want %d, %d", calls, spans, tc.want.calls, tc.want.spans)
			}
			st := rt.Stats()
			if st.Spooled != tc.want.spooled {
				t.Errorf("Stats.Spooled = %d, want %d", st.Spooled, tc.want.spooled)
			}
			if tc.want.code != codes.OK && (st.Rejected != 1 || st.Records != 0) {
				t.Errorf("a refusal: Stats.Rejected = %d, Records = %d; want 1, 0", st.Rejected, st.Records)
			}
			if tc.want.spooled > 0 {
				flush(t, rt)
				if spans, _, _, _ := col.counts(); spans != 1 {
					t.Errorf("after ForceFlush the collector has %d spans, want 1", spans)
				}
				if st := rt.Stats(); st.Delivered != 1 || st.Records != 0 {
					t.Errorf("after ForceFlush Stats.Delivered = %d, Records = %d; want 1, 0", st.Delivered, st.Records)
				}
			}
		})
	}
}

// A partial success is the server's answer: the caller gets the reply as
// it was sent.
func TestGRPCPartialSuccess(t *testing.T) {
	col := newGRPCCollector(t, grpcStep{partial: true})
	rt := newGRPCTransport(t, t.TempDir())
	cc := dialGRPC(t, col.addr, rt, nil)
	resp, err := coltrace.NewTraceServiceClient(cc).Export(context.Background(), &coltrace.ExportTraceServiceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.GetPartialSuccess(); ps.GetRejectedSpans() != 1 || ps.GetErrorMessage() != "one span refused" {
		t.Errorf("partial success = %v, want the server's", ps)
	}
	if st := rt.Stats(); st.Direct != 1 || st.Records != 0 {
		t.Errorf("Stats.Direct = %d, Records = %d; want 1, 0", st.Direct, st.Records)
	}
}

// A partial success answering stored exports sent in the background is
// counted (Stats.PartialRejected) and the exports are not sent again: the
// OTLP specification forbids retrying a request that got one.
func TestGRPCStoredPartialSuccess(t *testing.T) {
	ctx := context.Background()
	script := []grpcStep{{}} // the first export: OK
	for range 32 {
		script = append(script, grpcStep{partial: true})
	}
	col := newGRPCCollector(t, script...)
	rt := newGRPCTransport(t, t.TempDir())
	cc := dialGRPC(t, col.addr, rt, nil)
	exp := newTraceExporter(t, cc)
	if err := exportSpan(ctx, exp); err != nil {
		t.Fatal(err)
	}
	const stored = 3
	storeWhileStopped(t, col, exp, rt, stored)
	col.restart(t)
	waitReady(t, cc)
	flush(t, rt)
	spans, _, _, _ := col.counts()
	st := rt.Stats()
	if spans != stored+1 || st.Delivered != stored || st.Records != 0 || st.Quarantined != 0 {
		t.Errorf("collector got %d spans; Stats.Delivered = %d, Records = %d, Quarantined = %d; want %d, %d, 0, 0",
			spans, st.Delivered, st.Records, st.Quarantined, stored+1, stored)
	}
	// Each Export call carrying stored spans was answered with one
	// rejected span: at least one call, at most one per stored export.
	if st.PartialRejected < 1 || st.PartialRejected > stored {
		t.Errorf("Stats.PartialRejected = %d, want 1 to %d", st.PartialRejected, stored)
	}
}

// Calls other than the OTLP Export methods pass through untouched: their
// failures come back as they are and nothing is stored.
func TestGRPCOtherCallsPassThrough(t *testing.T) {
	col := newGRPCCollector(t)
	rt := newGRPCTransport(t, t.TempDir())
	cc := dialGRPC(t, col.addr, rt, nil)
	hc := healthpb.NewHealthClient(cc)
	resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check through the interceptor: %v, %v", resp, err)
	}
	col.stop()
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("health check with the server stopped: %v, want Unavailable", err)
	}
	if st := rt.Stats(); st.Spooled != 0 || st.Records != 0 || st.Retried != 0 || len(st.Destinations) != 0 {
		t.Errorf("a health check touched the Transport: %+v", st)
	}
}

// An export the server is slow to answer is stored at the end of the
// hold and the exporter answered with success while the call goes on; the
// call's own success then settles it, once.
func TestGRPCHeldSlowCall(t *testing.T) {
	release := make(chan struct{})
	col := newGRPCCollector(t, grpcStep{block: release})
	rt := newGRPCTransport(t, t.TempDir(), otlpretry.WithMaxHold(20*time.Millisecond))
	exp := newTraceExporter(t, dialGRPC(t, col.addr, rt, nil))

	if err := exportSpan(context.Background(), exp); err != nil {
		t.Fatalf("held export: %v", err)
	}
	select {
	case <-col.entered:
	default:
		t.Fatal("the exporter was answered before its call reached the server")
	}
	if st := rt.Stats(); !st.CircuitOpen {
		t.Error("the circuit is not open while an export is held")
	}
	close(release)
	flush(t, rt)
	spans, _, _, calls := col.counts()
	if spans != 1 || calls != 1 {
		t.Errorf("collector got %d spans in %d calls, want 1 in 1", spans, calls)
	}
	if st := rt.Stats(); st.Direct != 1 || st.Records != 0 || st.Delivered != 0 {
		t.Errorf("Stats.Direct = %d, Delivered = %d, Records = %d; want 1, 0, 0", st.Direct, st.Delivered, st.Records)
	}
}

// With the collector stopped (connections refused), exports of all three
// signals are stored, the circuit opens so that later exports return at
// once without a call, no metadata reaches the disk, and after the
// collector's restart everything is delivered with the live calls'
// metadata.
func TestGRPCRefusedStoredAndDelivered(t *testing.T) {
	ctx := context.Background()
	col := newGRPCCollector(t)
	dir := t.TempDir()
	rt := newGRPCTransport(t, dir)
	var attempts atomic.Int64
	cc := dialGRPC(t, col.addr, rt, &attempts)
	traces := newTraceExporter(t, cc)
	metrics, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithGRPCConn(cc),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
		otlpmetricgrpc.WithHeaders(map[string]string{"authorization": grpcToken}))
	if err != nil {
		t.Fatal(err)
	}
	defer metrics.Shutdown(ctx)
	logs, err := otlploggrpc.New(ctx, otlploggrpc.WithGRPCConn(cc),
		otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}),
		otlploggrpc.WithHeaders(map[string]string{"authorization": grpcToken}))
	if err != nil {
		t.Fatal(err)
	}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(logs)))
	defer lp.Shutdown(ctx)

	if err := exportSpan(ctx, traces); err != nil {
		t.Fatal(err)
	}
	col.stop()

	// Refused: the first attempt and the immediate retry fail, the export
	// is stored; the circuit is open for the next.
	before := attempts.Load()
	if err := exportSpan(ctx, traces); err != nil {
		t.Fatalf("export with the collector stopped: %v", err)
	}
	if n := attempts.Load() - before; n != 2 {
		t.Errorf("%d attempts for a refused export, want 2", n)
	}
	before = attempts.Load()
	start := time.Now()
	if err := exportSpan(ctx, traces); err != nil {
		t.Fatalf("export with the circuit open: %v", err)
	}
	if n := attempts.Load() - before; n != 0 {
		t.Errorf("%d attempts with the circuit open, want 0", n)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("an export with the circuit open took %v", d)
	}
	rm := &metricdata.ResourceMetrics{ScopeMetrics: []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{{
		Name: "requests",
		Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
			DataPoints: []metricdata.DataPoint[int64]{{Value: 1}}},
	}}}}}
	if err := metrics.Export(ctx, rm); err != nil {
		t.Fatalf("metrics export with the collector stopped: %v", err)
	}
	var rec otellog.Record
	rec.SetBody(attribute.StringValue("hello"))
	lp.Logger("test").Emit(ctx, rec)

	if st := rt.Stats(); st.Records != 4 || st.Spooled != 4 {
		t.Fatalf("Stats.Records = %d, Spooled = %d; want 4, 4", st.Records, st.Spooled)
	}
	found := false
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte("s3cret")) {
			t.Errorf("%s holds the call's metadata", path)
		}
		found = found || bytes.Contains(data, []byte("grpc://"+col.addr+"/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Error("no stored record names the gRPC destination")
	}

	col.restart(t)
	waitReady(t, cc)
	flush(t, rt)
	spans, points, logRecords, _ := col.counts()
	if spans != 3 || points != 1 || logRecords != 1 {
		t.Errorf("collector got %d spans, %d data points, %d log records; want 3, 1, 1", spans, points, logRecords)
	}
	for i, md := range col.metadata() {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != grpcToken {
			t.Errorf("call %d had authorization %q, want the live call's", i, got)
		}
	}
	if st := rt.Stats(); st.Records != 0 || st.Delivered != 4 || st.CircuitOpen {
		t.Errorf("after delivery Stats.Records = %d, Delivered = %d, CircuitOpen = %v; want 0, 4, false", st.Records, st.Delivered, st.CircuitOpen)
	}
}

// A connection made with a long reconnect backoff (gRPC's own grows to two
// minutes) does not hold back the delivery of what was stored while its
// destination refused connections: the background sender has it
// reconnect when it tries, so the backlog arrives within seconds of the
// collector's return, not after the connection's backoff.
func TestGRPCReconnectsForTheBacklog(t *testing.T) {
	ctx := context.Background()
	col := newGRPCCollector(t)
	rt := newGRPCTransport(t, t.TempDir())
	cc, err := grpc.NewClient(col.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		otlpretrygrpc.DialOption(rt),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Hour, Multiplier: 1, MaxDelay: time.Hour},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	exp := newTraceExporter(t, cc)
	if err := exportSpan(ctx, exp); err != nil {
		t.Fatal(err)
	}
	const stored = 3
	storeWhileStopped(t, col, exp, rt, stored)
	// Connections to a stopped server are refused: the connection now
	// waits an hour before it tries again on its own.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for s := cc.GetState(); s != connectivity.TransientFailure; s = cc.GetState() {
		if !cc.WaitForStateChange(wctx, s) {
			t.Fatalf("connection state %v, want TransientFailure", s)
		}
	}
	col.restart(t)
	for {
		spans, _, _, _ := col.counts()
		if spans == stored+1 {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("collector got %d spans within 10 s of its return, want %d", spans, stored+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Exports a previous process stored for a gRPC destination wait while
// this process has no live connection to it and no headers configured
// for it, and are delivered with the metadata of the first live call.
func TestGRPCStoredWaitForLiveCall(t *testing.T) {
	ctx := context.Background()
	col := newGRPCCollector(t)
	dir := t.TempDir()

	storeAndExit(t, col, dir)

	col.restart(t)
	rt := newGRPCTransport(t, dir)
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rt.ForceFlush(fctx); err == nil || !strings.Contains(err.Error(), "waiting for credentials") {
		t.Fatalf("ForceFlush without a live call: %v, want the export waiting for credentials", err)
	}
	if spans, _, _, calls := col.counts(); spans != 0 || calls != 0 {
		t.Fatalf("sent without a live call: %d spans in %d calls", spans, calls)
	}

	exp2 := newTraceExporter(t, dialGRPC(t, col.addr, rt, nil))
	if err := exportSpan(ctx, exp2); err != nil {
		t.Fatal(err)
	}
	flush(t, rt)
	if spans, _, _, _ := col.counts(); spans != 2 {
		t.Errorf("collector got %d spans, want 2", spans)
	}
	for i, md := range col.metadata() {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != grpcToken {
			t.Errorf("call %d had authorization %q, want the live call's", i, got)
		}
	}
}

// With headers configured for the gRPC destination, stored exports are
// sent without a live call, over a connection of the Transport's own,
// with those headers as metadata.
func TestGRPCStoredSentWithConfiguredHeaders(t *testing.T) {
	col := newGRPCCollector(t)
	dir := t.TempDir()

	storeAndExit(t, col, dir)

	col.restart(t)
	rt := newGRPCTransport(t, dir, otlpretry.WithEndpointHeaders("grpc://"+col.addr,
		http.Header{"Authorization": {"Bearer configured"}}))
	flush(t, rt)
	if spans, _, _, _ := col.counts(); spans != 1 {
		t.Fatalf("collector got %d spans, want 1", spans)
	}
	if got := col.metadata()[0].Get("authorization"); len(got) != 1 || got[0] != "Bearer configured" {
		t.Errorf("stored export sent with authorization %q, want the configured one", got)
	}
}

// A request given as bytes, as a relay forwards it, is sent as it is, and
// stored and delivered as it is when the collector is down.
func TestGRPCRawBytesRequest(t *testing.T) {
	ctx := context.Background()
	col := newGRPCCollector(t)
	rt := newGRPCTransport(t, t.TempDir())
	cc := dialGRPC(t, col.addr, rt, nil)
	req := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{Name: "a"}, {Name: "b"}}}},
	}}}
	data, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	const method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	var reply []byte
	if err := cc.Invoke(ctx, method, data, &reply); err != nil {
		t.Fatalf("bytes through the interceptor: %v", err)
	}
	col.stop()
	if err := cc.Invoke(ctx, method, data, &reply); err != nil {
		t.Fatalf("bytes with the collector stopped: %v", err)
	}
	if st := rt.Stats(); st.Records != 1 {
		t.Fatalf("Stats.Records = %d, want 1", st.Records)
	}
	col.restart(t)
	waitReady(t, cc)
	flush(t, rt)
	if spans, _, _, _ := col.counts(); spans != 4 {
		t.Errorf("collector got %d spans, want 4", spans)
	}
}

// TestGRPCStoredOutliveTheExportersConnection: an application that shuts
// its provider down (closing the exporter's connection) before ForceFlush
// or Shutdown of the Transport does not strand what was stored: the live
// call's metadata goes over a connection of the Transport's own, of the
// security the live one had.
func TestGRPCStoredOutliveTheExportersConnection(t *testing.T) {
	ctx := context.Background()
	col := newGRPCCollector(t)
	rt := newGRPCTransport(t, t.TempDir())
	cc := dialGRPC(t, col.addr, rt, nil)
	traces := newTraceExporter(t, cc)
	if err := exportSpan(ctx, traces); err != nil { // an answer: the connection is known insecure
		t.Fatal(err)
	}
	col.stop()
	for range 3 {
		if err := exportSpan(ctx, traces); err != nil {
			t.Fatal(err)
		}
	}
	if st := rt.Stats(); st.Records != 3 {
		t.Fatalf("stored %d, want 3", st.Records)
	}
	if err := traces.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	col.restart(t)
	flush(t, rt)
	spans, _, _, calls := col.counts()
	if spans != 4 || rt.Stats().Records != 0 {
		t.Fatalf("spans %d (calls %d), records left %d; want 4 and none left", spans, calls, rt.Stats().Records)
	}
	for i, md := range col.metadata() {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != grpcToken {
			t.Errorf("call %d carried authorization %q, want the live call's", i, got)
		}
	}
}
