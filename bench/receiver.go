package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // the Collector's otlp_grpc exporter compresses with gzip by default
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// receiver is a lane's receiving end, as the driver reads it: the distinct
// spans accepted and their IDs, the duplicates, and the export requests
// and bytes that reached it.
type receiver interface {
	Spans() int // distinct spans accepted
	SpanDuplicates() int
	HasSpan(traceID [16]byte, spanID [8]byte) bool
	// WaitSpans returns once n distinct spans were accepted, or with ctx's
	// error.
	WaitSpans(ctx context.Context, n int) error
	// Exports is the number of trace export requests or calls received.
	Exports() int
	// BytesReceived is their size on the wire (compressed, if they were).
	BytesReceived() int64
	Close()
}

// httpReceiver is otlptest's OTLP/HTTP Collector as a receiver.
type httpReceiver struct{ *otlptest.Collector }

func (r httpReceiver) Exports() int { return r.Requests(otlptest.Traces.Path()) }

var _ receiver = httpReceiver{}

// errUnavailable is what grpcReceiver answers while refusing: the gRPC
// counterpart of the 503 scenario's HTTP 503 without Retry-After (no
// RetryInfo).
var errUnavailable = status.Error(codes.Unavailable, "bench: the receiver's backend is down")

// grpcReceiver is the receiving end of the gRPC lanes: a grpc.Server on
// 127.0.0.1 with the OTLP TraceService, counting distinct spans by ID as
// otlptest's Collector does. While refusing (setRefusing) it answers every
// call with errUnavailable and counts nothing of it, as the HTTP lanes'
// receiver sees nothing of the requests the fault proxy answers 503.
type grpcReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	srv  *grpc.Server
	addr string

	refusing atomic.Bool

	mu      sync.Mutex // guards the fields below
	spans   map[otlptest.SpanKey]int
	dups    int
	calls   int
	bytes   int64
	changed chan struct{} // closed and replaced on every accepted call
}

// newGRPCReceiver starts a grpcReceiver on a free port of 127.0.0.1.
func newGRPCReceiver() (*grpcReceiver, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &grpcReceiver{addr: ln.Addr().String(), spans: map[otlptest.SpanKey]int{}, changed: make(chan struct{})}
	// gRPC's default receive limit, 4 MiB, as the Collector's OTLP
	// receiver has it.
	r.srv = grpc.NewServer(grpc.StatsHandler(wireCounter{}))
	collectortrace.RegisterTraceServiceServer(r.srv, r)
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Addr is the receiver's host:port.
func (r *grpcReceiver) Addr() string { return r.addr }

// setRefusing switches answering errUnavailable to every call on or off.
func (r *grpcReceiver) setRefusing(on bool) { r.refusing.Store(on) }

// Export counts the spans of an accepted call.
func (r *grpcReceiver) Export(ctx context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	if r.refusing.Load() {
		return nil, errUnavailable
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if n, ok := ctx.Value(wireKey{}).(*atomic.Int64); ok {
		r.bytes += n.Load()
	}
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				var k otlptest.SpanKey
				if copy(k.TraceID[:], s.GetTraceId()) != len(k.TraceID) || copy(k.SpanID[:], s.GetSpanId()) != len(k.SpanID) {
					continue // not one of benchapp's spans
				}
				if r.spans[k]++; r.spans[k] > 1 {
					r.dups++
				}
			}
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *grpcReceiver) Spans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

func (r *grpcReceiver) SpanDuplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dups
}

func (r *grpcReceiver) HasSpan(traceID [16]byte, spanID [8]byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spans[otlptest.SpanKey{TraceID: traceID, SpanID: spanID}] > 0
}

func (r *grpcReceiver) WaitSpans(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		have, ch := len(r.spans), r.changed
		r.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d spans (have %d): %w", n, have, ctx.Err())
		}
	}
}

// Exports counts the calls accepted; refused ones are not counted.
func (r *grpcReceiver) Exports() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// BytesReceived is the size on the wire of the accepted calls' messages.
func (r *grpcReceiver) BytesReceived() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Close stops the server at once, closing every connection.
func (r *grpcReceiver) Close() { r.srv.Stop() }

var _ receiver = (*grpcReceiver)(nil)

// wireKey keys a call's wire-size counter in its context.
type wireKey struct{}

// wireCounter is a stats.Handler that adds up the wire length of each
// call's incoming messages (compressed, if they were) into a counter in
// the call's context, for Export to add once it accepts the call.
type wireCounter struct{}

func (wireCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, wireKey{}, new(atomic.Int64))
}

func (wireCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		if n, ok := ctx.Value(wireKey{}).(*atomic.Int64); ok {
			n.Add(int64(in.WireLength))
		}
	}
}

func (wireCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (wireCounter) HandleConn(context.Context, stats.ConnStats)                       {}
