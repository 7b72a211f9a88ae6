package demo

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"testing"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func postProto(t *testing.T, url string, m proto.Message, gz bool) int {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		b = buf.Bytes()
	}
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/x-protobuf")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestReceiverCountsDistinctAndDuplicates(t *testing.T) {
	r, err := NewReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	spans := &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
		{TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{1}, 8)},
		{TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8)},
	}}}}}}
	attr := func(v string) []*commonpb.KeyValue {
		return []*commonpb.KeyValue{{Key: "route", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}}
	}
	metrics := &collectormetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{{
		Name: "m", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{DataPoints: []*metricspb.NumberDataPoint{
			{Attributes: attr("a"), TimeUnixNano: 1}, {Attributes: attr("b"), TimeUnixNano: 1}, {Attributes: attr("a"), TimeUnixNano: 2},
		}}},
	}}}}}}}
	logs := &collectorlogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
		{TimeUnixNano: 1, Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "one"}}},
	}}}}}}
	for i := range 2 { // everything twice: the second time, all duplicates
		if postProto(t, r.URL()+"/v1/traces", spans, i == 1) != 200 ||
			postProto(t, r.URL()+"/v1/metrics", metrics, false) != 200 ||
			postProto(t, r.URL()+"/v1/logs", logs, false) != 200 {
			t.Fatal("export refused")
		}
	}
	want := Counts{Spans: 2, SpanDups: 2, Points: 3, PointDups: 3, Logs: 1, LogDups: 1, Requests: 6}
	if got := r.Counts(); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
}

func TestFrontModes(t *testing.T) {
	r, err := NewReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := NewFront(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	empty := &collectortrace.ExportTraceServiceRequest{}
	if code := postProto(t, f.URL()+"/v1/traces", empty, false); code != 200 {
		t.Errorf("pass: %d", code)
	}
	f.SetMode(Refuse)
	if code := postProto(t, f.URL()+"/v1/traces", empty, false); code != 0 {
		t.Errorf("refuse: got an answer %d", code)
	}
	f.SetMode(Unavailable)
	if code := postProto(t, f.URL()+"/v1/traces", empty, false); code != 503 {
		t.Errorf("unavailable: %d", code)
	}
	f.SetMode(Pass)
	if code := postProto(t, f.URL()+"/v1/traces", empty, false); code != 200 {
		t.Errorf("pass again: %d", code)
	}
	if got := r.Counts().Requests; got != 2 {
		t.Errorf("receiver got %d requests, want 2", got)
	}
}

func TestTable(t *testing.T) {
	s := &Summary{Spans: Signal{Produced: 10, Delivered: 9, Duplicates: 1}, Drained: true}
	out := s.Table()
	if s.Lost() != 1 || !strings.Contains(out, "LOST: 1 item(s)") {
		t.Errorf("lost %d:\n%s", s.Lost(), out)
	}
}
