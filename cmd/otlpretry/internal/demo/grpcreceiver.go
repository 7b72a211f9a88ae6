package demo

import (
	"context"
	"net"
	"sync/atomic"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed exports
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// GRPCReceiver is a small OTLP/gRPC receiver on 127.0.0.1 serving the
// three Export services, counting as Receiver does. While unavailable it
// answers every export with the gRPC status Unavailable and counts
// nothing, as a collector that cannot take data for now.
type GRPCReceiver struct {
	ln          net.Listener
	srv         *grpc.Server
	tally       *tally
	unavailable atomic.Bool
}

// NewGRPCReceiver starts a GRPCReceiver on a free port of 127.0.0.1.
func NewGRPCReceiver() (*GRPCReceiver, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &GRPCReceiver{
		ln:    ln,
		srv:   grpc.NewServer(grpc.MaxRecvMsgSize(maxReceiveBytes)),
		tally: newTally(),
	}
	collectortrace.RegisterTraceServiceServer(r.srv, grpcTraces{r: r})
	collectormetrics.RegisterMetricsServiceServer(r.srv, grpcMetrics{r: r})
	collectorlogs.RegisterLogsServiceServer(r.srv, grpcLogs{r: r})
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Addr is the receiver's host:port.
func (r *GRPCReceiver) Addr() string { return r.ln.Addr().String() }

// Counts returns a snapshot.
func (r *GRPCReceiver) Counts() Counts { return r.tally.counts() }

// SetUnavailable switches between answering Unavailable and accepting.
func (r *GRPCReceiver) SetUnavailable(on bool) { r.unavailable.Store(on) }

// Close stops the receiver and ends every connection.
func (r *GRPCReceiver) Close() { r.srv.Stop() }

// accept counts msg, or refuses it while the receiver is unavailable.
func (r *GRPCReceiver) accept(msg proto.Message) error {
	if r.unavailable.Load() {
		return status.Error(codes.Unavailable, "the receiver cannot take data now")
	}
	r.tally.count(msg)
	return nil
}

type grpcTraces struct {
	collectortrace.UnimplementedTraceServiceServer
	r *GRPCReceiver
}

func (s grpcTraces) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	if err := s.r.accept(req); err != nil {
		return nil, err
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

type grpcMetrics struct {
	collectormetrics.UnimplementedMetricsServiceServer
	r *GRPCReceiver
}

func (s grpcMetrics) Export(_ context.Context, req *collectormetrics.ExportMetricsServiceRequest) (*collectormetrics.ExportMetricsServiceResponse, error) {
	if err := s.r.accept(req); err != nil {
		return nil, err
	}
	return &collectormetrics.ExportMetricsServiceResponse{}, nil
}

type grpcLogs struct {
	collectorlogs.UnimplementedLogsServiceServer
	r *GRPCReceiver
}

func (s grpcLogs) Export(_ context.Context, req *collectorlogs.ExportLogsServiceRequest) (*collectorlogs.ExportLogsServiceResponse, error) {
	if err := s.r.accept(req); err != nil {
		return nil, err
	}
	return &collectorlogs.ExportLogsServiceResponse{}, nil
}
