package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/metric"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// newTracerProvider wires the real SDK to c through otlptracehttp, with
// retries fast enough for unit tests.
func newTracerProvider(t testing.TB, endpoint string, opts ...otlptracehttp.Option) *sdktrace.TracerProvider {
	t.Helper()
	opts = append([]otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(endpoint),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{
			Enabled:         true,
			InitialInterval: time.Millisecond,
			MaxInterval:     5 * time.Millisecond,
			MaxElapsedTime:  3 * time.Second,
		}),
	}, opts...)
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Hour)))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

func emitSpans(tp *sdktrace.TracerProvider, n int) []SpanKey {
	tr := tp.Tracer("collector_test")
	keys := make([]SpanKey, n)
	for i := range keys {
		_, sp := tr.Start(context.Background(), fmt.Sprintf("span-%d", i))
		sp.End()
		sc := sp.SpanContext()
		keys[i] = SpanKey{TraceID: sc.TraceID(), SpanID: sc.SpanID()}
	}
	return keys
}

func TestCollectorCountsRealTraceExport(t *testing.T) {
	c := StartCollector(t)
	tp := newTracerProvider(t, c.Endpoint(Traces),
		otlptracehttp.WithHeaders(map[string]string{"Authorization": "Bearer t0k3n"}))

	keys := emitSpans(tp, 50)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.Spans(); got != 50 {
		t.Fatalf("Spans() = %d, want 50", got)
	}
	for _, k := range keys {
		if !c.HasSpan(k.TraceID, k.SpanID) {
			t.Fatalf("span %v not received", k)
		}
	}
	if got := len(c.SpanIDs()); got != 50 {
		t.Fatalf("len(SpanIDs()) = %d, want 50", got)
	}
	if d := c.SpanDuplicates(); d != 0 {
		t.Fatalf("SpanDuplicates() = %d, want 0", d)
	}
	if r := c.Requests(Traces.Path()); r != 1 {
		t.Fatalf("Requests = %d, want 1 batch", r)
	}
	h := c.LastHeader("/v1/traces")
	if got := h.Get("Authorization"); got != "Bearer t0k3n" {
		t.Errorf("Authorization = %q", got)
	}
	if ua := h.Get("User-Agent"); !strings.Contains(ua, "OTel") {
		t.Errorf("User-Agent = %q, want the OTel exporter's", ua)
	}
	if c.BytesReceived() == 0 {
		t.Error("BytesReceived() = 0")
	}
	if c.LastHeader("/v1/logs") != nil {
		t.Error("LastHeader for a path never hit should be nil")
	}
}

func TestCollectorGzipFromExporter(t *testing.T) {
	c := StartCollector(t)
	tp := newTracerProvider(t, c.Endpoint(Traces), otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	emitSpans(tp, 20)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.Spans(); got != 20 {
		t.Fatalf("Spans() = %d, want 20", got)
	}
	if enc := c.LastHeader(Traces.Path()).Get("Content-Encoding"); enc != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip", enc)
	}
}

func TestCollectorGzipManual(t *testing.T) {
	c := StartCollector(t)
	body, keys := TraceBody(7)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(body)
	zw.Close()

	r, err := post(newClient(t, 5*time.Second), c.Endpoint(Traces), protobufCT, "gzip", buf.Bytes())
	if err != nil || r.status != 200 {
		t.Fatalf("post: %v %v", r.status, err)
	}
	if got := c.Spans(); got != len(keys) {
		t.Fatalf("Spans() = %d, want %d", got, len(keys))
	}
	if got := c.BytesReceived(); got != int64(buf.Len()) {
		t.Fatalf("BytesReceived() = %d, want wire size %d", got, buf.Len())
	}
}

func TestCollectorSuccessResponseIsEmptyExportResponse(t *testing.T) {
	c := StartCollector(t)
	body, _ := TraceBody(1)
	r, err := post(newClient(t, 5*time.Second), c.Endpoint(Traces), protobufCT, "", body)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || r.header.Get("Content-Type") != protobufCT {
		t.Fatalf("status %d content-type %q", r.status, r.header.Get("Content-Type"))
	}
	var resp collectortrace.ExportTraceServiceResponse
	if err := proto.Unmarshal(r.body, &resp); err != nil {
		t.Fatalf("response is not an ExportTraceServiceResponse: %v", err)
	}
	if resp.GetPartialSuccess() != nil {
		t.Fatalf("unexpected partial success %v", resp.GetPartialSuccess())
	}
}

