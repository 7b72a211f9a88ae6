package otlptest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestGRPCFront: a call through the front reaches the upstream with its
// bytes and metadata and brings back the upstream's reply; a set answer
// is given by the front itself (with RetryInfo when asked); required
// metadata is checked.
func TestGRPCFront(t *testing.T) {
	const method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	// The upstream echoes the request's bytes with the caller's token
	// appended.
	lis, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := grpc.NewServer(grpc.ForceServerCodec(RawCodec{}), grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		md, _ := metadata.FromIncomingContext(s.Context())
		return s.SendMsg(append(req, md.Get("authorization")[0]...))
	}))
	go func() { _ = up.Serve(lis) }()
	t.Cleanup(up.Stop)

	f := StartGRPCFront(t, lis.Addr().String(), nil)
	cc, err := grpc.NewClient(f.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	call := func(token string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", token)
		var reply []byte
		err := cc.Invoke(ctx, method, []byte("req/"), &reply, grpc.ForceCodec(RawCodec{}))
		return reply, err
	}

	f.RequireMetadata("Authorization", "t1")
	if reply, err := call("t1"); err != nil || string(reply) != "req/t1" {
		t.Fatalf("forwarded call: %q, %v; want %q", reply, err, "req/t1")
	}
	if _, err := call("t2"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("call with the wrong token: %v, want Unauthenticated", err)
	}

	f.SetAnswer(GRPCAnswer{Code: codes.ResourceExhausted, RetryInfo: true, RetryDelay: 1500 * time.Millisecond})
	_, err = call("t1")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || len(st.Details()) != 1 {
		t.Fatalf("answered call: %v, want ResourceExhausted with RetryInfo", err)
	}
	if ri, ok := st.Details()[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 1500*time.Millisecond {
		t.Errorf("answered call's details: %v, want RetryInfo of 1.5s", st.Details())
	}
	f.SetAnswer(GRPCAnswer{Code: codes.Unavailable})
	if _, err := call("t1"); status.Code(err) != codes.Unavailable {
		t.Errorf("answered call: %v, want Unavailable", err)
	}
	if fw, ans, bad := f.Counts(); fw != 1 || ans != 2 || bad != 1 {
		t.Errorf("Counts() = %d forwarded, %d answered, %d bad credentials; want 1, 2, 1", fw, ans, bad)
	}
}
