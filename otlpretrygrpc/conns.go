package otlpretrygrpc

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/otlpretry/otlpretry/internal/bridge"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/otlpretrygrpc/internal/grpcretry"
)

// ownCallKey marks the context of the Transport's own calls (background
// delivery and probes), which go over the exporters' connections and so
// through the interceptor, which lets them pass.
type ownCallKey struct{}

// conns keeps, in memory only, what background delivery needs to send a
// gRPC destination's stored exports, and sends them (bridge.Sender): the
// live connection the latest call to it used, that call's metadata and
// call options, and connections of its own for destinations configured
// with WithEndpointHeaders and no live connection. Connections are keyed
// by host and method: a connection's security is learned from its first
// answer, so exports stored before it may name the other scheme. One
// Transport has one conns, shared by every interceptor made for it.
type conns struct {
	core bridge.Core // for the configured headers

	mu      sync.Mutex // guards every field below
	conns   map[*grpc.ClientConn]*connInfo
	live    map[key]liveCall
	dialled map[key]*grpc.ClientConn
	closed  bool
}

var _ bridge.Sender = (*conns)(nil)

type key struct{ host, method string }

func keyOf(d bridge.Target) key { return key{d.Host, d.Path} }

// connInfo is what is known of one live connection.
type connInfo struct {
	host   string
	scheme string // "grpc" until an answer shows TLS
	known  bool   // the scheme was learned from an answer
}

type liveCall struct {
	cc   *grpc.ClientConn
	md   metadata.MD
	opts []grpc.CallOption
	live bool // the connection and metadata are a live call's, not configured
}

func newConns(core bridge.Core) *conns {
	return &conns{
		core:    core,
		conns:   map[*grpc.ClientConn]*connInfo{},
		live:    map[key]liveCall{},
		dialled: map[key]*grpc.ClientConn{},
	}
}

// observe records a live call and returns its destination.
func (g *conns) observe(ctx context.Context, cc *grpc.ClientConn, method string, opts []grpc.CallOption) bridge.Target {
	md, _ := metadata.FromOutgoingContext(ctx)
	kept := keptOptions(opts)
	g.mu.Lock()
	defer g.mu.Unlock()
	info := g.conns[cc]
	if info == nil {
		info = &connInfo{host: targetHost(cc), scheme: "grpc"}
		g.conns[cc] = info
	}
	dest := bridge.Target{Scheme: info.scheme, Host: info.host, Path: method}
	g.live[keyOf(dest)] = liveCall{cc: cc, md: md, opts: kept, live: true}
	return dest
}

// unknown tells whether cc's security is still to be learned.
func (g *conns) unknown(cc *grpc.ClientConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	info := g.conns[cc]
	return info != nil && !info.known
}

// learn notes cc's security from the peer of an answer: grpcs unless its
// credentials are insecure ones.
func (g *conns) learn(cc *grpc.ClientConn, auth credentials.AuthInfo) {
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

// Live tells whether d has a live call's connection and metadata to send
// with: its connection, or one of the Transport's own once that is shut
// down (see liveLocked).
func (g *conns) Live(d bridge.Target) bool {
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
func (g *conns) liveLocked(k key) (liveCall, bool) {
	l, ok := g.live[k]
	if !ok {
		return liveCall{}, false
	}
	if l.cc.GetState() != connectivity.Shutdown {
		return l, true
	}
	info := g.conns[l.cc]
	if info == nil || !info.known || g.closed {
		delete(g.live, k)
		return liveCall{}, false
	}
	cc, err := g.dialLocked(k, info.scheme)
	if err != nil {
		return liveCall{}, false
	}
	l.cc = cc
	return l, true
}

// dialLocked returns the Transport's own connection to k, made with the
// security scheme names (grpcs: TLS with the system's roots).
func (g *conns) dialLocked(k key, scheme string) (*grpc.ClientConn, error) {
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
func (g *conns) lookup(d bridge.Target) (liveCall, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := keyOf(d)
	if l, ok := g.liveLocked(k); ok {
		return l, true
	}
	h, ok := g.core.Headers(d)
	if !ok || g.closed {
		return liveCall{}, false
	}
	cc, err := g.dialLocked(k, d.Scheme)
	if err != nil {
		return liveCall{}, false
	}
	return liveCall{cc: cc, md: headerMetadata(h)}, true
}

// Send sends body as stored to d's method on the connection lookup gives,
// with its metadata, bounded by timeout, and evaluates the answer. A
// merged request (stored requests concatenated) is one valid
// Export*ServiceRequest: it goes as one call. Invoke has read the body
// when Send returns.
func (g *conns) Send(ctx context.Context, d bridge.Target, body []byte, timeout time.Duration) (bridge.Sent, bool) {
	call, ok := g.lookup(d)
	if !ok {
		return bridge.Sent{}, false
	}
	if call.cc.GetState() == connectivity.TransientFailure {
		// A connection waiting out gRPC's reconnect backoff, which grows
		// to two minutes, fails every call at once without trying; the
		// Transport's probes and backoff decide when a failing
		// destination is tried again, so a send reconnects now.
		call.cc.ResetConnectBackoff()
	}
	a, cancel := context.WithTimeout(context.WithValue(ctx, ownCallKey{}, true), timeout)
	defer cancel()
	if len(call.md) > 0 {
		a = metadata.NewOutgoingContext(a, call.md)
	}
	var reply []byte
	opts := append(call.opts[:len(call.opts):len(call.opts)], grpc.ForceCodec(rawCodec{}))
	err := call.cc.Invoke(a, d.Path, body, &reply, opts...)
	out, wait := grpcretry.Evaluate(ctx, err)
	s := bridge.Sent{Outcome: out, Wait: wait, Cause: grpcretry.Cause(err),
		WantsCredentials: grpcretry.WantsCredentials(err), Live: call.live}
	if out == retry.Delivered {
		s.Reply = reply
	}
	return s, true
}

// Close closes the connections of its own; the live ones are the
// exporters'.
func (g *conns) Close() {
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
