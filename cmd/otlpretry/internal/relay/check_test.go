package relay

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

func str(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}

// attrs covers every kind of AnyValue, nested.
func attrs() []*commonpb.KeyValue {
	return []*commonpb.KeyValue{
		{Key: "s", Value: str("v")},
		{Key: "b", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
		{Key: "i", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -7}}},
		{Key: "d", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 1.5}}},
		{Key: "y", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0, 1, 0xff}}}},
		{Key: "a", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
			Values: []*commonpb.AnyValue{str("x"), {Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{
				Values: []*commonpb.KeyValue{{Key: "deep", Value: str("er")}},
			}}}},
		}}}},
	}
}

var (
	resource = &resourcepb.Resource{Attributes: attrs(), DroppedAttributesCount: 2}
	scope    = &commonpb.InstrumentationScope{Name: "s", Version: "1", Attributes: attrs()}
)

func richTraces() proto.Message {
	return &tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: resource, SchemaUrl: "https://opentelemetry.io/schemas/1.26.0",
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: scope, Spans: []*tracepb.Span{{
			TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8), ParentSpanId: bytes.Repeat([]byte{3}, 8),
			TraceState: "k=v", Flags: 1, Name: "op", Kind: tracepb.Span_SPAN_KIND_SERVER,
			StartTimeUnixNano: 1, EndTimeUnixNano: 2, Attributes: attrs(), DroppedAttributesCount: 1,
			Events: []*tracepb.Span_Event{{TimeUnixNano: 3, Name: "e", Attributes: attrs()}},
			Links:  []*tracepb.Span_Link{{TraceId: bytes.Repeat([]byte{4}, 16), SpanId: bytes.Repeat([]byte{5}, 8), Attributes: attrs(), Flags: 1}},
			Status: &tracepb.Status{Message: "m", Code: tracepb.Status_STATUS_CODE_ERROR},
		}}}},
	}}}
}

func richMetrics() proto.Message {
	ex := []*metricspb.Exemplar{{FilteredAttributes: attrs(), TimeUnixNano: 1, Value: &metricspb.Exemplar_AsInt{AsInt: 3},
		SpanId: bytes.Repeat([]byte{2}, 8), TraceId: bytes.Repeat([]byte{1}, 16)}}
	num := []*metricspb.NumberDataPoint{{Attributes: attrs(), StartTimeUnixNano: 1, TimeUnixNano: 2,
		Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: 2.5}, Exemplars: ex, Flags: 1}}
	sum, min, max := 10.0, 1.0, 9.0
	return &metricspb.MetricsData{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: resource,
		ScopeMetrics: []*metricspb.ScopeMetrics{{Scope: scope, Metrics: []*metricspb.Metric{
			{Name: "g", Description: "d", Unit: "1", Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: num}}, Metadata: attrs()},
			{Name: "s", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{DataPoints: num, IsMonotonic: true,
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}}},
			{Name: "h", Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{DataPoints: []*metricspb.HistogramDataPoint{{
				Attributes: attrs(), Count: 3, Sum: &sum, BucketCounts: []uint64{1, 2}, ExplicitBounds: []float64{5},
				Exemplars: ex, Min: &min, Max: &max,
			}}}}},
			{Name: "e", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{
				DataPoints: []*metricspb.ExponentialHistogramDataPoint{{
					Attributes: attrs(), Count: 3, Scale: -2, ZeroCount: 1,
					Positive:  &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -3, BucketCounts: []uint64{1, 1}},
					Negative:  &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: 2, BucketCounts: []uint64{0}},
					Exemplars: ex, ZeroThreshold: 0.1,
				}},
			}}},
			{Name: "q", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: []*metricspb.SummaryDataPoint{{
				Attributes: attrs(), Count: 4, Sum: 8,
				QuantileValues: []*metricspb.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5, Value: 2}},
			}}}}},
		}}},
	}}}
}

