package otlpretry

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry/spool"
)

// The OTLP/gRPC Export methods, the only calls the interceptor acts on.
const (
	grpcTracesMethod  = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	grpcMetricsMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
	grpcLogsMethod    = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
)

// grpcSignal tells the signal of an OTLP Export method; false for any other
// method.
func grpcSignal(method string) (spool.Signal, bool) {
	switch method {
	case grpcTracesMethod:
		return spool.SignalTraces, true
	case grpcMetricsMethod:
		return spool.SignalMetrics, true
	case grpcLogsMethod:
		return spool.SignalLogs, true
	}
	return spool.SignalUnknown, false
}

// DialOption returns the option that puts the Transport under an OTLP/gRPC
// exporter: pass it to otlptracegrpc.WithDialOption,
// otlpmetricgrpc.WithDialOption or otlploggrpc.WithDialOption. The exports
// of the connection then take the path described in the package
// documentation, as over HTTP; calls other than the three OTLP Export
// methods pass through untouched.
func (t *Transport) DialOption() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(t.UnaryClientInterceptor)
}

// UnaryClientInterceptor is the interceptor DialOption installs, for a
// caller that assembles its connection's interceptors itself.
//
// An export call is answered with success and an empty reply once its
// export is stored (the reply's partial_success is then unset); a
// definite refusal (a non-retryable code) and a partial success go back
// to the caller as the server gave them. The call's metadata is kept in
// memory only, as the latest live call's metadata of its destination.
//
// The request may also be given as []byte, a serialized
// Export*ServiceRequest, with a *[]byte reply, as a relay forwards what it
// received without decoding it: the interceptor then sends the bytes as
// they are, with a codec that passes them through, whatever codec the
// call names.
func (t *Transport) UnaryClientInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	signal, ok := grpcSignal(method)
	if !ok || t.closed.Load() || ctx.Value(ownCallKey{}) != nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c := &grpcCall{t: t, ctx: ctx, method: method, signal: signal, cc: cc, invoker: invoker, opts: opts}
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
	c.dest = t.endpoints.grpc.observe(ctx, cc, method, opts)
	t.delivery.liveSeen(c.dest)
	return c.run(reply)
}

// isGRPC tells a destination reached over gRPC.
func (d destination) isGRPC() bool { return d.scheme == "grpc" || d.scheme == "grpcs" }

// ownCallKey marks the context of the Transport's own calls (background
// delivery and probes), which go over the exporters' connections and so
// through the interceptor, which lets them pass.
type ownCallKey struct{}

// grpcConns keeps, in memory only, what background delivery needs to send
// a gRPC destination's stored exports: the live connection the latest call
// to it used, that call's metadata and call options, and connections of
// its own for destinations configured with WithEndpointHeaders and no live
// connection. Connections are keyed by host and method: a connection's
// security is learned from its first answer, so exports stored before it
// may name the other scheme.
type grpcConns struct {
	mu      sync.Mutex // guards every field
	conns   map[*grpc.ClientConn]*grpcConnInfo
	live    map[grpcKey]grpcLiveCall
	dialled map[grpcKey]*grpc.ClientConn
	closed  bool
}

type grpcKey struct{ host, method string }

func keyOf(d destination) grpcKey { return grpcKey{d.host, d.path} }

// grpcConnInfo is what is known of one live connection.
type grpcConnInfo struct {
	host   string
	scheme string // "grpc" until an answer shows TLS
	known  bool   // the scheme was learned from an answer
}

type grpcLiveCall struct {
	cc   *grpc.ClientConn
	md   metadata.MD
	opts []grpc.CallOption
	live bool // the connection and metadata are a live call's, not configured
}

func newGRPCConns() *grpcConns {
	return &grpcConns{
		conns:   map[*grpc.ClientConn]*grpcConnInfo{},
		live:    map[grpcKey]grpcLiveCall{},
		dialled: map[grpcKey]*grpc.ClientConn{},
	}
}

// observe records a live call and returns its destination.
func (g *grpcConns) observe(ctx context.Context, cc *grpc.ClientConn, method string, opts []grpc.CallOption) destination {
	md, _ := metadata.FromOutgoingContext(ctx)
	kept := keptOptions(opts)
	g.mu.Lock()
	defer g.mu.Unlock()
	info := g.conns[cc]
	if info == nil {
		info = &grpcConnInfo{host: targetHost(cc), scheme: "grpc"}
		g.conns[cc] = info
	}
	dest := destination{scheme: info.scheme, host: info.host, path: method}
	g.live[keyOf(dest)] = grpcLiveCall{cc: cc, md: md, opts: kept, live: true}
	return dest
}

