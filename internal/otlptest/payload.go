package otlptest

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"time"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The builders below make valid OTLP protobuf bodies for tests of the
// transport and the spool, which need realistic payloads (and, for traces,
// the IDs to look for in the Collector) but not the SDK's batching timing.

func testResource() *resourcepb.Resource {
	return &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{
		Key:   "service.name",
		Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "otlptest"}},
	}}}
}

func testScope() *commonpb.InstrumentationScope {
	return &commonpb.InstrumentationScope{Name: "github.com/otlpretry/otlpretry/internal/otlptest"}
}

// TraceRequest returns an export request with n spans whose IDs are fresh
// random values, plus those IDs in order. Random IDs keep payloads from
// different calls (and test runs against one Collector) from colliding.
func TraceRequest(n int) (*collectortrace.ExportTraceServiceRequest, []SpanKey) {
	now := uint64(time.Now().UnixNano())
	spans := make([]*tracepb.Span, n)
	keys := make([]SpanKey, n)
	for i := range spans {
		var k SpanKey
		for j := 0; j < 16; j += 8 {
			binary.BigEndian.PutUint64(k.TraceID[j:], rand.Uint64())
		}
		binary.BigEndian.PutUint64(k.SpanID[:], rand.Uint64()|1) // an all-zero span ID is invalid
		keys[i] = k
		spans[i] = &tracepb.Span{
			TraceId:           k.TraceID[:],
			SpanId:            k.SpanID[:],
			Name:              "otlptest-" + strconv.Itoa(i),
			Kind:              tracepb.Span_SPAN_KIND_INTERNAL,
			StartTimeUnixNano: now,
			EndTimeUnixNano:   now + 1000,
		}
	}
	return &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   testResource(),
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: testScope(), Spans: spans}},
	}}}, keys
}

// TraceBody is TraceRequest marshalled as application/x-protobuf.
func TraceBody(n int) ([]byte, []SpanKey) {
	req, keys := TraceRequest(n)
	return mustMarshal(req), keys
}

// MetricsBody returns an application/x-protobuf metrics export holding n
// gauge data points.
func MetricsBody(n int) []byte {
	now := uint64(time.Now().UnixNano())
	points := make([]*metricspb.NumberDataPoint, n)
	for i := range points {
		points[i] = &metricspb.NumberDataPoint{
			TimeUnixNano: now,
			Value:        &metricspb.NumberDataPoint_AsInt{AsInt: int64(i)},
			Attributes: []*commonpb.KeyValue{{
				Key:   "i",
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(i)}},
			}},
		}
	}
	return mustMarshal(&collectormetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: testResource(),
		ScopeMetrics: []*metricspb.ScopeMetrics{{Scope: testScope(), Metrics: []*metricspb.Metric{{
			Name: "otlptest.gauge",
			Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: points}},
		}}}},
	}}})
}

// LogsBody returns an application/x-protobuf logs export holding n records
// that are distinct under the Collector's duplicate detection.
func LogsBody(n int) []byte {
	now := uint64(time.Now().UnixNano())
	nonce := strconv.FormatUint(rand.Uint64(), 16)
	records := make([]*logspb.LogRecord, n)
	for i := range records {
		records[i] = &logspb.LogRecord{
			TimeUnixNano:         now,
			ObservedTimeUnixNano: now,
			SeverityNumber:       logspb.SeverityNumber_SEVERITY_NUMBER_INFO,
			Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{
				StringValue: "otlptest " + nonce + " #" + strconv.Itoa(i),
			}},
		}
	}
	return mustMarshal(&collectorlogs.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource:  testResource(),
		ScopeLogs: []*logspb.ScopeLogs{{Scope: testScope(), LogRecords: records}},
	}}})
}

// mustMarshal panics because marshalling a message built right here can only
// fail through a bug in this file.
func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic("otlptest: " + err.Error())
	}
	return b
}