func TestCollectorOTLPJSONFromExporter(t *testing.T) {
	c := StartCollector(t)
	tp := newTracerProvider(t, c.Endpoint(Traces), otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON))
	keys := emitSpans(tp, 5)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ct := c.LastHeader(Traces.Path()).Get("Content-Type"); ct != "application/json" {
		t.Fatalf("exporter sent Content-Type %q", ct)
	}
	// OTLP/JSON carries hex IDs; decoding them as protojson base64 would
	// silently produce other IDs.
	for _, k := range keys {
		if !c.HasSpan(k.TraceID, k.SpanID) {
			t.Fatalf("span %v not found: hex IDs misdecoded?", k)
		}
	}
}

func TestCollectorJSON(t *testing.T) {
	c := StartCollector(t)
	req, keys := TraceRequest(3)
	body, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := post(newClient(t, 5*time.Second), c.Endpoint(Traces), "application/json; charset=utf-8", "", body)
	if err != nil || r.status != 200 {
		t.Fatalf("post: %d %v %s", r.status, err, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	for _, k := range keys {
		if !c.HasSpan(k.TraceID, k.SpanID) {
			t.Fatalf("span %v missing", k)
		}
	}
}

func TestCollectorCountsDuplicateSpans(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	body, _ := TraceBody(4)
	for range 3 {
		if r, err := post(client, c.Endpoint(Traces), protobufCT, "", body); err != nil || r.status != 200 {
			t.Fatalf("post: %v %v", r.status, err)
		}
	}
	if s, d := c.Spans(), c.SpanDuplicates(); s != 4 || d != 8 {
		t.Fatalf("Spans, SpanDuplicates = %d, %d; want 4, 8", s, d)
	}
}

func TestCollectorCountsRealMetricExport(t *testing.T) {
	c := StartCollector(t)
	exp, err := otlpmetrichttp.New(context.Background(), otlpmetrichttp.WithEndpointURL(c.Endpoint(Metrics)))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	m := mp.Meter("collector_test")
	counter, _ := m.Int64Counter("c")
	hist, _ := m.Float64Histogram("h")
	gauge, _ := m.Int64Gauge("g")
	ctx := context.Background()
	for _, v := range []string{"a", "b"} {
		attrs := metric.WithAttributes(attribute.String("k", v))
		counter.Add(ctx, 1, attrs)
		hist.Record(ctx, 1.5, attrs)
		gauge.Record(ctx, 7, attrs)
	}
	// Shutdown collects and exports exactly once more: 3 instruments x 2
	// attribute sets.
	if err := mp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.DataPoints(); got != 6 {
		t.Fatalf("DataPoints() = %d, want 6", got)
	}
}

func TestCollectorCountsEveryMetricType(t *testing.T) {
	c := StartCollector(t)
	req := &collectormetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{
			{Name: "g", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{
				DataPoints: []*metricspb.NumberDataPoint{{}}}}},
			{Name: "s", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
				DataPoints: []*metricspb.NumberDataPoint{{}, {}}}}},
			{Name: "h", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{
				DataPoints: []*metricspb.HistogramDataPoint{{}}}}},
			{Name: "e", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{
				DataPoints: []*metricspb.ExponentialHistogramDataPoint{{}, {}, {}}}}},
			{Name: "y", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{
				DataPoints: []*metricspb.SummaryDataPoint{{}}}}},
		}}},
	}}}
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := post(newClient(t, 5*time.Second), c.Endpoint(Metrics), protobufCT, "", body); err != nil || r.status != 200 {
		t.Fatalf("post: %v %v", r.status, err)
	}
	if got := c.DataPoints(); got != 8 {
		t.Fatalf("DataPoints() = %d, want 8", got)
	}
	var resp collectormetrics.ExportMetricsServiceResponse
	if r, _ := post(newClient(t, 5*time.Second), c.Endpoint(Metrics), protobufCT, "", MetricsBody(5)); proto.Unmarshal(r.body, &resp) != nil {
		t.Fatal("metrics success body is not an ExportMetricsServiceResponse")
	}
	if got := c.DataPoints(); got != 13 {
		t.Fatalf("DataPoints() = %d after MetricsBody(5), want 13", got)
	}
}