func richLogs() proto.Message {
	return &logspb.LogsData{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: resource,
		ScopeLogs: []*logspb.ScopeLogs{{Scope: scope, LogRecords: []*logspb.LogRecord{{
			TimeUnixNano: 1, ObservedTimeUnixNano: 2, SeverityNumber: logspb.SeverityNumber_SEVERITY_NUMBER_WARN,
			SeverityText: "WARN", Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: attrs()}}},
			Attributes: attrs(), Flags: 1, TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8), EventName: "ev",
		}}}},
	}}}
}

var richExports = map[spool.Signal]func() proto.Message{
	spool.SignalTraces: richTraces, spool.SignalMetrics: richMetrics, spool.SignalLogs: richLogs,
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func zlibbed(b []byte) []byte {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Every well-formed export passes, in every format and encoding the relay
// takes: a check that refused one would lose it.
func TestCheckAcceptsWellFormedExports(t *testing.T) {
	for sig, build := range richExports {
		pb, err := proto.Marshal(build())
		if err != nil {
			t.Fatal(err)
		}
		js, err := protojson.Marshal(build())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name, mt, enc string
			body          []byte
		}{
			{"protobuf", "application/x-protobuf", "", pb},
			{"protobuf gzip", "application/x-protobuf", "gzip", gzipped(pb)},
			{"protobuf deflate", "application/x-protobuf", "deflate", zlibbed(pb)},
			{"protobuf identity", "application/x-protobuf", "identity", pb},
			{"JSON", "application/json", "", js},
			{"JSON gzip", "application/json", "gzip", gzipped(js)},
			{"empty protobuf", "application/x-protobuf", "", nil},
		} {
			if err := checkBody(sig, c.mt, c.enc, c.body, 1<<20); err != nil {
				t.Errorf("%v %s: %v", sig, c.name, err)
			}
		}
	}
	// A repeated number sent unpacked is as valid as packed.
	bounds := protowire.AppendTag(nil, 7, protowire.Fixed64Type) // explicit_bounds
	bounds = protowire.AppendFixed64(bounds, 1)
	counts := protowire.AppendTag(nil, 6, protowire.Fixed64Type) // bucket_counts
	counts = protowire.AppendFixed64(counts, 1)
	point := append(append([]byte{}, counts...), bounds...)
	body := nest(point, 1, 2, 2, 9, 1) // resource_metrics.scope_metrics.metrics.histogram.data_points
	if err := checkBody(spool.SignalMetrics, "application/x-protobuf", "", body, 1<<20); err != nil {
		t.Errorf("unpacked repeated numbers: %v", err)
	}
}

// nest wraps inner in length-delimited fields, outermost first.
func nest(inner []byte, fields ...protowire.Number) []byte {
	for i := len(fields) - 1; i >= 0; i-- {
		b := protowire.AppendTag(nil, fields[i], protowire.BytesType)
		inner = protowire.AppendBytes(b, inner)
	}
	return inner
}

func TestCheckRefusesMalformedBodies(t *testing.T) {
	good, _ := otlptest.TraceBody(3)
	badSpan := protowire.AppendTag(nil, 1, protowire.VarintType) // trace_id as a number
	badSpan = protowire.AppendVarint(badSpan, 5)
	for _, c := range []struct {
		name, mt, enc string
		body          []byte
		want          string
	}{
		{"garbage", "application/x-protobuf", "", []byte("hello, this is not protobuf"), "at byte 2: field 13 of ExportTraceServiceRequest"},
		{"all ones", "application/x-protobuf", "", bytes.Repeat([]byte{0xff}, 12), "invalid field tag"},
		{"field 0", "application/x-protobuf", "", []byte{0x02, 0x00}, "invalid field tag"},
		{"truncated", "application/x-protobuf", "", good[:len(good)-5], "past the end"},
		{"wrong wire type", "application/x-protobuf", "", []byte{0x08, 0x01}, "field resource_spans of ExportTraceServiceRequest has wire type 0"},
		{"nested wrong wire type", "application/x-protobuf", "", nest(badSpan, 1, 2, 2), "field trace_id of Span"},
		{"nested truncation", "application/x-protobuf", "", nest([]byte{0x0a, 0x7f, 1, 2}, 1, 2), "field scope of ScopeSpans"},
		{"gzip of garbage", "application/x-protobuf", "gzip", gzipped([]byte("not protobuf")), "reserved wire type"},
		{"not gzip", "application/x-protobuf", "gzip", good, "not compressed that way"},
		{"truncated gzip", "application/x-protobuf", "gzip", gzipped(good)[:20], "truncated"},
		{"not zlib", "application/x-protobuf", "deflate", good, "not zlib"},
		{"JSON syntax", "application/json", "", []byte(`{"resourceSpans":[}`), "invalid character"},
		{"JSON array", "application/json", "", []byte(` []`), "JSON object"},
		{"protobuf as JSON", "application/json", "", good, "not valid JSON"},
	} {
		err := checkBody(spool.SignalTraces, c.mt, c.enc, c.body, 1<<20)
		var be *BodyError
		if !errors.As(err, &be) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a *BodyError saying %q", c.name, err, c.want)
		}
	}
	cut := nest([]byte{0x32, 0x03, 1, 2, 3}, 1, 2, 2, 9, 1) // 3 bytes of packed fixed64
	if err := checkBody(spool.SignalMetrics, "application/x-protobuf", "", cut, 1<<20); err == nil || !strings.Contains(err.Error(), "field bucket_counts of HistogramDataPoint") {
		t.Errorf("packed values cut short: %v", err)
	}
	bomb := gzipped(make([]byte, 2<<20))
	if err := checkBody(spool.SignalTraces, "application/x-protobuf", "gzip", bomb, 1<<20); !errors.Is(err, ErrInflatedTooLarge) {
		t.Errorf("%d bytes inflating to 2 MiB, cap 1 MiB: %v", len(bomb), err)
	}
}

