package relay

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
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

// sameVerdict fails t unless the walk and the protowire reference walk
// both pass body as an export of sig, or both refuse it at the same byte
// for the same reason. It returns the walk's verdict.
func sameVerdict(t *testing.T, name string, sig spool.Signal, body []byte) *BodyError {
	t.Helper()
	s := requestSchemas[sig]
	got, want := s.walk(body), refWalk(s, body, 0, 0)
	if (got == nil) != (want == nil) || got != nil && *got != *want {
		t.Errorf("%v %s (%d bytes): walk says %v, reference says %v", sig, name, len(body), got, want)
	}
	return got
}

// deepAnyValue is a logs export whose log body nests ArrayValues levels
// deep (two messages a level) around a string, the deepest nesting OTLP
// allows.
func deepAnyValue(levels int) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType) // AnyValue.string_value
	b = protowire.AppendString(b, "x")
	for range levels {
		b = nest(b, 5, 1) // AnyValue.array_value, ArrayValue.values
	}
	return nest(b, 1, 2, 2, 5) // resource_logs.scope_logs.log_records.body
}

// The walk passes and refuses exactly what a plain protowire walk does,
// with the same offset and reason: every valid export, each of them cut
// short at every length, each byte of them changed, and bodies made to
// take every unusual path (long tags and lengths, varints of ten bytes,
// groups, packed values, nesting to the limit and past it).
func TestWalkMatchesReference(t *testing.T) {
	valid := map[string]struct {
		sig  spool.Signal
		body []byte
	}{}
	for sig, build := range richExports {
		b, err := proto.Marshal(build())
		if err != nil {
			t.Fatal(err)
		}
		valid[fmt.Sprintf("rich %v", sig)] = struct {
			sig  spool.Signal
			body []byte
		}{sig, b}
	}
	traces, _ := otlptest.TraceBody(40)
	valid["40 spans"] = struct {
		sig  spool.Signal
		body []byte
	}{spool.SignalTraces, traces}
	valid["20 points"] = struct {
		sig  spool.Signal
		body []byte
	}{spool.SignalMetrics, otlptest.MetricsBody(20)}

	for name, v := range valid {
		for sig := range richExports { // also as another signal's export
			sameVerdict(t, name, sig, v.body)
		}
		for n := range len(v.body) {
			sameVerdict(t, fmt.Sprintf("%s cut to %d", name, n), v.sig, v.body[:n])
		}
		mut := bytes.Clone(v.body)
		for i := range mut {
			for _, x := range []byte{0x01, 0x02, 0x04, 0x07, 0x08, 0x10, 0x7f, 0x80, 0xff} {
				mut[i] ^= x
				sameVerdict(t, fmt.Sprintf("%s, byte %d xor %#x", name, i, x), v.sig, mut)
				mut[i] ^= x
			}
		}
	}

	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	varint := func(v uint64) []byte { return protowire.AppendVarint(nil, v) }
	span := func(fields ...[]byte) []byte { return nest(cat(fields...), 1, 2, 2) }
	point := func(fields ...[]byte) []byte { return nest(cat(fields...), 1, 2, 2, 9, 1) } // a HistogramDataPoint
	long := bytes.Repeat([]byte{'n'}, 20000)
	for _, c := range []struct {
		name string
		sig  spool.Signal
		body []byte
		want string // in the reason; "" for a body that passes
	}{
		{"span flags, a two-byte tag", spool.SignalTraces, span(tag(16, protowire.Fixed32Type), []byte{1, 0, 0, 0}), ""},
		{"span flags cut", spool.SignalTraces, span(tag(16, protowire.Fixed32Type), []byte{1, 0, 0}), "field flags of Span: unexpected EOF"},
		{"span flags as a varint", spool.SignalTraces, span(tag(16, protowire.VarintType), varint(1)), "field flags of Span has wire type 0, want 5"},
		{"a two-byte tag cut", spool.SignalTraces, span([]byte{0x85}), "invalid field tag in Span (unexpected EOF)"},
		{"a non-minimal tag", spool.SignalTraces, span([]byte{0x8a, 0x80, 0x00, 0x01, 'x'}), ""}, // trace_id, a 3-byte tag
		{"a five-byte tag", spool.SignalTraces, span([]byte{0x8a, 0x80, 0x80, 0x80, 0x00, 0x01, 'x'}), ""},
		{"a tag past the field numbers", spool.SignalTraces, span([]byte{0xfa, 0xff, 0xff, 0xff, 0x7f, 0x00}), "invalid field number"},
		{"a tag of 11 bytes", spool.SignalTraces, span(bytes.Repeat([]byte{0x80}, 10), []byte{0x01}), "overflow"},
		{"unknown field 31, every wire type", spool.SignalTraces, span(
			tag(31, protowire.VarintType), varint(1<<40), tag(31, protowire.Fixed64Type), make([]byte, 8),
			tag(31, protowire.BytesType), varint(2), []byte("ab"), tag(31, protowire.Fixed32Type), make([]byte, 4)), ""},
		{"unknown field 32", spool.SignalTraces, span(tag(32, protowire.BytesType), varint(1), []byte("a")), ""},
		{"unknown field 900", spool.SignalTraces, span(tag(900, protowire.VarintType), varint(3)), ""},
		{"a group", spool.SignalTraces, span(tag(20, protowire.StartGroupType), tag(1, protowire.VarintType), varint(1), tag(20, protowire.EndGroupType)), ""},
		{"a group not closed", spool.SignalTraces, span(tag(20, protowire.StartGroupType), tag(1, protowire.VarintType), varint(1)), "field 20 of Span: unexpected EOF"},
		{"an end group alone", spool.SignalTraces, span(tag(20, protowire.EndGroupType)), "end group"},
		{"wire type 6", spool.SignalTraces, span([]byte{0x0e}), "field trace_id of Span has wire type 6"},
		{"wire type 7", spool.SignalTraces, span([]byte{0x7f}), "field status of Span has wire type 7"},
		{"a varint of 10 bytes", spool.SignalTraces, span(tag(6, protowire.VarintType), varint(1<<63)), ""},
		{"a varint that overflows", spool.SignalTraces, span(tag(6, protowire.VarintType), bytes.Repeat([]byte{0xff}, 9), []byte{0x02}), "variable length integer overflow"},
		{"a varint of 11 bytes", spool.SignalTraces, span(tag(6, protowire.VarintType), bytes.Repeat([]byte{0x80}, 10), []byte{0x00}), "variable length integer overflow"},
		{"a varint cut", spool.SignalTraces, span(tag(6, protowire.VarintType), []byte{0x80, 0x80}), "field kind of Span: unexpected EOF"},
		{"a three-byte length", spool.SignalTraces, span(tag(5, protowire.BytesType), varint(uint64(len(long))), long), ""},
		{"a non-minimal length", spool.SignalTraces, span(tag(5, protowire.BytesType), []byte{0x81, 0x80, 0x00}, []byte("x")), ""},
		{"a length past the message", spool.SignalTraces, span(tag(5, protowire.BytesType), varint(20001), long), "field name of Span: its length runs past the end of the message"},
		{"a length past 2^63", spool.SignalTraces, span(tag(5, protowire.BytesType), varint(1<<63+5), long), "field name of Span: its length runs past the end of the message"},
		{"a length that overflows", spool.SignalTraces, span(tag(5, protowire.BytesType), bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), "variable length integer overflow"},
		{"packed fixed64", spool.SignalMetrics, point(tag(6, protowire.BytesType), varint(16), make([]byte, 16)), ""},
		{"packed fixed64 cut", spool.SignalMetrics, point(tag(6, protowire.BytesType), varint(12), make([]byte, 12)), "field bucket_counts of HistogramDataPoint: packed values that do not fill it"},
		{"unpacked fixed64", spool.SignalMetrics, point(tag(6, protowire.Fixed64Type), make([]byte, 8)), ""},
		{"packed double as fixed32", spool.SignalMetrics, point(tag(7, protowire.Fixed32Type), make([]byte, 4)), "field explicit_bounds of HistogramDataPoint has wire type 5, want 1"},
		{"packed varints", spool.SignalMetrics, nest(cat(tag(2, protowire.BytesType), varint(14), varint(1), varint(1<<63), varint(300), varint(0)), 1, 2, 2, 10, 1, 9), ""},
		{"packed varints, one cut", spool.SignalMetrics, nest(cat(tag(2, protowire.BytesType), varint(3), varint(1), []byte{0x80, 0x80}), 1, 2, 2, 10, 1, 9), "field bucket_counts of Buckets: packed values"},
		{"packed varints, one overflows", spool.SignalMetrics, nest(cat(tag(2, protowire.BytesType), varint(10), bytes.Repeat([]byte{0xff}, 9), []byte{0x02}), 1, 2, 2, 10, 1, 9), "field bucket_counts of Buckets: packed values"},
		{"packed varints, one of 11 bytes", spool.SignalMetrics, nest(cat(tag(2, protowire.BytesType), varint(11), bytes.Repeat([]byte{0x80}, 10), []byte{0x00}), 1, 2, 2, 10, 1, 9), "field bucket_counts of Buckets: packed values"},
		{"empty nested messages", spool.SignalTraces, nest(nil, 1, 2, 2), ""},
		{"nesting to the limit", spool.SignalLogs, deepAnyValue((protowire.DefaultRecursionLimit - 4) / 2), ""},
		{"nesting past the limit", spool.SignalLogs, deepAnyValue((protowire.DefaultRecursionLimit-4)/2 + 1), "messages nested too deep"},
	} {
		err := sameVerdict(t, c.name, c.sig, c.body)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want it to pass", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Reason, c.want)):
			t.Errorf("%s: %v, want it refused: %q", c.name, err, c.want)
		}
	}
}