func TestCollectorCountsRealLogExport(t *testing.T) {
	c := StartCollector(t)
	exp, err := otlploghttp.New(context.Background(), otlploghttp.WithEndpointURL(c.Endpoint(Logs)))
	if err != nil {
		t.Fatal(err)
	}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(exp)))
	logger := lp.Logger("collector_test")
	for i := range 5 {
		var r otellog.Record
		r.SetBody(attribute.StringValue(fmt.Sprintf("record %d", i)))
		logger.Emit(context.Background(), r)
	}
	if err := lp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, u := c.LogRecords(), c.UniqueLogRecords(); got != 5 || u != 5 {
		t.Fatalf("LogRecords, UniqueLogRecords = %d, %d; want 5, 5", got, u)
	}
	if r := c.Requests(Logs.Path()); r != 5 {
		t.Fatalf("Requests = %d, want 5 (simple processor exports each record)", r)
	}
}

func TestCollectorLogDuplicates(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	body := LogsBody(3)
	for range 2 {
		if r, err := post(client, c.Endpoint(Logs), protobufCT, "", body); err != nil || r.status != 200 {
			t.Fatalf("post: %v %v", r.status, err)
		}
	}
	if got, u := c.LogRecords(), c.UniqueLogRecords(); got != 6 || u != 3 {
		t.Fatalf("LogRecords, UniqueLogRecords = %d, %d; want 6, 3", got, u)
	}
}

func TestCollectorScript503Then200WithRealExporter(t *testing.T) {
	c := StartCollector(t)
	c.Script(Answer{Status: http.StatusServiceUnavailable})
	tp := newTracerProvider(t, c.Endpoint(Traces))

	emitSpans(tp, 10)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.Requests(Traces.Path()); got != 2 {
		t.Fatalf("Requests = %d, want 2 (503, then retried 200)", got)
	}
	if s, d := c.Spans(), c.SpanDuplicates(); s != 10 || d != 0 {
		t.Fatalf("Spans, SpanDuplicates = %d, %d; the 503 payload must not count", s, d)
	}
}

func TestCollectorScriptedAnswers(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	c.Script(
		Answer{Status: 429, Header: http.Header{"Retry-After": {"3"}}, Body: []byte("slow down")},
		Answer{Status: 500},
		Answer{Status: 202, Header: http.Header{"X-Test": {"yes"}}},
	)
	body, _ := TraceBody(2)

	r, err := post(client, c.Endpoint(Traces), protobufCT, "", body)
	if err != nil || r.status != 429 || r.header.Get("Retry-After") != "3" || string(r.body) != "slow down" {
		t.Fatalf("1st: %d %q %q %v", r.status, r.header.Get("Retry-After"), r.body, err)
	}
	if r, err = post(client, c.Endpoint(Traces), protobufCT, "", body); err != nil || r.status != 500 {
		t.Fatalf("2nd: %d %v", r.status, err)
	}
	if c.Spans() != 0 {
		t.Fatalf("non-2xx answers counted %d spans", c.Spans())
	}
	r, err = post(client, c.Endpoint(Traces), protobufCT, "", body)
	if err != nil || r.status != 202 || r.header.Get("X-Test") != "yes" {
		t.Fatalf("3rd: %d %v", r.status, err)
	}
	var resp collectortrace.ExportTraceServiceResponse
	if err := proto.Unmarshal(r.body, &resp); err != nil {
		t.Fatalf("scripted 2xx without Body should carry the export response: %v", err)
	}
	if c.Spans() != 2 {
		t.Fatalf("scripted 2xx must count the payload, Spans() = %d", c.Spans())
	}
	// Script exhausted: normal acceptance.
	if r, err = post(client, c.Endpoint(Traces), protobufCT, "", body); err != nil || r.status != 200 {
		t.Fatalf("4th: %d %v", r.status, err)
	}
	if c.SpanDuplicates() != 2 || c.Requests(Traces.Path()) != 4 {
		t.Fatalf("dups %d requests %d", c.SpanDuplicates(), c.Requests(Traces.Path()))
	}
}

