//go:build unix

package otlpretry_test

// Micro-benchmarks of the Transport: what one export costs, in one process,
// each figure beside its baseline in the same run.
//
//   - BenchmarkHappyPath: the cost of an export through the Transport over
//     a bare http.Transport (time, CPU, allocations, bytes), the two sides
//     taking turns every few exports so that changes in machine load hit
//     both alike.
//   - BenchmarkCircuitOpen: how long an export call takes while the
//     endpoint is down and the circuit is open (p50, p99, max), beside the
//     bare file operations a hand-off cannot do without.
//
// What is delivered over time (the drain rate of a backlog, loss, recovery
// after an outage, the CPU and memory of whole processes) is measured by
// the bench module (bench/), each system as its own process, side by side
// with the OTel exporter alone and the Collector's persistent queue; the
// recovery of the Transport alone, in one process, by TestRecovery
// (recovery_test.go, opt-in). Results, commands and targets:
// docs/BENCHMARKS.md.
//
// `go test -run '^$' -bench . -benchtime 1x` checks that both run.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"syscall"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

const benchProtobufCT = "application/x-protobuf"

// benchSink is the minimal OTLP/HTTP endpoint of the benchmarks, on
// 127.0.0.1: it reads the body and answers 200 with an empty protobuf
// response, so that the server's own cost (it runs in the benchmark's
// process) stays small beside the client's. Unlike otlptest.Collector it
// decodes nothing.
type benchSink struct{ addr string }

func startBenchSink(tb testing.TB) *benchSink {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Header().Set("Content-Type", benchProtobufCT)
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	}))
	tb.Cleanup(srv.Close)
	return &benchSink{addr: srv.Listener.Addr().String()}
}

func (s *benchSink) url() string { return "http://" + s.addr + "/v1/traces" }

// benchHTTPTransport is the lower transport of every benchmark, bare or
// wrapped: a clone of http.DefaultTransport, the Transport's own default,
// except that it keeps enough idle connections for the sender's four
// concurrent sends (the default keeps 2 per host, so a third and fourth
// connection would be closed and redialled after every request).
func benchHTTPTransport(tb testing.TB) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tb.Cleanup(tr.CloseIdleConnections)
	return tr
}