// FuzzWalkMatchesReference: on any bytes, the walk and the protowire
// reference walk agree on the verdict, the offset and the reason.
func FuzzWalkMatchesReference(f *testing.F) {
	for _, build := range richExports {
		b, _ := proto.Marshal(build())
		f.Add(b)
	}
	traces, _ := otlptest.TraceBody(3)
	f.Add(traces)
	f.Add(otlptest.MetricsBody(3))
	f.Add(deepAnyValue(3))
	f.Fuzz(func(t *testing.T, body []byte) {
		for sig := range richExports {
			sameVerdict(t, "fuzzed", sig, body)
		}
	})
}

// Inflating gives back exactly the body that was compressed, whatever the
// gzip trailer claims and however many members the body has, up to the
// cap and not a byte past it; the pooled readers and buffers carry
// nothing from one body to the next, a refused one included.
func TestDecodeBody(t *testing.T) {
	plain, _ := otlptest.TraceBody(200)
	small, _ := otlptest.TraceBody(2)
	zeros := make([]byte, 300_000)
	withISIZE := func(gz []byte, isize uint32) []byte {
		gz = bytes.Clone(gz)
		binary.LittleEndian.PutUint32(gz[len(gz)-4:], isize)
		return gz
	}
	type result struct {
		plain []byte
		err   string // in the error; "" for none
	}
	for _, c := range []struct {
		name, enc string
		body      []byte
		limit     int64
		want      result
	}{
		{"gzip", "gzip", gzipped(plain), 1 << 20, result{plain: plain}},
		{"gzip, then a smaller one", "gzip", gzipped(small), 1 << 20, result{plain: small}},
		{"two gzip members", "gzip", append(gzipped(plain), gzipped(small)...), 1 << 20, result{plain: append(bytes.Clone(plain), small...)}},
		{"a small member, then a large one", "gzip", append(gzipped(small), gzipped(plain)...), 1 << 20, result{plain: append(bytes.Clone(small), plain...)}},
		{"gzip of nothing", "gzip", gzipped(nil), 1 << 20, result{plain: []byte{}}},
		{"exactly the cap", "gzip", gzipped(plain), int64(len(plain)), result{plain: plain}},
		{"a byte over the cap", "gzip", gzipped(plain), int64(len(plain)) - 1, result{err: "inflates past the size cap"}},
		{"two members over the cap", "gzip", append(gzipped(plain), gzipped(small)...), int64(len(plain)), result{err: "inflates past the size cap"}},
		// The trailer's size is a hint only: a wrong one is caught by the
		// reader's own check, after the data is read.
		{"a trailer that says 4 GiB", "gzip", withISIZE(gzipped(plain), 1<<32-1), 1 << 20, result{err: "damaged"}},
		{"a trailer that says 1 byte", "gzip", withISIZE(gzipped(plain), 1), 1 << 20, result{err: "damaged"}},
		{"a trailer that says 4 GiB, over the cap", "gzip", withISIZE(gzipped(plain), 1<<32-1), 100, result{err: "inflates past the size cap"}},
		{"deflate", "deflate", zlibbed(plain), 1 << 20, result{plain: plain}},
		{"deflate not zlib", "deflate", plain, 1 << 20, result{err: "not zlib data"}},
		{"deflate after one that was not", "deflate", zlibbed(small), 1 << 20, result{plain: small}},
		{"deflate truncated", "deflate", zlibbed(plain)[:100], 1 << 20, result{err: "truncated"}},
		{"deflate over the cap", "deflate", zlibbed(plain), 1000, result{err: "inflates past the size cap"}},
		{"deflate that inflates 1000-fold", "deflate", zlibbed(zeros), 1 << 20, result{plain: zeros}},
		{"gzip after one over the cap", "gzip", gzipped(small), 1 << 20, result{plain: small}},
	} {
		got, release, err := decodeBody(c.enc, c.body, c.limit)
		switch {
		case c.want.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want.err != "" && (err == nil || !strings.Contains(err.Error(), c.want.err)):
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want.err)
		case err == nil && !bytes.Equal(got, c.want.plain):
			t.Errorf("%s: %d bytes inflated, want the %d compressed", c.name, len(got), len(c.want.plain))
		}
		if err == nil {
			release()
		}
	}
}

