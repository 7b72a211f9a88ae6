package otlpretrygrpc_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// grpcStep is one scripted answer of a grpcCollector.
type grpcStep struct {
	code codes.Code
	// retryInfo attaches RetryInfo with retryDelay to a failure.
	retryInfo  bool
	retryDelay time.Duration
	// partial answers OK with a partial success rejecting one item.
	partial bool
	// block holds the call until it is closed.
	block chan struct{}
}

// grpcCollector is a fake OTLP/gRPC collector: a real grpc.Server on
// 127.0.0.1 implementing the three Export services (and the health
// service, which is not an export). It plays a script of answers, one per
// Export call, then answers OK; it counts what it accepted and keeps the
// metadata of every Export call.
type grpcCollector struct {
	coltrace.UnimplementedTraceServiceServer
	addr string

	mu         sync.Mutex // guards the fields below
	srv        *grpc.Server
	script     []grpcStep
	spans      int
	dataPoints int
	logRecords int
	calls      int
	md         []metadata.MD
	entered    chan struct{} // a value when a blocked call starts
}

func newGRPCCollector(t testing.TB, script ...grpcStep) *grpcCollector {
	t.Helper()
	c, err := startGRPCCollector(script...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	return c
}

// startGRPCCollector starts a collector on a free port of 127.0.0.1; stop
// ends it.
func startGRPCCollector(script ...grpcStep) (*grpcCollector, error) {
	c := &grpcCollector{script: script, entered: make(chan struct{}, 16)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.addr = lis.Addr().String()
	c.serve(lis)
	return c, nil
}

func (c *grpcCollector) serve(lis net.Listener) {
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, c)
	colmetrics.RegisterMetricsServiceServer(srv, metricsServer{c: c})
	collogs.RegisterLogsServiceServer(srv, logsServer{c: c})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	c.mu.Lock()
	c.srv = srv
	c.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

// stop stops the server: its address then refuses connections.
func (c *grpcCollector) stop() {
	c.mu.Lock()
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// restart serves again on the same address.
func (c *grpcCollector) restart(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.serve(lis)
}

// answer takes the next scripted step for a call, with its metadata.
func (c *grpcCollector) answer(ctx context.Context) (grpcStep, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c.mu.Lock()
	c.calls++
	c.md = append(c.md, md)
	var s grpcStep
	if len(c.script) > 0 {
		s, c.script = c.script[0], c.script[1:]
	}
	c.mu.Unlock()
	if s.block != nil {
		c.entered <- struct{}{}
		<-s.block
	}
	if s.code == codes.OK {
		return s, nil
	}
	st := status.New(s.code, "scripted "+s.code.String())
	if s.retryInfo {
		var err error
		st, err = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(s.retryDelay)})
		if err != nil {
			return s, err
		}
	}
	return s, st.Err()
}

func (c *grpcCollector) Export(ctx context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	s, err := c.answer(ctx)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	c.mu.Lock()
	c.spans += n
	c.mu.Unlock()
	resp := &coltrace.ExportTraceServiceResponse{}
	if s.partial {
		resp.PartialSuccess = &coltrace.ExportTracePartialSuccess{RejectedSpans: 1, ErrorMessage: "one span refused"}
	}
	return resp, nil
}

type metricsServer struct {
	colmetrics.UnimplementedMetricsServiceServer
	c *grpcCollector
}

func (m metricsServer) Export(ctx context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	if _, err := m.c.answer(ctx); err != nil {
		return nil, err
	}
	n := 0
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, mt := range sm.GetMetrics() {
				n += dataPoints(mt)
			}
		}
	}
	m.c.mu.Lock()
	m.c.dataPoints += n
	m.c.mu.Unlock()
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

func dataPoints(m *metricspb.Metric) int {
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Sum:
		return len(d.Sum.GetDataPoints())
	case *metricspb.Metric_Gauge:
		return len(d.Gauge.GetDataPoints())
	case *metricspb.Metric_Histogram:
		return len(d.Histogram.GetDataPoints())
	}
	return 0
}

type logsServer struct {
	collogs.UnimplementedLogsServiceServer
	c *grpcCollector
}

func (l logsServer) Export(ctx context.Context, req *collogs.ExportLogsServiceRequest) (*collogs.ExportLogsServiceResponse, error) {
	if _, err := l.c.answer(ctx); err != nil {
		return nil, err
	}
	n := 0
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			n += len(sl.GetLogRecords())
		}
	}
	l.c.mu.Lock()
	l.c.logRecords += n
	l.c.mu.Unlock()
	return &collogs.ExportLogsServiceResponse{}, nil
}

// counts returns spans, data points, log records and Export calls.
func (c *grpcCollector) counts() (spans, points, logs, calls int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans, c.dataPoints, c.logRecords, c.calls
}

// metadata returns the metadata of every Export call so far.
func (c *grpcCollector) metadata() []metadata.MD {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]metadata.MD(nil), c.md...)
}