// benchTransport returns an otlpretry Transport over next with its spool in
// dir and silent logs, shut down when tb ends.
func benchTransport(tb testing.TB, dir string, next http.RoundTripper, opts ...otlpretry.Option) *otlpretry.Transport {
	tb.Helper()
	rt, err := otlpretry.New(append([]otlpretry.Option{
		otlpretry.WithDir(dir),
		otlpretry.WithTransport(next),
		otlpretry.WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return rt
}

// export posts one OTLP protobuf body as the exporters do and reads the
// whole answer, so the connection is reused.
func benchExport(ctx context.Context, c *http.Client, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", benchProtobufCT)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return resp, nil
}

// benchTraceBody returns a valid OTLP trace export of at least size bytes (a
// few hundred more at most).
func benchTraceBody(size int) []byte {
	one, _ := otlptest.TraceBody(1)
	ten, _ := otlptest.TraceBody(10)
	perSpan := (len(ten) - len(one)) / 9
	n := max(1, (size-len(one))/perSpan+1)
	for {
		body, _ := otlptest.TraceBody(n)
		if len(body) >= size {
			return body
		}
		n += max(1, (size-len(body))/perSpan)
	}
}

// benchCPUTime is the user plus system CPU time of the whole process so far:
// client, in-process server, runtime and GC together.
func benchCPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHappyPath is the happy path: one exporter sending 64 KiB
// exports, one at a time, to a loopback server that answers 200 at once,
// through a bare http.Transport ("bare") and through the Transport
// wrapping an identical one ("otlpretry"). The two sides take turns:
// blocks of benchPairBlock exports, bare then otlpretry, then otlpretry
// then bare, and so on, to one server. On a shared machine the load
// changes from one second to the next, so two separate runs, one per side,
// would compare different machines; turns a few milliseconds long make
// both sides see the same load. One op is one turn of each side
// (2 × benchPairBlock exports). Each side's wall time, CPU time (the whole
// process's, server and GC included, during that side's turns),
// allocations and bytes allocated (runtime.MemStats, read between turns)
// are reported per export, with the ratios otlpretry/bare. Profiles can be
// split by side: the exports of each carry the pprof label side=bare or
// side=otlpretry, and so do the goroutines they start.
func BenchmarkHappyPath(b *testing.B) {
	body := benchTraceBody(64 << 10)
	srv := startBenchSink(b)
	sides := [2]*benchPairSide{{name: "bare"}, {name: "otlpretry"}}
	var rt *otlpretry.Transport
	for _, s := range sides {
		next := benchHTTPTransport(b)
		if s.name == "otlpretry" {
			rt = benchTransport(b, filepath.Join(b.TempDir(), "spool"), next)
			s.client = rt.Client()
		} else {
			s.client = &http.Client{Transport: next}
		}
		s.ctx = pprof.WithLabels(context.Background(), pprof.Labels("side", s.name))
		pprof.SetGoroutineLabels(s.ctx) // the connection's goroutines, started now, inherit it
		if _, err := benchExport(s.ctx, s.client, srv.url(), body); err != nil {
			b.Fatal(err)
		}
	}
	defer pprof.SetGoroutineLabels(context.Background())
	for i := 0; b.Loop(); i++ {
		first := i % 2 // each side goes first half the time
		sides[first].turn(b, srv.url(), body)
		sides[1-first].turn(b, srv.url(), body)
	}
	b.StopTimer()
	bare, ours := sides[0], sides[1]
	ratio := func(o, b int64) float64 { return float64(o) / float64(b) }
	for _, s := range sides {
		b.ReportMetric(float64(s.wall)/float64(s.n), s.name+"-ns/op")
		b.ReportMetric(float64(s.cpu)/float64(s.n), s.name+"-cpu-ns/op")
		b.ReportMetric(float64(s.allocs)/float64(s.n), s.name+"-allocs/op")
		b.ReportMetric(float64(s.bytes)/float64(s.n), s.name+"-B/op")
	}
	b.ReportMetric(ratio(ours.wall, bare.wall), "ns-ratio")
	b.ReportMetric(ratio(ours.cpu, bare.cpu), "cpu-ratio")
	b.ReportMetric(ratio(ours.allocs, bare.allocs), "allocs-ratio")
	b.ReportMetric(ratio(ours.bytes, bare.bytes), "B-ratio")
	// An export held past the hold limit is spooled and opens the circuit
	// for the ones after it, even on loopback when the machine is starved
	// of CPU: reported, so that such a run can be told apart.
	b.ReportMetric(float64(rt.Stats().Spooled), "spooled-total")
}

// benchPairBlock is the exports in one turn: a few milliseconds of 64 KiB
// exports on loopback, short beside the machine's swings in load (which
// last seconds), long beside reading the clocks and runtime.MemStats
// between turns.
const benchPairBlock = 20

type benchPairSide struct {
	name   string
	client *http.Client
	ctx    context.Context // carries the side's profile label

	n                        int
	wall, cpu, allocs, bytes int64
}

// turn exports benchPairBlock bodies and adds what they cost to the side.
func (s *benchPairSide) turn(b *testing.B, url string, body []byte) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs, allocated := ms.Mallocs, ms.TotalAlloc
	pprof.SetGoroutineLabels(s.ctx)
	cpu0 := benchCPUTime(b)
	start := time.Now()
	for range benchPairBlock {
		if _, err := benchExport(s.ctx, s.client, url, body); err != nil {
			b.Fatal(err)
		}
	}
	s.wall += int64(time.Since(start))
	s.cpu += int64(benchCPUTime(b) - cpu0)
	runtime.ReadMemStats(&ms)
	s.allocs += int64(ms.Mallocs - mallocs)
	s.bytes += int64(ms.TotalAlloc - allocated)
	s.n += benchPairBlock
}

// BenchmarkCircuitOpen times export calls while the endpoint is down and
// the circuit is already open: each should go straight to the spool. The
// Transport is primed by an export that is handed off (its context ends
// after otlpretry.DefaultMaxHold at the latest, the longest the exporter
// is ever held); then every export of 8 KiB is timed on its own, through
// Client().Do as the exporters call it. blackhole is the target's case:
// connections accepted and never answered. refused and 503 are the other
// two ways an endpoint fails, for comparison; "file" is the baseline, the
// least a hand-off costs on this disk (see benchFileBaseline).
func BenchmarkCircuitOpen(b *testing.B) {
	body := benchTraceBody(8 << 10)
	root := b.TempDir()
	for _, c := range []struct {
		name string
		mode otlptest.Mode
	}{
		{"blackhole", otlptest.Blackhole},
		{"refused", otlptest.Refuse},
		{"503", otlptest.HTTPStatus(http.StatusServiceUnavailable, "")},
	} {
		b.Run(c.name, func(b *testing.B) { benchCircuitOpen(b, benchSubdir(b, root), body, c.mode) })
	}
	b.Run("file", func(b *testing.B) { benchFileBaseline(b, benchSubdir(b, root), body) })
}

// benchFileBaseline is the reference for a hand-off's latency on this
// disk: storing the body as a file of its own, with nothing else (create,
// write, close, rename into place), as a spool of one file per export
// would.
func benchFileBaseline(b *testing.B, dir string, body []byte) {
	durations := make([]time.Duration, 0, 1<<16)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		start := time.Now()
		tmp := filepath.Join(dir, fmt.Sprintf("%d.tmp", i))
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		_, err = f.Write(body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("%d.rec", i)))
		}
		durations = append(durations, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	benchReportLatency(b, durations)
}

// benchReportLatency reports the p50, p99 and max of durations.
func benchReportLatency(b *testing.B, durations []time.Duration) {
	slices.Sort(durations)
	b.ReportMetric(float64(benchPercentile(durations, 50)), "p50-ns")
	b.ReportMetric(float64(benchPercentile(durations, 99)), "p99-ns")
	b.ReportMetric(float64(durations[len(durations)-1]), "max-ns")
}

func benchCircuitOpen(b *testing.B, dir string, body []byte, mode otlptest.Mode) {
	srv := startBenchSink(b)
	proxy := otlptest.StartProxy(b, srv.addr)
	if err := proxy.SetMode(mode); err != nil {
		b.Fatal(err)
	}
	rt := benchTransport(b, dir, benchHTTPTransport(b))
	client := rt.Client()
	url := proxy.URL() + "/v1/traces"

	// Prime: exports until one has been handed off and the circuit is
	// open (the first normally does it).
	for i := 0; !rt.Stats().CircuitOpen; i++ {
		if i == 5 {
			b.Fatalf("circuit not open after %d exports: %+v", i, rt.Stats())
		}
		prime, cancel := context.WithTimeout(context.Background(), otlpretry.DefaultMaxHold)
		_, err := benchExport(prime, client, url, body)
		cancel()
		if err != nil {
			b.Fatalf("priming export: %v", err)
		}
	}

	ctx := context.Background()
	durations := make([]time.Duration, 0, 1<<16)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		_, err := benchExport(ctx, client, url, body)
		durations = append(durations, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	benchReportLatency(b, durations)
	if st := rt.Stats(); !st.CircuitOpen || st.Direct != 0 {
		b.Fatalf("circuit closed while the endpoint was down: %+v", st)
	}
}

// benchSubdir returns a new spool folder under root. The benchmarks that
// fill spools keep them all until the end of the top-level benchmark
// (root is its TempDir): deleting thousands of files between rounds would
// slow the file creation of the next round on ext4 without a journal,
// which skips recently freed inodes (see spool/rawdisk_test.go).
func benchSubdir(b *testing.B, root string) string {
	dir, err := os.MkdirTemp(root, "spool-")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// benchPercentile returns the p-th percentile of sorted durations, nearest
// rank.
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
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
	body := benchTraceBody(size)
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
// benchPairBlock exports, as in BenchmarkHappyPath, and the same figures
// are reported: per-export time, CPU (the whole process's), allocations
// and bytes per side, and the ratios otlpretry/bare. Exports carry the
// pprof label side=bare or side=otlpretry.
func BenchmarkGRPCHappyPath(b *testing.B) {
	req := benchTraceRequest(64 << 10)
	addr := startBenchGRPCSink(b)
	sides := [2]*benchGRPCSide{{name: "bare"}, {name: "otlpretry"}}
	var rt *otlpretry.Transport
	for _, s := range sides {
		s.ctx = pprof.WithLabels(context.Background(), pprof.Labels("side", s.name))
		pprof.SetGoroutineLabels(s.ctx) // the connection's goroutines, started now, inherit it
		var opts []grpc.DialOption
		if s.name == "otlpretry" {
			rt = benchTransport(b, filepath.Join(b.TempDir(), "spool"), benchHTTPTransport(b))
			opts = append(opts, rt.DialOption())
		}
		s.client = coltrace.NewTraceServiceClient(benchGRPCConn(b, addr, opts...))
		if err := benchGRPCExport(s.ctx, s.client, req); err != nil {
			b.Fatal(err)
		}
	}
	defer pprof.SetGoroutineLabels(context.Background())
	for i := 0; b.Loop(); i++ {
		first := i % 2 // each side goes first half the time
		sides[first].turn(b, req)
		sides[1-first].turn(b, req)
	}
	b.StopTimer()
	bare, ours := sides[0], sides[1]
	ratio := func(o, b int64) float64 { return float64(o) / float64(b) }
	for _, s := range sides {
		b.ReportMetric(float64(s.wall)/float64(s.n), s.name+"-ns/op")
		b.ReportMetric(float64(s.cpu)/float64(s.n), s.name+"-cpu-ns/op")
		b.ReportMetric(float64(s.allocs)/float64(s.n), s.name+"-allocs/op")
		b.ReportMetric(float64(s.bytes)/float64(s.n), s.name+"-B/op")
	}
	b.ReportMetric(ratio(ours.wall, bare.wall), "ns-ratio")
	b.ReportMetric(ratio(ours.cpu, bare.cpu), "cpu-ratio")
	b.ReportMetric(ratio(ours.allocs, bare.allocs), "allocs-ratio")
	b.ReportMetric(ratio(ours.bytes, bare.bytes), "B-ratio")
	// See BenchmarkHappyPath: a run starved of CPU may hand exports off.
	b.ReportMetric(float64(rt.Stats().Spooled), "spooled-total")
}

type benchGRPCSide struct {
	name   string
	client coltrace.TraceServiceClient
	ctx    context.Context // carries the side's profile label

	n                        int
	wall, cpu, allocs, bytes int64
}

// turn exports benchPairBlock requests and adds what they cost to the
// side.
func (s *benchGRPCSide) turn(b *testing.B, req *coltrace.ExportTraceServiceRequest) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs, allocated := ms.Mallocs, ms.TotalAlloc
	pprof.SetGoroutineLabels(s.ctx)
	cpu0 := benchCPUTime(b)
	start := time.Now()
	for range benchPairBlock {
		if err := benchGRPCExport(s.ctx, s.client, req); err != nil {
			b.Fatal(err)
		}
	}
	s.wall += int64(time.Since(start))
	s.cpu += int64(benchCPUTime(b) - cpu0)
	runtime.ReadMemStats(&ms)
	s.allocs += int64(ms.Mallocs - mallocs)
	s.bytes += int64(ms.TotalAlloc - allocated)
	s.n += benchPairBlock
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
			benchGRPCCircuitOpen(b, benchSubdir(b, root), req, c.down(b, startBenchGRPCSink(b)))
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
	rt := benchTransport(b, dir, benchHTTPTransport(b))
	client := coltrace.NewTraceServiceClient(benchGRPCConn(b, addr, rt.DialOption()))

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

	ctx := context.Background()
	durations := make([]time.Duration, 0, 1<<16)
	b.SetBytes(int64(proto.Size(req)))
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		err := benchGRPCExport(ctx, client, req)
		durations = append(durations, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	benchReportLatency(b, durations)
	if st := rt.Stats(); !st.CircuitOpen || st.Direct != 0 {
		b.Fatalf("circuit closed while the endpoint was down: %+v", st)
	}
}
