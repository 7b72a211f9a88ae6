package otlptest

import (
	"testing"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

func TestTraceBody(t *testing.T) {
	body, keys := TraceBody(10)
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	spans := req.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()
	if len(spans) != 10 || len(keys) != 10 {
		t.Fatalf("%d spans, %d keys", len(spans), len(keys))
	}
	seen := make(map[SpanKey]bool)
	for i, s := range spans {
		k := spanKey(s.GetTraceId(), s.GetSpanId())
		if k != keys[i] {
			t.Fatalf("span %d is %v, key says %v", i, k, keys[i])
		}
		if seen[k] || k.SpanID == [8]byte{} || k.TraceID == [16]byte{} {
			t.Fatalf("bad or duplicate key %v", k)
		}
		seen[k] = true
	}
	_, again := TraceBody(10)
	for _, k := range again {
		if seen[k] {
			t.Fatal("two calls produced the same span ID")
		}
	}
}

func TestMetricsBody(t *testing.T) {
	var req collectormetrics.ExportMetricsServiceRequest
	if err := proto.Unmarshal(MetricsBody(4), &req); err != nil {
		t.Fatal(err)
	}
	if n := countDataPoints(&req); n != 4 {
		t.Fatalf("%d data points, want 4", n)
	}
}

func TestLogsBody(t *testing.T) {
	var req collectorlogs.ExportLogsServiceRequest
	if err := proto.Unmarshal(LogsBody(3), &req); err != nil {
		t.Fatal(err)
	}
	if n := len(req.GetResourceLogs()[0].GetScopeLogs()[0].GetLogRecords()); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
}

func TestSpanKeyString(t *testing.T) {
	k := SpanKey{TraceID: [16]byte{15: 1}, SpanID: [8]byte{0xab}}
	if got, want := k.String(), "00000000000000000000000000000001/ab00000000000000"; got != want {
		t.Fatalf("%s, want %s", got, want)
	}
}

func TestParseSpanKey(t *testing.T) {
	k := SpanKey{TraceID: [16]byte{0: 0xfe, 15: 1}, SpanID: [8]byte{0xab, 7: 2}}
	got, err := ParseSpanKey(k.String())
	if err != nil || got != k {
		t.Fatalf("ParseSpanKey(%q) = %v, %v; want %v", k.String(), got, err, k)
	}
	for _, bad := range []string{"", "/", "00/ab", "0000000000000000000000000000000g/ab00000000000000", "00000000000000000000000000000001ab00000000000000"} {
		if _, err := ParseSpanKey(bad); err == nil {
			t.Errorf("ParseSpanKey(%q) succeeded, want an error", bad)
		}
	}
}
