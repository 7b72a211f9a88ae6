package otlptest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// RawCodec is a gRPC codec that passes messages as bytes: a []byte (or
// *[]byte) is the serialized message, sent and received without decoding.
// It names itself "proto", so a peer sees the usual content-subtype. Give
// it to a server with grpc.ForceServerCodec and to a call with
// grpc.ForceCodec.
type RawCodec struct{}

// Marshal returns the bytes of a []byte or *[]byte.
func (RawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("otlptest: raw codec cannot marshal %T", v)
}

// Unmarshal copies data into a *[]byte.
func (RawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("otlptest: raw codec cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

// Name is "proto", the content-subtype of OTLP/gRPC.
func (RawCodec) Name() string { return "proto" }

// GRPCAnswer is how a GRPCFront answers calls: codes.OK (the zero value,
// GRPCForward) forwards them upstream; any other code is answered by the
// front itself, with RetryInfo carrying RetryDelay when RetryInfo is set.
type GRPCAnswer struct {
	Code       codes.Code
	RetryInfo  bool
	RetryDelay time.Duration
}

// GRPCForward is the answer that forwards every call upstream.
var GRPCForward = GRPCAnswer{}

func (a GRPCAnswer) String() string {
	if a.Code == codes.OK {
		return "forward"
	}
	if a.RetryInfo {
		return fmt.Sprintf("%v with RetryInfo %v", a.Code, a.RetryDelay)
	}
	return a.Code.String()
}

// GRPCFront is an OTLP/gRPC front on 127.0.0.1: a real grpc.Server that
// forwards every unary call as the bytes it received (no decoding) to an
// upstream gRPC server, with the call's metadata, or answers it itself
// with a status, as a gateway whose backend is overloaded or gone does.
// It serves TLS when given server credentials. A front that requires a
// metadata value answers Unauthenticated to every call without it and
// counts those calls.
type GRPCFront struct {
	addr string
	srv  *grpc.Server
	up   *grpc.ClientConn

	mu        sync.Mutex // guards the fields below
	answer    GRPCAnswer
	reqKey    string // metadata key every call must carry with reqValue; "" for none
	reqValue  string
	forwarded int
	answered  int
	bad       int
}

// StartGRPCFront starts a front forwarding to upstream (host:port, served
// without TLS) on a free port of 127.0.0.1; creds, if not nil, are the
// front's server credentials (TLS). It is stopped when tb ends.
func StartGRPCFront(tb testing.TB, upstream string, creds credentials.TransportCredentials) *GRPCFront {
	tb.Helper()
	ln, err := listenLoopback(loopbackHost+":0", 0)
	if err != nil {
		tb.Fatal(err)
	}
	up, err := grpc.NewClient(upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(RawCodec{})))
	if err != nil {
		_ = ln.Close()
		tb.Fatal(err)
	}
	f := &GRPCFront{addr: ln.Addr().String(), up: up}
	opts := []grpc.ServerOption{grpc.ForceServerCodec(RawCodec{}), grpc.UnknownServiceHandler(f.handle)}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	f.srv = grpc.NewServer(opts...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		f.srv.Stop()
		<-done
		_ = f.up.Close()
	})
	return f
}

// Addr is the front's host:port.
func (f *GRPCFront) Addr() string { return f.addr }

// SetAnswer sets how the calls from now on are answered.
func (f *GRPCFront) SetAnswer(a GRPCAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = a
}

// RequireMetadata makes every call need key: value in its metadata; a call
// without it is answered Unauthenticated and counted in BadCredentials.
func (f *GRPCFront) RequireMetadata(key, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqKey, f.reqValue = strings.ToLower(key), value
}

// Counts returns the calls forwarded upstream (whatever upstream answered),
// the calls the front answered itself with its answer, and the calls
// refused for want of the required metadata.
func (f *GRPCFront) Counts() (forwarded, answered, badCredentials int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forwarded, f.answered, f.bad
}

// forwardedSkip are the metadata keys a front never forwards: the ones
// gRPC sets for each hop itself.
var forwardedSkip = map[string]bool{"content-type": true, "user-agent": true, "te": true}

func (f *GRPCFront) handle(_ any, stream grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(stream)
	if !ok {
		return status.Error(codes.Internal, "otlptest: no method")
	}
	var req []byte
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	ctx := stream.Context()
	md, _ := metadata.FromIncomingContext(ctx)

	f.mu.Lock()
	a := f.answer
	if f.reqKey != "" && !slices.Contains(md.Get(f.reqKey), f.reqValue) {
		f.bad++
		f.mu.Unlock()
		return status.Error(codes.Unauthenticated, "otlptest: missing or wrong "+f.reqKey)
	}
	if a.Code != codes.OK {
		f.answered++
	} else {
		f.forwarded++
	}
	f.mu.Unlock()

	if a.Code != codes.OK {
		st := status.New(a.Code, "otlptest front: "+a.Code.String())
		if a.RetryInfo {
			var err error
			if st, err = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(a.RetryDelay)}); err != nil {
				return status.Error(codes.Internal, err.Error())
			}
		}
		return st.Err()
	}
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || forwardedSkip[k] {
			continue
		}
		out[k] = v
	}
	var reply []byte
	if err := f.up.Invoke(metadata.NewOutgoingContext(ctx, out), method, req, &reply); err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Error(codes.Unavailable, err.Error())
	}
	return stream.SendMsg(reply)
}