// unknown tells whether cc's security is still to be learned.
func (g *grpcConns) unknown(cc *grpc.ClientConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	info := g.conns[cc]
	return info != nil && !info.known
}

// learn notes cc's security from the peer of an answer: grpcs unless its
// credentials are insecure ones.
func (g *grpcConns) learn(cc *grpc.ClientConn, auth credentials.AuthInfo) {
	if auth == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if info := g.conns[cc]; info != nil && !info.known {
		info.known = true
		if auth.AuthType() != "insecure" {
			info.scheme = "grpcs"
		}
	}
}

// has tells whether d has a live call's connection and metadata to send
// with: its connection, or one of the Transport's own once that is shut
// down (see liveLocked).
func (g *grpcConns) has(d destination) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.liveLocked(keyOf(d))
	return ok
}

// liveLocked returns the latest live call to k, on its own connection
// while that is open. Once the exporter has closed it (an application
// shutting its provider down before the Transport), the call's metadata
// and call options are sent over a connection of the Transport's own, of
// the same security, so that what it stored is not stranded; only when
// its security was learned from an answer, so that metadata never goes in
// clear text to a destination that may want TLS.
func (g *grpcConns) liveLocked(k grpcKey) (grpcLiveCall, bool) {
	l, ok := g.live[k]
	if !ok {
		return grpcLiveCall{}, false
	}
	if l.cc.GetState() != connectivity.Shutdown {
		return l, true
	}
	info := g.conns[l.cc]
	if info == nil || !info.known || g.closed {
		delete(g.live, k)
		return grpcLiveCall{}, false
	}
	cc, err := g.dialLocked(k, info.scheme)
	if err != nil {
		return grpcLiveCall{}, false
	}
	l.cc = cc
	return l, true
}

// dialLocked returns the Transport's own connection to k, made with the
// security scheme names (grpcs: TLS with the system's roots).
func (g *grpcConns) dialLocked(k grpcKey, scheme string) (*grpc.ClientConn, error) {
	if cc := g.dialled[k]; cc != nil {
		return cc, nil
	}
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if scheme == "grpcs" {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	cc, err := grpc.NewClient(k.host, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	g.dialled[k] = cc
	return cc, nil
}

// lookup returns the connection and metadata to send d's stored exports
// with: the latest live call's, else a connection of its own with the
// metadata configured for d (headers, given WithEndpointHeaders for
// d's grpc:// or grpcs:// URL), else false.
func (g *grpcConns) lookup(d destination, cfg *config) (grpcLiveCall, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := keyOf(d)
	if l, ok := g.liveLocked(k); ok {
		return l, true
	}
	h, ok := cfg.headersFor(&url.URL{Scheme: d.scheme, Host: d.host, Path: d.path})
	if !ok || g.closed {
		return grpcLiveCall{}, false
	}
	cc, err := g.dialLocked(k, d.scheme)
	if err != nil {
		return grpcLiveCall{}, false
	}
	return grpcLiveCall{cc: cc, md: headerMetadata(h)}, true
}

// close closes the connections of its own; the live ones are the
// exporters'.
func (g *grpcConns) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for k, cc := range g.dialled {
		_ = cc.Close()
		delete(g.dialled, k)
	}
}

// keptOptions are the call options of a live call that a stored export is
// sent with too: its compressor and per-call credentials.
func keptOptions(opts []grpc.CallOption) []grpc.CallOption {
	var kept []grpc.CallOption
	for _, o := range opts {
		switch o.(type) {
		case grpc.CompressorCallOption, grpc.PerRPCCredsCallOption:
			kept = append(kept, o)
		}
	}
	return kept
}

// headerMetadata turns configured headers into gRPC metadata.
func headerMetadata(h http.Header) metadata.MD {
	md := metadata.MD{}
	for k, v := range h {
		md[strings.ToLower(k)] = append([]string(nil), v...)
	}
	return md
}

// targetHost is the host and port a connection's target names: the
// endpoint of "dns:///host:port", "passthrough:///host:port" or a bare
// "host:port", lower-cased.
func targetHost(cc *grpc.ClientConn) string {
	target := cc.CanonicalTarget()
	u, err := url.Parse(target)
	if err != nil {
		return strings.ToLower(target)
	}
	host := strings.TrimPrefix(u.Path, "/")
	if host == "" {
		host = u.Opaque
	}
	if host == "" {
		host = u.Host
	}
	return strings.ToLower(host)
}