// FuzzCheckProtobuf: the check never panics, and never passes a body that
// the OTLP types cannot decode (strings aside: it does not check UTF-8).
func FuzzCheckProtobuf(f *testing.F) {
	for _, build := range richExports {
		b, _ := proto.Marshal(build())
		f.Add(b)
	}
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, body []byte) {
		for sig, build := range richExports {
			if checkProtobuf(sig, body) != nil {
				continue
			}
			m := build()
			proto.Reset(m)
			if err := proto.Unmarshal(body, m); err != nil && !strings.Contains(err.Error(), "UTF-8") {
				t.Errorf("%v: the check passed what does not decode: %v", sig, err)
			}
		}
	})
}

// BenchmarkStoredExport runs the relay's whole handler for an export it
// stores (upstream down), then the body check alone on the same body, and
// reports the check's share of the handler's time as check-%.
func BenchmarkStoredExport(b *testing.B) {
	for _, spans := range []int{20, 512} {
		pb, _ := otlptest.TraceBody(spans)
		for _, c := range []struct {
			name, enc string
			body      []byte
		}{
			{"protobuf", "", pb},
			{"gzip", "gzip", gzipped(pb)},
		} {
			b.Run(fmt.Sprintf("%s/%d-spans", c.name, spans), func(b *testing.B) {
				benchmarkStoredExport(b, c.enc, c.body)
			})
		}
	}
}

func benchmarkStoredExport(b *testing.B, enc string, body []byte) {
	r, _, _ := newTestRelay(b, 1<<40)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	start := time.Now()
	for range b.N {
		req, _ := http.NewRequest("POST", "/v1/traces", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		if enc != "" {
			req.Header.Set("Content-Encoding", enc)
		}
		w := &discardWriter{h: http.Header{}}
		r.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
	export := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for range b.N {
		if err := checkBody(spool.SignalTraces, "application/x-protobuf", enc, body, DefaultMaxBodyBytes); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(100*float64(time.Since(start))/float64(export), "check-%")
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
