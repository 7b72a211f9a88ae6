package demo

import (
	"bytes"
	"context"
	"testing"
	"time"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// dialReceiver opens a plain gRPC connection to addr.
func dialReceiver(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// exportAll sends one export of each signal and returns the first error:
// two spans, two data points and one log record.
func exportAll(ctx context.Context, cc *grpc.ClientConn) error {
	spans := &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
		{TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{1}, 8)},
		{TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8)},
	}}}}}}
	metrics := &collectormetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{{
		Name: "m", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{
			{TimeUnixNano: 1}, {TimeUnixNano: 2},
		}}},
	}}}}}}}
	logs := &collectorlogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
		{TimeUnixNano: 1, Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "one"}}},
	}}}}}}
	if _, err := collectortrace.NewTraceServiceClient(cc).Export(ctx, spans); err != nil {
		return err
	}
	if _, err := collectormetrics.NewMetricsServiceClient(cc).Export(ctx, metrics); err != nil {
		return err
	}
	_, err := collectorlogs.NewLogsServiceClient(cc).Export(ctx, logs)
	return err
}

func TestGRPCReceiverCountsAndAnswersUnavailable(t *testing.T) {
	r, err := NewGRPCReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := dialReceiver(t, r.Addr())
	for range 2 { // everything twice: the second time, all duplicates
		if err := exportAll(ctx, cc); err != nil {
			t.Fatal(err)
		}
	}
	want := Counts{Spans: 2, SpanDups: 2, Points: 2, PointDups: 2, Logs: 1, LogDups: 1, Requests: 6}
	if got := r.Counts(); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}

	r.SetUnavailable(true)
	if err := exportAll(ctx, cc); status.Code(err) != codes.Unavailable {
		t.Errorf("while unavailable: %v, want Unavailable", err)
	}
	if got := r.Counts(); got != want {
		t.Errorf("an export refused with Unavailable was counted: %+v", got)
	}
	r.SetUnavailable(false)
	if err := exportAll(ctx, cc); err != nil {
		t.Errorf("available again: %v", err)
	}
}
