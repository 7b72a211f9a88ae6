//go:build unix

package otlpretrygrpc_test

// Micro-benchmarks of the interceptor, as the otlpretry package's
// bench_test.go has them for OTLP/HTTP, each figure beside its baseline in
// the same run:
//
//   - BenchmarkGRPCHappyPath: the cost of an export through the
//     interceptor over a bare gRPC connection.
//   - BenchmarkGRPCCircuitOpen: how long an export call takes while the
//     destination is down and its circuit is open (p50, p99, max).
//
// `go test -run '^$' -bench . -benchtime 1x` checks that both run.

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"
)

// benchTransport returns an otlpretry Transport over next with its spool in
// dir and silent logs, shut down when tb ends.
func benchTransport(tb testing.TB, dir string, next http.RoundTripper) *otlpretry.Transport {
	tb.Helper()
	rt, err := otlpretry.New(otlpretry.WithDir(dir), otlpretry.WithTransport(next),
		otlpretry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return rt
}

// benchGRPCSink is the minimal OTLP/gRPC endpoint of the benchmarks, on
// 127.0.0.1: a grpc.Server that reads every call's message as bytes and
// answers OK with an empty reply, decoding nothing, as benchSink does over
// HTTP.
func startBenchGRPCSink(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(otlptest.RawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
			var req []byte
			if err := s.RecvMsg(&req); err != nil {
				return err
			}
			return s.SendMsg([]byte{})
		}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	tb.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// benchGRPCConn is a connection as otlptracegrpc makes one with its
// defaults and WithInsecure, to addr, with opts added (the Transport's
// DialOption for the otlpretry side).
func benchGRPCConn(tb testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// benchTraceRequest returns a valid OTLP trace export request of at least
// size bytes serialized (a few hundred more at most).
func benchTraceRequest(size int) *coltrace.ExportTraceServiceRequest {
	body := otlptest.TraceBodyOfSize(size)
	req := &coltrace.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		panic(err) // benchTraceBody builds it: a bug here, not data
	}
	return req
}

// benchGRPCExport makes one export call as otlptracegrpc does: the
// generated client's Export, bounded by the exporter's default 10 s
// timeout.
func benchGRPCExport(ctx context.Context, c coltrace.TraceServiceClient, req *coltrace.ExportTraceServiceRequest) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.Export(ctx, req)
	return err
}

// BenchmarkGRPCHappyPath is BenchmarkHappyPath over OTLP/gRPC: 64 KiB
// trace exports, one at a time, through the generated TraceService client
// (what otlptracegrpc calls) to a loopback grpc.Server that answers OK at
// once, over a bare connection ("bare") and over an identical one with
// the Transport's DialOption ("otlpretry"). The two sides take turns of
// otlptest.PairBlock exports, as in the otlpretry package's BenchmarkHappyPath, and the same figures
// are reported: per-export time, CPU (the whole process's), allocations
// and bytes per side, and the ratios otlpretry/bare. Exports carry the
// pprof label side=bare or side=otlpretry.
func BenchmarkGRPCHappyPath(b *testing.B) {
	req := benchTraceRequest(64 << 10)
	addr := startBenchGRPCSink(b)
	bare, ours := otlptest.NewPairSide("bare"), otlptest.NewPairSide("otlpretry")
	var rt *otlpretry.Transport
	clients := map[*otlptest.PairSide]coltrace.TraceServiceClient{}
	for _, s := range []*otlptest.PairSide{bare, ours} {
		pprof.SetGoroutineLabels(s.Ctx) // the connection's goroutines, started now, inherit it
		var opts []grpc.DialOption
		if s == ours {
			rt = benchTransport(b, filepath.Join(b.TempDir(), "spool"), otlptest.BenchHTTPTransport(b))
			opts = append(opts, otlpretrygrpc.DialOption(rt))
		}
		clients[s] = coltrace.NewTraceServiceClient(benchGRPCConn(b, addr, opts...))
		if err := benchGRPCExport(s.Ctx, clients[s], req); err != nil {
			b.Fatal(err)
		}
	}
	otlptest.RunPair(b, bare, ours, func(s *otlptest.PairSide, ctx context.Context) error {
		return benchGRPCExport(ctx, clients[s], req)
	})
	// See BenchmarkHappyPath: a run starved of CPU may hand exports off.
	b.ReportMetric(float64(rt.Stats().Spooled), "spooled-total")
}

// BenchmarkGRPCCircuitOpen is BenchmarkCircuitOpen over OTLP/gRPC: the
// time of each 8 KiB trace export call through the generated client on a
// connection with the Transport's DialOption while the destination is
// down and its circuit open, so that every call goes straight to the
// spool. blackhole: connections accepted and never answered (the HTTP/2
// handshake never completes); refused: nothing listening; unavailable: a
// front answering Unavailable.
func BenchmarkGRPCCircuitOpen(b *testing.B) {
	req := benchTraceRequest(8 << 10)
	root := b.TempDir()
	for _, c := range []struct {
		name string
		down func(b *testing.B, addr string) string // returns the address to export to
	}{
		{"blackhole", func(b *testing.B, addr string) string { return benchProxy(b, addr, otlptest.Blackhole) }},
		{"refused", func(b *testing.B, addr string) string { return benchProxy(b, addr, otlptest.Refuse) }},
		{"unavailable", func(b *testing.B, addr string) string {
			f := otlptest.StartGRPCFront(b, addr, nil)
			f.SetAnswer(otlptest.GRPCAnswer{Code: codes.Unavailable})
			return f.Addr()
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchGRPCCircuitOpen(b, otlptest.SpoolSubdir(b, root), req, c.down(b, startBenchGRPCSink(b)))
		})
	}
}

// benchProxy starts a fault proxy to addr in mode and returns its address.
func benchProxy(b *testing.B, addr string, mode otlptest.Mode) string {
	proxy := otlptest.StartProxy(b, addr)
	if err := proxy.SetMode(mode); err != nil {
		b.Fatal(err)
	}
	return proxy.Addr()
}

func benchGRPCCircuitOpen(b *testing.B, dir string, req *coltrace.ExportTraceServiceRequest, addr string) {
	rt := benchTransport(b, dir, otlptest.BenchHTTPTransport(b))
	client := coltrace.NewTraceServiceClient(benchGRPCConn(b, addr, otlpretrygrpc.DialOption(rt)))

	// Prime: exports until one has been handed off and the circuit is
	// open (the first normally does it).
	for i := 0; !rt.Stats().CircuitOpen; i++ {
		if i == 5 {
			b.Fatalf("circuit not open after %d exports: %+v", i, rt.Stats())
		}
		prime, cancel := context.WithTimeout(context.Background(), otlpretry.DefaultMaxHold)
		err := benchGRPCExport(prime, client, req)
		cancel()
		if err != nil {
			b.Fatalf("priming export: %v", err)
		}
	}

	otlptest.TimeExports(b, int64(proto.Size(req)), func(ctx context.Context) error {
		return benchGRPCExport(ctx, client, req)
	})
	if st := rt.Stats(); !st.CircuitOpen || st.Direct != 0 {
		b.Fatalf("circuit closed while the endpoint was down: %+v", st)
	}
}