func TestCollectorDefaultAnswer(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	body, _ := TraceBody(1)
	c.SetDefault(Answer{Status: 503})
	c.Script(Answer{}) // the script takes precedence over the default
	want := []int{200, 503, 503}
	for i, w := range want {
		if r, err := post(client, c.Endpoint(Traces), protobufCT, "", body); err != nil || r.status != w {
			t.Fatalf("request %d: %d %v, want %d", i, r.status, err, w)
		}
	}
	c.ResetDefault()
	if r, err := post(client, c.Endpoint(Traces), protobufCT, "", body); err != nil || r.status != 200 {
		t.Fatalf("after ResetDefault: %d %v", r.status, err)
	}
}

func TestCollectorDelay(t *testing.T) {
	c := StartCollector(t)
	const d = 50 * time.Millisecond
	c.Script(Answer{Delay: d})
	body, _ := TraceBody(1)
	start := time.Now()
	r, err := post(newClient(t, 5*time.Second), c.Endpoint(Traces), protobufCT, "", body)
	if err != nil || r.status != 200 {
		t.Fatalf("%d %v", r.status, err)
	}
	if el := time.Since(start); el < d {
		t.Fatalf("answered after %v, want >= %v", el, d)
	}
	if c.Spans() != 1 {
		t.Fatal("delayed 200 must count")
	}
}

func TestCollectorDelayAbortedByClientDoesNotCount(t *testing.T) {
	c := StartCollector(t)
	c.Script(Answer{Delay: time.Hour})
	body, _ := TraceBody(1)
	_, err := post(newClient(t, 100*time.Millisecond), c.Endpoint(Traces), protobufCT, "", body)
	if err == nil {
		t.Fatal("want client timeout")
	}
	if c.Spans() != 0 {
		t.Fatal("a request the client abandoned must not count")
	}
}

func TestCollectorHangUntilClientGivesUp(t *testing.T) {
	c := StartCollector(t)
	c.Script(Answer{Hang: true})
	body, _ := TraceBody(1)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.Endpoint(Traces), bytes.NewReader(body))
	req.Header.Set("Content-Type", protobufCT)
	_, err := newClient(t, 0).Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if c.Spans() != 0 {
		t.Fatal("hung request counted")
	}
	// The script is used up: the next request is served normally.
	if r, err := post(newClient(t, 5*time.Second), c.Endpoint(Traces), protobufCT, "", body); err != nil || r.status != 200 {
		t.Fatalf("%d %v", r.status, err)
	}
}

func TestCollectorHangReleasedByStop(t *testing.T) {
	c := StartCollector(t)
	c.SetDefault(Answer{Hang: true})
	body, _ := TraceBody(1)
	errc := make(chan error, 1)
	client := newClient(t, 0)
	go func() {
		_, err := post(client, c.Endpoint(Traces), protobufCT, "", body)
		errc <- err
	}()
	if err := c.WaitRequests(waitCtx(t), Traces.Path(), 1); err != nil {
		t.Fatal(err)
	}
	c.Stop() // must not wait for the hung request
	if err := <-errc; err == nil {
		t.Fatal("hung request got an answer after Stop")
	}
	if c.Spans() != 0 {
		t.Fatal("hung request counted")
	}
}

func TestCollectorRejectsBadRequests(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	good, _ := TraceBody(1)
	cases := []struct {
		name, path, ct, enc string
		body                []byte
		want                int
	}{
		{"malformed protobuf", "/v1/traces", protobufCT, "", []byte("not a protobuf"), 400},
		{"malformed metrics", "/v1/metrics", protobufCT, "", []byte{0xff, 0xff, 0xff}, 400},
		{"malformed logs", "/v1/logs", protobufCT, "", []byte{0x0a, 0x05}, 400},
		{"malformed json", "/v1/traces", "application/json", "", []byte("{"), 400},
		{"bad gzip", "/v1/traces", protobufCT, "gzip", good, 400},
		{"unknown encoding", "/v1/traces", protobufCT, "br", good, 415},
		{"unknown content type", "/v1/traces", "text/plain", "", good, 415},
		{"unknown path", "/v1/profiles", protobufCT, "", good, 404},
	}
	for _, tc := range cases {
		r, err := post(client, c.URL()+tc.path, tc.ct, tc.enc, tc.body)
		if err != nil || r.status != tc.want {
			t.Errorf("%s: status %d err %v, want %d", tc.name, r.status, err, tc.want)
		}
	}
	resp, err := client.Get(c.Endpoint(Traces))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
	if c.Spans()+c.DataPoints()+c.LogRecords() != 0 {
		t.Fatal("rejected requests were counted")
	}
	if got := c.Requests("/v1/traces"); got != 6 {
		t.Fatalf("Requests(/v1/traces) = %d, want 6 (rejected requests still arrive)", got)
	}
	if got := c.Requests("/v1/profiles"); got != 1 {
		t.Fatalf("Requests(/v1/profiles) = %d, want 1", got)
	}
}

