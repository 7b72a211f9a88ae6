package relay

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // clients' gzip-compressed exports
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// grpcServices are the OTLP/gRPC collector services, each with its one
// method, Export.
var grpcServices = []struct {
	name, file string
	signal     spool.Signal
}{
	{"opentelemetry.proto.collector.trace.v1.TraceService", "opentelemetry/proto/collector/trace/v1/trace_service.proto", spool.SignalTraces},
	{"opentelemetry.proto.collector.metrics.v1.MetricsService", "opentelemetry/proto/collector/metrics/v1/metrics_service.proto", spool.SignalMetrics},
	{"opentelemetry.proto.collector.logs.v1.LogsService", "opentelemetry/proto/collector/logs/v1/logs_service.proto", spool.SignalLogs},
}

// NewGRPCServer returns a *grpc.Server with the three OTLP/gRPC collector
// services (TraceService, MetricsService and LogsService, method Export),
// answering as the OTLP specification says:
//
//   - forwarded or stored: OK with the upstream's Export*ServiceResponse
//     (its partial_success included), or an empty one when stored;
//   - neither: Unavailable with a google.rpc.RetryInfo of RetryAfter;
//   - a message that is not a well-formed export of its signal:
//     InvalidArgument with the reason, nothing stored;
//   - larger than MaxBodyBytes, before or after decompression:
//     ResourceExhausted without RetryInfo, so not retried;
//   - no or a wrong bearer token in the "authorization" metadata, when one
//     is configured: Unauthenticated;
//   - a signal without a destination: Unimplemented;
//   - the upstream's refusal: see grpcStatus.
//
// To an OTLP/HTTP upstream each message is forwarded as it came, never
// decoded and re-encoded: its bytes are POSTed as application/x-protobuf
// to the signal's destination through the same transport, so stored,
// delivered and counted as HTTP exports are. To an OTLP/gRPC upstream it
// goes, as it came, as the same Export call (see Config.Destinations).
// A gzip-compressed message is inflated by gRPC, within the size cap, and
// forwarded uncompressed. Metadata other than the token is not forwarded.
func (r *Relay) NewGRPCServer() *grpc.Server {
	s := grpc.NewServer(
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(int(min(r.cfg.MaxBodyBytes, int64(maxInt)))),
	)
	for _, svc := range grpcServices {
		sig := svc.signal
		s.RegisterService(&grpc.ServiceDesc{
			ServiceName: svc.name,
			// Any handler will do: the methods below are closures.
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{
				MethodName: "Export",
				Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
					resp, err := r.exportGRPC(ctx, sig, dec)
					r.grpcRequests.inc(sig, status.Code(err).String())
					return resp, err
				},
			}},
			Metadata: svc.file,
		}, r)
	}
	return s
}

const maxInt = int(^uint(0) >> 1)