// FuzzDecodeGzip: on any bytes, inflating never panics, never returns
// more than the cap, and returns exactly what a gzip reader read to its
// end inflates (klauspost's, as the Collector's receiver uses: it refuses
// the header flags RFC 1952 reserves, which the standard library's
// ignores).
func FuzzDecodeGzip(f *testing.F) {
	plain, _ := otlptest.TraceBody(3)
	f.Add(gzipped(plain))
	f.Add(append(gzipped(plain), gzipped([]byte("x"))...))
	f.Add(gzipped(nil))
	f.Fuzz(func(t *testing.T, body []byte) {
		const limit = 1 << 16
		got, release, err := decodeBody("gzip", body, limit)
		zr, zerr := kgzip.NewReader(bytes.NewReader(body))
		var want []byte
		if zerr == nil {
			want, zerr = io.ReadAll(io.LimitReader(zr, limit+1))
		}
		switch {
		case err != nil && zerr == nil && len(want) <= limit:
			t.Errorf("refused (%v) what inflates to %d bytes", err, len(want))
		case err == nil && zerr != nil:
			t.Errorf("passed %d bytes of what the reader refuses: %v", len(got), zerr)
		case err == nil && !bytes.Equal(got, want):
			t.Errorf("inflated %d bytes, the reader %d", len(got), len(want))
		}
		if err == nil {
			release()
		}
	})
}
