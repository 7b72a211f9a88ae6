package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"
	"github.com/otlpretry/otlpretry/spool"
)

// upstream is where one signal's exports go: an OTLP/HTTP endpoint
// (httpUpstream) or an OTLP/gRPC one (grpcUpstream).
type upstream interface {
	// send forwards body, as received with the given media type and
	// Content-Encoding ("" for none); a gRPC upstream takes uncompressed
	// protobuf only (see grpcBody). An error means the export was
	// neither delivered nor stored.
	send(ctx context.Context, mediaType, encoding string, body []byte) (answer, error)
	// grpc tells an upstream that takes protobuf only, uncompressed.
	grpc() bool
}

// answer is the upstream's answer to an export (or the transport's,
// after storing it), which each receiver gives its client in its own
// protocol.
type answer interface {
	// writeHTTP answers an OTLP/HTTP client that sent mediaType.
	writeHTTP(w http.ResponseWriter, mediaType string)
	// grpcReply answers an OTLP/gRPC client: the Export*ServiceResponse,
	// or a status error.
	grpcReply() ([]byte, error)
}

// httpUpstream POSTs exports to an OTLP/HTTP endpoint through the
// transport.
type httpUpstream struct {
	rt     http.RoundTripper
	target string
}

func (u *httpUpstream) grpc() bool { return false }

func (u *httpUpstream) send(ctx context.Context, mediaType, encoding string, body []byte) (answer, error) {
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, u.target, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("upstream request: %w", err)
	}
	out.Header.Set("Content-Type", mediaType)
	if encoding != "" {
		out.Header.Set("Content-Encoding", encoding)
	}
	out.Header.Set("User-Agent", userAgent)
	resp, err := u.rt.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	return httpAnswer{resp}, nil
}

const userAgent = "otlpretry-relay"

// httpAnswer is an OTLP/HTTP upstream's response.
type httpAnswer struct{ resp *http.Response }

func (a httpAnswer) writeHTTP(w http.ResponseWriter, _ string) {
	defer a.resp.Body.Close()
	copyHeader(w.Header(), a.resp.Header)
	w.WriteHeader(a.resp.StatusCode)
	_, _ = io.Copy(w, a.resp.Body)
}

func (a httpAnswer) grpcReply() ([]byte, error) {
	defer a.resp.Body.Close()
	return grpcAnswer(a.resp, time.Now())
}

// grpcUpstream sends exports to an OTLP/gRPC endpoint: the signal's
// Export method, over a connection through the transport's interceptor
// (otlpretrygrpc.DialOption), with the destination's headers as
// metadata.
type grpcUpstream struct {
	signal spool.Signal
	conn   *grpc.ClientConn
	method string
	md     metadata.MD
}

func (u *grpcUpstream) grpc() bool { return true }

func (u *grpcUpstream) send(ctx context.Context, _, _ string, body []byte) (answer, error) {
	if len(u.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, u.md)
	}
	var reply []byte
	// The raw codec carries the bytes when the interceptor lets the call
	// pass (the transport shut down); otherwise the interceptor sends
	// them as they are with a codec of its own.
	err := u.conn.Invoke(ctx, u.method, body, &reply, grpc.ForceCodecV2(rawCodec{}))
	if otlpretrygrpc.Retryable(ctx, err) {
		// The transport stores what it cannot deliver and answers OK: a
		// retryable code means the export was not stored either.
		return nil, err
	}
	return grpcUpstreamAnswer{signal: u.signal, reply: reply, err: err}, nil
}

// grpcUpstreamAnswer is an OTLP/gRPC upstream's answer: its reply, or its
// refusal, a status that is not retried.
type grpcUpstreamAnswer struct {
	signal spool.Signal
	reply  []byte
	err    error
}

// grpcReply gives the upstream's answer as it came: its
// Export*ServiceResponse (partial_success included), or its status.
func (a grpcUpstreamAnswer) grpcReply() ([]byte, error) {
	if a.err != nil {
		return nil, a.err
	}
	if !wellFormed(a.reply) {
		return nil, nil
	}
	return a.reply, nil
}

// writeHTTP answers as an OTLP/HTTP receiver would have: 200 with the
// Export*ServiceResponse in the client's media type, or a refusal's
// status (httpStatus) with a google.rpc.Status body holding the
// upstream's message.
func (a grpcUpstreamAnswer) writeHTTP(w http.ResponseWriter, mediaType string) {
	w.Header().Set("Content-Type", mediaType)
	if a.err == nil {
		reply := a.reply
		if !wellFormed(reply) {
			reply = nil
		}
		if mediaType == "application/json" {
			reply = responseJSON(a.signal, reply)
		}
		_, _ = w.Write(reply)
		return
	}
	st := status.Convert(a.err)
	body := &spb.Status{Code: int32(st.Code()), Message: "upstream answered " + st.Code().String() + ": " + st.Message()}
	var (
		b   []byte
		err error
	)
	if mediaType == "application/json" {
		b, err = protojson.Marshal(body)
	} else {
		b, err = proto.Marshal(body)
	}
	if err != nil {
		b = nil
	}
	w.WriteHeader(httpStatus(st.Code()))
	_, _ = w.Write(b)
}

