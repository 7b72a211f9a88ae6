package otlptest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // exporters' gzip-compressed calls
	"google.golang.org/grpc/metadata"
)

// GRPCCall is one Export call a GRPCCollector received.
type GRPCCall struct {
	// Method is the call's full method name, such as
	// "/opentelemetry.proto.collector.trace.v1.TraceService/Export".
	Method string
	// MD is the call's metadata.
	MD metadata.MD
	// Err is what the collector answered; nil for success.
	Err error
}

// GRPCCollector is a fake OTLP/gRPC collector: a real grpc.Server on
// 127.0.0.1 with the three Export services. It answers each call with the
// next scripted error (Script), then with success; it counts the spans,
// data points and log records of the calls it accepted, and keeps every
// call's method and metadata.
type GRPCCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	addr string
	opts []grpc.ServerOption

	mu         sync.Mutex // guards the fields below
	srv        *grpc.Server
	script     []error
	spans      map[SpanKey]int
	dataPoints int
	logs       int
	calls      []GRPCCall
	changed    chan struct{} // closed and replaced on every accepted call
}

// StartGRPCCollector starts a GRPCCollector on a free port of 127.0.0.1
// with the given server options (grpc.Creds for TLS), stopped at the
// test's end.
func StartGRPCCollector(tb testing.TB, opts ...grpc.ServerOption) *GRPCCollector {
	tb.Helper()
	c := &GRPCCollector{opts: opts, spans: map[SpanKey]int{}, changed: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c.addr = lis.Addr().String()
	c.serve(lis)
	tb.Cleanup(c.Stop)
	return c
}

// Addr is the collector's host:port.
func (c *GRPCCollector) Addr() string { return c.addr }

func (c *GRPCCollector) serve(lis net.Listener) {
	srv := grpc.NewServer(c.opts...)
	collectortrace.RegisterTraceServiceServer(srv, c)
	collectormetrics.RegisterMetricsServiceServer(srv, grpcMetrics{c: c})
	collectorlogs.RegisterLogsServiceServer(srv, grpcLogs{c: c})
	c.mu.Lock()
	c.srv = srv
	c.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

// Stop stops the server: its address then refuses connections.
func (c *GRPCCollector) Stop() {
	c.mu.Lock()
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Start serves again on the same address.
func (c *GRPCCollector) Start() error {
	lis, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	c.serve(lis)
	return nil
}

// Script sets the answers of the next calls, one each: a status error
// (status.Error) refuses the call, nil accepts it.
func (c *GRPCCollector) Script(errs ...error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.script = append(c.script[:0], errs...)
}

// Spans is the number of spans accepted, duplicates included.
func (c *GRPCCollector) Spans() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.spans {
		n += k
	}
	return n
}

// SpanDuplicates is the number of spans accepted more than once.
func (c *GRPCCollector) SpanDuplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.spans {
		n += k - 1
	}
	return n
}

// HasSpan reports whether the span with these IDs was accepted.
func (c *GRPCCollector) HasSpan(traceID [16]byte, spanID [8]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans[SpanKey{traceID, spanID}] > 0
}

// DataPoints is the number of metric data points accepted.
func (c *GRPCCollector) DataPoints() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dataPoints
}

// LogRecords is the number of log records accepted.
func (c *GRPCCollector) LogRecords() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs
}

// Calls returns every Export call received, in order.
func (c *GRPCCollector) Calls() []GRPCCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]GRPCCall(nil), c.calls...)
}

// Wait returns once cond, called with the collector, holds, or with an
// error when ctx ends first.
func (c *GRPCCollector) Wait(ctx context.Context, what string, cond func(*GRPCCollector) bool) error {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if cond(c) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("otlptest: waiting for %s: %w", what, ctx.Err())
		}
	}
}

// answer records a call and takes its scripted answer; count, called
// under the lock when the call is accepted, adds its items.
func (c *GRPCCollector) answer(ctx context.Context, count func()) error {
	method, _ := grpc.Method(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	if len(c.script) > 0 {
		err, c.script = c.script[0], c.script[1:]
	}
	c.calls = append(c.calls, GRPCCall{Method: method, MD: md.Copy(), Err: err})
	if err == nil {
		count()
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return err
}

var errNilRequest = errors.New("otlptest: nil request")

// Export accepts or refuses a traces export, as scripted.
func (c *GRPCCollector) Export(ctx context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	if req == nil {
		return nil, errNilRequest
	}
	err := c.answer(ctx, func() {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					c.spans[spanKey(s.GetTraceId(), s.GetSpanId())]++
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

type grpcMetrics struct {
	collectormetrics.UnimplementedMetricsServiceServer
	c *GRPCCollector
}

func (m grpcMetrics) Export(ctx context.Context, req *collectormetrics.ExportMetricsServiceRequest) (*collectormetrics.ExportMetricsServiceResponse, error) {
	if err := m.c.answer(ctx, func() { m.c.dataPoints += countDataPoints(req) }); err != nil {
		return nil, err
	}
	return &collectormetrics.ExportMetricsServiceResponse{}, nil
}

type grpcLogs struct {
	collectorlogs.UnimplementedLogsServiceServer
	c *GRPCCollector
}

func (l grpcLogs) Export(ctx context.Context, req *collectorlogs.ExportLogsServiceRequest) (*collectorlogs.ExportLogsServiceResponse, error) {
	err := l.c.answer(ctx, func() {
		for _, rl := range req.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				l.c.logs += len(sl.GetLogRecords())
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return &collectorlogs.ExportLogsServiceResponse{}, nil
}
