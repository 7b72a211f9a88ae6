package demo

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver is a small OTLP/HTTP receiver (protobuf, optionally gzipped) on
// 127.0.0.1 that counts distinct spans, metric data points and log records,
// and the copies of each it got more than once.
//
// It is written here rather than taken from internal/otlptest, whose
// Collector does the same and more, because otlptest is a test bench that
// imports "testing"; the command should not ship it.
type Receiver struct {
	ln  net.Listener
	srv *http.Server

	mu     sync.Mutex
	spans  map[string]struct{}
	points map[string]struct{}
	logs   map[string]struct{}
	c      Counts
}

// Counts are what a Receiver got: distinct items and extra copies.
type Counts struct {
	Spans, SpanDups   int
	Points, PointDups int
	Logs, LogDups     int
	Requests          int
}

const maxReceiveBytes = 64 << 20

// NewReceiver starts a Receiver on a free port of 127.0.0.1.
func NewReceiver() (*Receiver, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Receiver{
		ln:     ln,
		spans:  map[string]struct{}{},
		points: map[string]struct{}{},
		logs:   map[string]struct{}{},
	}
	r.srv = &http.Server{
		Handler:           http.HandlerFunc(r.handle),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is the receiver's base URL.
func (r *Receiver) URL() string { return "http://" + r.ln.Addr().String() }

// Counts returns a snapshot.
func (r *Receiver) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

// Close stops the receiver.
func (r *Receiver) Close() { _ = r.srv.Close() }

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var msg, resp proto.Message
	switch req.URL.Path {
	case "/v1/traces":
		msg, resp = &collectortrace.ExportTraceServiceRequest{}, &collectortrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		msg, resp = &collectormetrics.ExportMetricsServiceRequest{}, &collectormetrics.ExportMetricsServiceResponse{}
	case "/v1/logs":
		msg, resp = &collectorlogs.ExportLogsServiceRequest{}, &collectorlogs.ExportLogsServiceResponse{}
	default:
		http.NotFound(w, req)
		return
	}
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt != "application/x-protobuf" {
		http.Error(w, "this receiver takes application/x-protobuf", http.StatusUnsupportedMediaType)
		return
	}
	body, err := readBody(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := proto.Unmarshal(body, msg); err != nil {
		http.Error(w, "malformed OTLP payload", http.StatusBadRequest)
		return
	}
	r.count(msg)
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
}

func readBody(req *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(req.Body, maxReceiveBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxReceiveBytes {
		return nil, errors.New("body too large")
	}
	switch req.Header.Get("Content-Encoding") {
	case "", "identity":
		return raw, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(io.LimitReader(zr, maxReceiveBytes))
	}
	return nil, fmt.Errorf("unsupported Content-Encoding %q", req.Header.Get("Content-Encoding"))
}

// count records every item of msg under a key that a resend reproduces
// exactly: trace and span ID for spans; metric name, attributes and
// timestamps for data points; time, observed time and body for logs.
func (r *Receiver) count(msg proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c.Requests++
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
					add(r.spans, string(sp.GetTraceId())+string(sp.GetSpanId()), &r.c.Spans, &r.c.SpanDups)
				}
			}
		}
	case *collectormetrics.ExportMetricsServiceRequest:
		for _, rm := range m.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, met := range sm.GetMetrics() {
					for _, key := range pointKeys(met) {
						add(r.points, key, &r.c.Points, &r.c.PointDups)
					}
				}
			}
		}
	case *collectorlogs.ExportLogsServiceRequest:
		for _, rl := range m.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				for _, lr := range sl.GetLogRecords() {
					key := fmt.Sprintf("%d|%d|%s", lr.GetTimeUnixNano(), lr.GetObservedTimeUnixNano(), anyKey(lr.GetBody()))
					add(r.logs, key, &r.c.Logs, &r.c.LogDups)
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