// exportGRPC answers one Export call; dec reads its message.
func (r *Relay) exportGRPC(ctx context.Context, signal spool.Signal, dec func(any) error) ([]byte, error) {
	if r.cfg.AuthToken != "" {
		md, _ := metadata.FromIncomingContext(ctx)
		v := md.Get("authorization")
		if len(v) != 1 || !r.authorizedValue(v[0]) {
			return nil, status.Error(codes.Unauthenticated, "missing or wrong bearer token in the authorization metadata")
		}
	}
	var body []byte
	if err := dec(&body); err != nil {
		// gRPC's own status: ResourceExhausted over the size cap,
		// Internal for a message it could not inflate.
		return nil, err
	}
	up := r.upstreams[signal]
	if up == nil {
		return nil, status.Error(codes.Unimplemented, r.noDestination(signal))
	}
	if len(body) == 0 {
		// An export with no data: nothing to deliver or to keep.
		return nil, nil
	}
	if err := checkProtobuf(signal, body); err != nil {
		if n, ok := r.badBody.allow(); ok {
			r.cfg.Logger.Warn("otlpretry relay: refused a body that is not a well-formed export (InvalidArgument); nothing stored",
				"signal", signal.String(), "protocol", "grpc", "reason", err.Error(), "refused_since_last_line", n)
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ans, err := r.forward(ctx, signal, "application/x-protobuf", "", body)
	if err != nil {
		return nil, retryStatus(codes.Unavailable, errNotTaken, RetryAfter)
	}
	return ans.grpcReply()
}

// maxAnswerBytes bounds what is read of the upstream's answer.
const maxAnswerBytes = 1 << 20

// grpcAnswer turns the upstream's answer (or the transport's, after
// storing) into the answer of an Export call.
//
// A 2xx answer's protobuf body is an Export*ServiceResponse, returned as
// it came (partial_success included); any other body, such as the empty
// one of a stored export, makes an empty response.
//
// A refusal is mapped to a gRPC code as the OTel Collector maps HTTP to
// gRPC (gRPC's HTTP-to-gRPC table, with 400 as InvalidArgument and 429 as
// ResourceExhausted), with 413 as ResourceExhausted as gRPC answers an
// oversized message: 400 InvalidArgument, 401 Unauthenticated, 403
// PermissionDenied, 404 Unimplemented, 413 ResourceExhausted; any other
// definite refusal Unknown. What the library retries (408, 429, 5xx:
// retry.Evaluate) is ResourceExhausted for 429 and Unavailable otherwise,
// both with a RetryInfo of the upstream's Retry-After (RetryAfter when it
// gave none), which makes OTLP clients retry them. The message is the
// upstream's: the google.rpc.Status of an OTLP/HTTP refusal, else the
// start of its body.
func grpcAnswer(resp *http.Response, now time.Time) ([]byte, error) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	outcome, wait := retry.Evaluate(context.Background(), resp, nil, func() time.Time { return now })
	if outcome == retry.Delivered {
		if mt == "application/x-protobuf" && wellFormed(body) {
			return body, nil
		}
		return nil, nil
	}
	msg := "upstream answered " + strconv.Itoa(resp.StatusCode)
	if m := refusalMessage(mt, body); m != "" {
		msg += ": " + m
	}
	if outcome.Retryable() {
		if wait <= 0 {
			wait = RetryAfter
		}
		c := codes.Unavailable
		if resp.StatusCode == http.StatusTooManyRequests {
			c = codes.ResourceExhausted
		}
		return nil, retryStatus(c, msg, wait)
	}
	c := codes.Unknown
	switch resp.StatusCode {
	case http.StatusBadRequest:
		c = codes.InvalidArgument
	case http.StatusUnauthorized:
		c = codes.Unauthenticated
	case http.StatusForbidden:
		c = codes.PermissionDenied
	case http.StatusNotFound:
		c = codes.Unimplemented
	case http.StatusRequestEntityTooLarge:
		c = codes.ResourceExhausted
	}
	return nil, status.Error(c, msg)
}

// refusalMessage is what a refusal's body says: the message of the
// google.rpc.Status an OTLP/HTTP server sends, or the first line of a
// text body, at most maxRefusalMessage bytes.
func refusalMessage(mediaType string, body []byte) string {
	const maxRefusalMessage = 512
	var m string
	switch mediaType {
	case "application/x-protobuf":
		var st spb.Status
		if proto.Unmarshal(body, &st) == nil {
			m = st.GetMessage()
		}
	case "application/json":
		// An OTLP/HTTP JSON refusal is a Status too; shown as it is.
		m = string(body)
	default:
		if strings.HasPrefix(mediaType, "text/") {
			m, _, _ = strings.Cut(string(body), "\n")
		}
	}
	m = strings.ToValidUTF8(strings.TrimSpace(m), "?")
	if len(m) > maxRefusalMessage {
		m = strings.ToValidUTF8(m[:maxRefusalMessage], "") + "..."
	}
	return m
}

// retryStatus is a status error with a google.rpc.RetryInfo detail, the
// OTLP specification's way to tell a client when to retry.
func retryStatus(c codes.Code, msg string, wait time.Duration) error {
	st, err := status.New(c, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
	if err != nil {
		return status.Error(c, msg)
	}
	return st.Err()
}

// wellFormed reports whether b is a sequence of well-formed protobuf
// fields, which any message type decodes (unknown fields are kept aside).
func wellFormed(b []byte) bool {
	for len(b) > 0 {
		_, _, n := protowire.ConsumeField(b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// rawCodec passes messages through as bytes: a request is read into a
// *[]byte, a response written from a []byte, so an export is never decoded
// and re-encoded. Registered with grpc.ForceServerCodecV2, it serves every
// content subtype; it is named proto since that is what the bytes are.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch b := v.(type) {
	case []byte:
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	case nil:
		return nil, nil
	}
	return nil, errRawCodec
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return errRawCodec
	}
	// Materialize copies: gRPC frees data once this returns.
	*p = data.Materialize()
	return nil
}

var errRawCodec = errors.New("relay: the raw codec carries []byte only")