func TestCollectorStopRefusesStartServesSamePort(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	url := c.Endpoint(Traces)
	addr := c.Addr()
	body, _ := TraceBody(3)

	if r, err := post(client, url, protobufCT, "", body); err != nil || r.status != 200 {
		t.Fatalf("before Stop: %d %v", r.status, err)
	}
	c.Stop()
	c.Stop() // idempotent
	// A fresh client: the old one may first try its (now closed) idle
	// connection and report EOF instead of the refused connect.
	_, err := post(newClient(t, 5*time.Second), url, protobufCT, "", body)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after Stop: err = %v, want ECONNREFUSED", err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil { // no-op while running
		t.Fatal(err)
	}
	if c.Addr() != addr {
		t.Fatalf("address changed from %s to %s", addr, c.Addr())
	}
	body2, _ := TraceBody(2)
	if r, err := post(newClient(t, 5*time.Second), url, protobufCT, "", body2); err != nil || r.status != 200 {
		t.Fatalf("after Start: %d %v", r.status, err)
	}
	if got := c.Spans(); got != 5 {
		t.Fatalf("Spans() = %d, want 5 (counts survive a restart)", got)
	}
}

func TestCollectorStopClosesKeepAliveConnections(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	body, _ := TraceBody(1)
	if _, err := post(client, c.Endpoint(Traces), protobufCT, "", body); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	// Were the idle connection still served, this would succeed.
	if _, err := post(client, c.Endpoint(Traces), protobufCT, "", body); err == nil {
		t.Fatal("request after Stop succeeded over a kept-alive connection")
	}
}

func TestCollectorClose(t *testing.T) {
	c, err := NewCollector()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	if err := c.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestCollectorWaitSpans(t *testing.T) {
	c := StartCollector(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.WaitSpans(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSpans on empty collector: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- c.WaitSpans(waitCtx(t), 6) }()
	client := newClient(t, 5*time.Second)
	for range 2 {
		body, _ := TraceBody(3)
		if _, err := post(client, c.Endpoint(Traces), protobufCT, "", body); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.WaitDataPoints(waitCtx(t), 0); err != nil {
		t.Fatal(err)
	}
	post(client, c.Endpoint(Metrics), protobufCT, "", MetricsBody(2))
	post(client, c.Endpoint(Logs), protobufCT, "", LogsBody(2))
	if err := c.WaitDataPoints(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLogRecords(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
}

func TestCollectorReset(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	body, _ := TraceBody(2)
	post(client, c.Endpoint(Traces), protobufCT, "", body)
	post(client, c.Endpoint(Logs), protobufCT, "", LogsBody(1))
	c.Reset()
	if c.Spans()+c.LogRecords()+c.Requests(Traces.Path()) != 0 || c.BytesReceived() != 0 || c.LastHeader(Traces.Path()) != nil {
		t.Fatal("Reset left counts behind")
	}
}

func TestCollectorConcurrentClients(t *testing.T) {
	c := StartCollector(t)
	client := newClient(t, 5*time.Second)
	const workers, perWorker, spansPer = 8, 10, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				body, _ := TraceBody(spansPer)
				r, err := post(client, c.Endpoint(Traces), protobufCT, "", body)
				if err == nil && r.status != 200 {
					err = fmt.Errorf("status %d", r.status)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := c.Spans(); got != workers*perWorker*spansPer {
		t.Fatalf("Spans() = %d, want %d", got, workers*perWorker*spansPer)
	}
}
