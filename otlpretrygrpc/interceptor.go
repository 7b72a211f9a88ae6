package otlpretrygrpc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/bridge"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/otlpretrygrpc/internal/grpcretry"
	"github.com/otlpretry/otlpretry/spool"
)

// The OTLP/gRPC Export methods, the only calls the interceptor acts on.
const (
	tracesMethod  = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	metricsMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
	logsMethod    = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
)

// signalOf tells the signal of an OTLP Export method; false for any other
// method.
func signalOf(method string) (spool.Signal, bool) {
	switch method {
	case tracesMethod:
		return spool.SignalTraces, true
	case metricsMethod:
		return spool.SignalMetrics, true
	case logsMethod:
		return spool.SignalLogs, true
	}
	return spool.SignalUnknown, false
}

// Every Transport of a program that links this package gets its sender
// of stored exports to gRPC destinations in otlpretry.New.
func init() {
	bridge.NewSender = func(core bridge.Core) bridge.Sender { return newConns(core) }
}

// DialOption returns the option that puts t under an OTLP/gRPC exporter:
// pass it to otlptracegrpc.WithDialOption, otlpmetricgrpc.WithDialOption
// or otlploggrpc.WithDialOption. The exports of the connection then take
// the path described in the otlpretry package documentation, as over
// HTTP; calls other than the three OTLP Export methods pass through
// untouched. One Transport serves any number of connections.
func DialOption(t *otlpretry.Transport) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(UnaryClientInterceptor(t))
}

// UnaryClientInterceptor returns the interceptor DialOption installs, for
// a caller that assembles its connection's interceptors itself.
//
// An export call is answered with success and an empty reply once its
// export is stored (the reply's partial_success is then unset); a
// definite refusal (a non-retryable code) and a partial success go back
// to the caller as the server gave them. The call's metadata is kept in
// memory only, as the latest live call's metadata of its destination.
// With otlpretry.WithCallerRetry, an export the spool cannot take is
// answered Unavailable.
//
// The request may also be given as []byte, a serialized
// Export*ServiceRequest, with a *[]byte reply, as a relay forwards what it
// received without decoding it: the interceptor then sends the bytes as
// they are, with a codec that passes them through, whatever codec the
// call names.
func UnaryClientInterceptor(t *otlpretry.Transport) grpc.UnaryClientInterceptor {
	core := bridge.Of(t)
	conns := core.Sender(func() bridge.Sender { return newConns(core) }).(*conns)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		sig, ok := signalOf(method)
		if !ok || core.Closed() || ctx.Value(ownCallKey{}) != nil {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		c := &call{conns: conns, method: method, signal: sig, cc: cc, invoker: invoker, opts: opts, own: newReply(reply)}
		switch m := req.(type) {
		case proto.Message:
			c.msg = m
		case []byte:
			if m == nil {
				m = []byte{}
			}
			c.data = m
		default:
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		c.dest = conns.observe(ctx, cc, method, opts)
		e := core.Export(ctx, c.dest, sig, c)
		switch {
		case e.Stored:
			return nil
		case e.Err != nil:
			return e.Err
		}
		if e.Result.Outcome == retry.Delivered {
			giveReply(reply, c.own)
		}
		return e.Result.Err
	}
}

// Retryable tells whether err, an OTLP Export call's error, is one the
// OTLP specification has a client retry (see the otlpretry package
// documentation). Through UnaryClientInterceptor, such an error means
// that the export was neither delivered nor stored (the Transport is shut
// down); a caller's own ended context (ctx) is not retryable.
func Retryable(ctx context.Context, err error) bool {
	out, _ := grpcretry.Evaluate(ctx, err)
	return out.Retryable()
}

// call is one OTLP/gRPC export on its way through the Transport's flow
// (bridge.Export).
type call struct {
	conns   *conns
	method  string
	signal  spool.Signal
	dest    bridge.Target
	msg     proto.Message // nil when the request came serialized (data)
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	opts    []grpc.CallOption
	// own is the attempts' reply, given to the caller's once it is
	// answered with a delivery: attempts may outlive the caller's call.
	own any

	mu   sync.Mutex // guards data
	data []byte     // the serialized export once stored: later attempts send it
}

var _ bridge.Export = (*call)(nil)

// Attempt makes one call, bounded by timeout, and evaluates its status
// (grpcretry.Evaluate). Once the export is stored it sends the stored
// bytes rather than the caller's message, which the caller owns again.
func (c *call) Attempt(ctx context.Context, timeout time.Duration) bridge.Result {
	err := c.invoke(ctx, timeout)
	out, wait := grpcretry.Evaluate(ctx, err)
	r := bridge.Result{Outcome: out, Wait: wait, Err: err}
	if out != retry.Delivered {
		r.Cause = grpcretry.Cause(err)
	}
	return r
}

func (c *call) invoke(ctx context.Context, timeout time.Duration) error {
	a, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.mu.Lock()
	data := c.data
	c.mu.Unlock()
	opts := c.opts
	var p *peer.Peer
	if c.conns.unknown(c.cc) {
		p = &peer.Peer{}
		opts = append(opts[:len(opts):len(opts)], grpc.Peer(p))
	}
	var err error
	if data != nil {
		err = c.invoker(a, c.method, data, c.own, c.cc, append(opts[:len(opts):len(opts)], grpc.ForceCodec(rawCodec{}))...)
	} else {
		err = c.invoker(a, c.method, c.msg, c.own, c.cc, opts...)
	}
	if p != nil {
		c.conns.learn(c.cc, p.AuthInfo)
	}
	return err
}

// Bytes serializes the export, once: the same bytes as an OTLP/HTTP
// protobuf body.
func (c *call) Bytes() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data != nil {
		if len(c.data) > spool.MaxBodySize {
			return nil, fmt.Errorf("%w: export of %d bytes", spool.ErrTooLarge, len(c.data))
		}
		return c.data, nil
	}
	if size := proto.Size(c.msg); size > spool.MaxBodySize {
		return nil, fmt.Errorf("%w: export of %d bytes", spool.ErrTooLarge, size)
	}
	data, err := proto.Marshal(c.msg)
	if err != nil {
		return nil, fmt.Errorf("otlpretry: serialize export: %w", err)
	}
	if data == nil {
		data = []byte{}
	}
	c.data = data
	return data, nil
}

// Record describes the export for the spool: no metadata, and the
// uncompressed message, so that it can be sent over gRPC or as an
// OTLP/HTTP protobuf body alike.
func (c *call) Record(data []byte) *spool.Record {
	return &spool.Record{
		URL:         c.dest.String(),
		ContentType: "application/x-protobuf",
		Signal:      c.signal,
		Body:        data,
	}
}

// CallerRetryError is Unavailable, the code the OTel exporters retry.
func (c *call) CallerRetryError(err error) error {
	return status.Error(codes.Unavailable, err.Error())
}

// newReply returns an empty reply of reply's type (a protobuf message or
// *[]byte), or reply itself for any other type.
func newReply(reply any) any {
	switch m := reply.(type) {
	case proto.Message:
		return m.ProtoReflect().New().Interface()
	case *[]byte:
		return new([]byte)
	}
	return reply
}

// giveReply gives the caller's reply what the attempts received in own:
// the server's reply, with its partial success.
func giveReply(reply, own any) {
	if reply == own {
		return
	}
	switch dst := reply.(type) {
	case proto.Message:
		proto.Merge(dst, own.(proto.Message))
	case *[]byte:
		*dst = *own.(*[]byte)
	}
}