// httpStatus maps a gRPC refusal (a code the transport does not retry) to
// the HTTP status an OTLP/HTTP client takes it as, as the OTel Collector's
// OTLP receiver maps them: InvalidArgument 400, Unauthenticated 401,
// PermissionDenied 403, Unimplemented and NotFound 404, any other 500;
// ResourceExhausted without RetryInfo, which the OTLP specification says
// not to retry, is 413, as for a message over the size cap.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unimplemented, codes.NotFound:
		return http.StatusNotFound
	case codes.ResourceExhausted:
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusInternalServerError
}

// dialGRPC returns one connection to each OTLP/gRPC destination's target
// and security (signals sent to the same one share it), and each such
// signal's upstream. The connections go through the transport's
// interceptor, so exports are retried, held, stored and delivered in the
// background as OTLP/HTTP ones are.
func dialGRPC(dests []otlpenv.Destination, t *otlpretry.Transport, tlsConfig *tls.Config) (map[spool.Signal]*grpcUpstream, []*grpc.ClientConn, error) {
	type key struct {
		target string
		secure bool
	}
	conns := map[key]*grpc.ClientConn{}
	var all []*grpc.ClientConn
	ups := map[spool.Signal]*grpcUpstream{}
	for _, d := range dests {
		if d.Protocol != otlpenv.ProtocolGRPC {
			continue
		}
		target, secure := d.GRPCTarget()
		k := key{target, secure}
		cc := conns[k]
		if cc == nil {
			var creds credentials.TransportCredentials = insecure.NewCredentials()
			if secure {
				cfg := tlsConfig.Clone()
				if cfg == nil {
					cfg = &tls.Config{MinVersion: tls.VersionTLS12}
				}
				creds = credentials.NewTLS(cfg)
			}
			var err error
			cc, err = grpc.NewClient(target, grpc.WithTransportCredentials(creds), grpc.WithUserAgent(userAgent),
				grpc.WithConnectParams(connectParams), otlpretrygrpc.DialOption(t))
			if err != nil {
				for _, c := range all {
					_ = c.Close()
				}
				return nil, nil, fmt.Errorf("relay: OTLP/gRPC connection to %s: %w", target, err)
			}
			conns[k] = cc
			all = append(all, cc)
		}
		ups[d.Signal] = &grpcUpstream{signal: d.Signal, conn: cc, method: otlpenv.GRPCMethod(d.Signal), md: headerMetadata(d.Header)}
	}
	return ups, all, nil
}

// connectParams caps the wait between two attempts to reconnect to a gRPC
// upstream at maxReconnectDelay, where gRPC's default grows to two
// minutes: the transport probes a failing destination and sends its
// backlog as soon as it answers, which a connection still waiting to
// reconnect would hold back.
var connectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxReconnectDelay},
	MinConnectTimeout: 20 * time.Second,
}

const maxReconnectDelay = 5 * time.Second

// headerMetadata turns configured headers into gRPC metadata (keys lower
// case, as gRPC requires).
func headerMetadata(h http.Header) metadata.MD {
	if len(h) == 0 {
		return nil
	}
	md := make(metadata.MD, len(h))
	for k, v := range h {
		md[strings.ToLower(k)] = append([]string(nil), v...)
	}
	return md
}

// grpcBody is what an OTLP/HTTP body becomes for a gRPC upstream, which
// takes the protobuf encoding only, uncompressed: inflated within limit,
// then checked (protobuf) or converted once (JSON). It returns a
// *BodyError or ErrInflatedTooLarge for a body that cannot be sent.
func grpcBody(signal spool.Signal, mediaType, encoding string, body []byte, limit int64) ([]byte, error) {
	plain, release, err := decodeBody(encoding, body, limit)
	if err != nil {
		return nil, err
	}
	defer release()
	if mediaType == "application/json" {
		if err := checkJSON(plain); err != nil {
			return nil, err
		}
		return jsonToProtobuf(signal, plain)
	}
	if err := checkProtobuf(signal, plain); err != nil {
		return nil, err
	}
	if encoding == "" || encoding == "identity" {
		return plain, nil
	}
	// plain is a pooled buffer, released on return.
	return bytes.Clone(plain), nil
}
