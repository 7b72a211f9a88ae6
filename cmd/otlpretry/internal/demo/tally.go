package demo

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"
)

// Counts are what a receiver accepted: distinct items and extra copies.
type Counts struct {
	Spans, SpanDups   int
	Points, PointDups int
	Logs, LogDups     int
	Requests          int
}

// tally counts the items of accepted OTLP export requests, whichever
// protocol brought them, keeping every key it has seen to tell copies.
type tally struct {
	mu     sync.Mutex // guards all below
	spans  map[string]struct{}
	points map[string]struct{}
	logs   map[string]struct{}
	c      Counts
}

func newTally() *tally {
	return &tally{spans: map[string]struct{}{}, points: map[string]struct{}{}, logs: map[string]struct{}{}}
}

// counts returns a snapshot.
func (t *tally) counts() Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.c
}

// count records every item of msg under a key that a resend reproduces
// exactly: trace and span ID for spans; metric name, attributes and
// timestamps for data points; time, observed time and body for logs.
func (t *tally) count(msg proto.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.c.Requests++
	add := func(set map[string]struct{}, key string, n, dups *int) {
		if _, ok := set[key]; ok {
			*dups++
			return
		}
		set[key] = struct{}{}
		*n++
	}
	switch m := msg.(type) {
	case *collectortrace.ExportTraceServiceRequest:
		for _, rs := range m.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					add(t.spans, string(sp.GetTraceId())+string(sp.GetSpanId()), &t.c.Spans, &t.c.SpanDups)
				}
			}
		}
	case *collectormetrics.ExportMetricsServiceRequest:
		for _, rm := range m.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, met := range sm.GetMetrics() {
					for _, key := range pointKeys(met) {
						add(t.points, key, &t.c.Points, &t.c.PointDups)
					}
				}
			}
		}
	case *collectorlogs.ExportLogsServiceRequest:
		for _, rl := range m.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				for _, lr := range sl.GetLogRecords() {
					key := fmt.Sprintf("%d|%d|%s", lr.GetTimeUnixNano(), lr.GetObservedTimeUnixNano(), anyKey(lr.GetBody()))
					add(t.logs, key, &t.c.Logs, &t.c.LogDups)
				}
			}
		}
	}
}

type point interface {
	GetAttributes() []*commonpb.KeyValue
	GetStartTimeUnixNano() uint64
	GetTimeUnixNano() uint64
}

func pointKeys(m *metricspb.Metric) []string {
	var pts []point
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Sum:
		for _, p := range d.Sum.GetDataPoints() {
			pts = append(pts, p)
		}
	case *metricspb.Metric_Gauge:
		for _, p := range d.Gauge.GetDataPoints() {
			pts = append(pts, p)
		}
	case *metricspb.Metric_Histogram:
		for _, p := range d.Histogram.GetDataPoints() {
			pts = append(pts, p)
		}
	case *metricspb.Metric_ExponentialHistogram:
		for _, p := range d.ExponentialHistogram.GetDataPoints() {
			pts = append(pts, p)
		}
	case *metricspb.Metric_Summary:
		for _, p := range d.Summary.GetDataPoints() {
			pts = append(pts, p)
		}
	}
	keys := make([]string, 0, len(pts))
	for _, p := range pts {
		attrs := make([]string, 0, len(p.GetAttributes()))
		for _, kv := range p.GetAttributes() {
			attrs = append(attrs, kv.GetKey()+"="+anyKey(kv.GetValue()))
		}
		sort.Strings(attrs)
		keys = append(keys, fmt.Sprintf("%s|%s|%d|%d", m.GetName(), strings.Join(attrs, ","), p.GetStartTimeUnixNano(), p.GetTimeUnixNano()))
	}
	return keys
}

func anyKey(v *commonpb.AnyValue) string {
	if v == nil {
		return ""
	}
	if s, ok := v.GetValue().(*commonpb.AnyValue_StringValue); ok {
		return "s:" + s.StringValue
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	return "p:" + string(b)
}
