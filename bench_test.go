//go:build unix

package otlpretry_test

// Benchmarks of the Transport, each measured beside its baseline in the
// same run. Results, commands and the targets they are checked against:
// docs/BENCHMARKS.md (Transport).
//
//   - BenchmarkRoundTrip: happy-path cost of the Transport over a bare
//     http.Transport, 64 KiB exports to a minimal loopback server.
//   - BenchmarkHappyPath: the same comparison with the two sides
//     taking turns every few exports inside one benchmark, so that changes
//     in machine load hit both alike.
//   - BenchmarkCircuitOpen: how long an export call takes while the
//     endpoint is down and the circuit is open (p50, p99, max), beside the
//     bare file operations a hand-off cannot do without.
//   - BenchmarkDrain: delivering a 10,000-export backlog from the spool,
//     against sending the same exports directly, 4 at a time, from memory
//     and from one file each.
//
// `go test -run '^$' -bench . -benchtime 1x` finishes in well under a
// minute. The recovery scenario with the OTel SDK is opt-in: see
// recovery_test.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

const benchProtobufCT = "application/x-protobuf"

// benchSink is the minimal OTLP/HTTP endpoint of the benchmarks: it reads the
// body, counts it and answers 200 with an empty protobuf response, so that
// the server's own cost (it runs in the benchmark's process) stays small
// beside the client's. Unlike otlptest.Collector it decodes nothing.
//
// It keeps its address across stop and start, so that a transport's
// spooled exports find it again, as a restarted collector.
type benchSink struct {
	addr string

	mu  sync.Mutex
	srv *http.Server
	run chan struct{} // closed when Serve returned

	records atomic.Int64 // requests with a body (probes have none)
	bytes   atomic.Int64
}

func startBenchSink(tb testing.TB) *benchSink {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &benchSink{addr: ln.Addr().String()}
	s.serve(ln)
	tb.Cleanup(s.stop)
	return s
}

func (s *benchSink) url() string { return "http://" + s.addr + "/v1/traces" }

func (s *benchSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		return
	}
	if n > 0 {
		s.records.Add(1)
		s.bytes.Add(n)
	}
	w.Header().Set("Content-Type", benchProtobufCT)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func (s *benchSink) serve(ln net.Listener) {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	run := make(chan struct{})
	s.mu.Lock()
	s.srv, s.run = srv, run
	s.mu.Unlock()
	go func() {
		defer close(run)
		_ = srv.Serve(ln)
	}()
}

// stop closes the listener and every connection: connects are refused.
func (s *benchSink) stop() {
	s.mu.Lock()
	srv, run := s.srv, s.run
	s.srv, s.run = nil, nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
		<-run
	}
}

// start listens again on the same address, retrying while the port is
// still held by the socket just closed.
func (s *benchSink) start(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		ln, err := net.Listen("tcp4", s.addr)
		if err == nil {
			s.serve(ln)
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			tb.Fatalf("relisten on %s: %v", s.addr, err)
		}
		time.Sleep(10 * time.Millisecond) // no notification exists for a freed port
	}
}

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

// BenchmarkRoundTrip is the happy path: one exporter sending 64 KiB
// exports, one at a time, to a loopback server that answers 200 at once.
// "bare" is an http.Transport alone, "otlpretry" the Transport wrapping an
// identical one. cpu-ns/op is the process's user+sys CPU time per export,
// server included (it runs in this process).
func BenchmarkRoundTrip(b *testing.B) {
	body := benchTraceBody(64 << 10)
	b.Run("bare", func(b *testing.B) {
		benchRoundTrip(b, body, func(next http.RoundTripper) http.RoundTripper { return next })
	})
	b.Run("otlpretry", func(b *testing.B) {
		var rt *otlpretry.Transport
		benchRoundTrip(b, body, func(next http.RoundTripper) http.RoundTripper {
			rt = benchTransport(b, filepath.Join(b.TempDir(), "spool"), next)
			return rt
		})
		// An export held past the hold limit (500 ms) is spooled, and opens
		// the circuit for the ones after it, even on loopback when the
		// machine is starved of CPU: reported, so that such a run can be
		// told apart.
		st := rt.Stats()
		if st.Direct == 0 {
			b.Fatalf("no export was delivered directly: %+v", st)
		}
		b.ReportMetric(float64(st.Spooled), "spooled-total")
	})
}

func benchRoundTrip(b *testing.B, body []byte, wrap func(http.RoundTripper) http.RoundTripper) {
	srv := startBenchSink(b)
	client := &http.Client{Transport: wrap(benchHTTPTransport(b))}
	ctx := context.Background()
	if _, err := benchExport(ctx, client, srv.url(), body); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu0 := benchCPUTime(b)
	for b.Loop() {
		if _, err := benchExport(ctx, client, srv.url(), body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchCPUTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkHappyPath is BenchmarkRoundTrip with the two sides taking
// turns: blocks of benchPairBlock exports, bare then otlpretry, then
// otlpretry then bare, and so on, to one server. On a shared machine whose
// load changes from one second to the next, the ratios of
// BenchmarkRoundTrip's separate runs swing by 20 % and more; turns a few
// milliseconds long make both sides see the same load. One op is one turn
// of each side (2 × benchPairBlock exports). Each side's wall time, CPU
// time (the whole process's, server and GC included, during that side's
// turns) and allocations (runtime.MemStats.Mallocs, read between turns)
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
	}
	b.ReportMetric(ratio(ours.wall, bare.wall), "ns-ratio")
	b.ReportMetric(ratio(ours.cpu, bare.cpu), "cpu-ratio")
	b.ReportMetric(ratio(ours.allocs, bare.allocs), "allocs-ratio")
	b.ReportMetric(float64(rt.Stats().Spooled), "spooled-total")
}

// benchPairBlock is the exports in one turn: about 2 to 5 ms here, short
// beside the machine's swings in load, long beside reading the clocks.
const benchPairBlock = 20

type benchPairSide struct {
	name   string
	client *http.Client
	ctx    context.Context // carries the side's profile label

	n                 int
	wall, cpu, allocs int64
}

// turn exports benchPairBlock bodies and adds what they cost to the side.
func (s *benchPairSide) turn(b *testing.B, url string, body []byte) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
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
	s.n += benchPairBlock
}

// BenchmarkCircuitOpen times export calls while the endpoint is down and
// the circuit is already open: each should go straight to the spool. The
// Transport is primed by an export that is handed off (its context ends
// after 500 ms at the latest, the longest the exporter should ever be
// held); then every export of 8 KiB is timed on its own, through
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

// benchFileBaseline is the floor under a hand-off on this disk: what the
// spool does for each record at the least (SyncProcess), with nothing
// else: create a file, write the body, close it, rename it into place.
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
		prime, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
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

const benchDrainRecords = 10_000

// BenchmarkDrain delivers a backlog of 10,000 exports of 8 KiB. One op is
// one whole backlog.
//
// "otlpretry": the backlog is built, outside the timing, by exporting
// through the Transport while the endpoint refuses connections (the first
// export opens the circuit, the rest go straight to the spool). Then the
// endpoint comes back and the timing runs from ForceFlush until the spool
// is empty: reading each record from disk, sending it, deleting it, four
// at a time.
//
// "direct": the same 10,000 records sent from memory by 4 goroutines
// through a bare http.Transport, to the same kind of server. It is what
// the drain would be if the spool cost nothing; the target is measured
// against it. Each record is its own buffer, as in a backlog held in
// memory (this measured the same as sending one buffer 10,000 times, as
// the benchmark did before).
//
// "direct-files": the same, but each body is first a file on disk that is
// claimed (renamed), read, sent and deleted: the floor for any spool of one
// file per record on this disk, with no bookkeeping at all.
func BenchmarkDrain(b *testing.B) {
	body := benchTraceBody(8 << 10)
	bodies := benchDrainBodies(body)
	root := b.TempDir()
	b.Run("direct", func(b *testing.B) {
		srv := startBenchSink(b)
		client := &http.Client{Transport: benchHTTPTransport(b)}
		ctx := context.Background()
		var cpu time.Duration
		benchDrainSetup(b, body)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			cpu += benchDrainDirect(b, ctx, srv, client, bodies)
		}
		benchDrainReport(b, cpu)
	})
	b.Run("direct-files", func(b *testing.B) {
		srv := startBenchSink(b)
		client := &http.Client{Transport: benchHTTPTransport(b)}
		ctx := context.Background()
		var cpu time.Duration
		benchDrainSetup(b, body)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir := benchSubdir(b, root)
			pending, claimed := filepath.Join(dir, "pending"), filepath.Join(dir, "claimed")
			for _, d := range []string{pending, claimed} {
				if err := os.Mkdir(d, 0o700); err != nil {
					b.Fatal(err)
				}
			}
			for n := range benchDrainRecords {
				if err := os.WriteFile(filepath.Join(pending, strconv.Itoa(n)), body, 0o600); err != nil {
					b.Fatal(err)
				}
			}
			cpu += benchDrainLoop(b, srv, func(n int) error {
				return benchSendFile(ctx, client, srv.url(), pending, claimed, strconv.Itoa(n))
			})
		}
		benchDrainReport(b, cpu)
	})
	b.Run("otlpretry", func(b *testing.B) {
		srv := startBenchSink(b)
		var cpu time.Duration
		benchDrainSetup(b, body)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			rt := benchDrainBacklog(b, srv, benchSubdir(b, root), body)
			cpu += benchDrainSpool(b, srv, rt)
		}
		benchDrainReport(b, cpu)
	})
	// paired: each op is one drain of each kind, direct and otlpretry in
	// turns (each goes first half the time), so that both see the same
	// machine; the ratio of their rates is the target's figure.
	b.Run("paired", func(b *testing.B) {
		srv, spoolSrv := startBenchSink(b), startBenchSink(b)
		client := &http.Client{Transport: benchHTTPTransport(b)}
		var wall, cpu [2]time.Duration // direct, otlpretry
		benchDrainSetup(b, body)
		b.SetBytes(2 * benchDrainRecords * int64(len(body)))
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			// The spool's server stays down until its turn.
			rt := benchDrainBacklog(b, spoolSrv, benchSubdir(b, root), body)
			for turn := range 2 {
				start := b.Elapsed()
				if (i+turn)%2 == 0 {
					cpu[0] += benchDrainDirect(b, context.Background(), srv, client, bodies)
					wall[0] += b.Elapsed() - start
				} else {
					cpu[1] += benchDrainSpool(b, spoolSrv, rt)
					wall[1] += b.Elapsed() - start
				}
			}
		}
		records := float64(benchDrainRecords * b.N)
		for side, name := range []string{"direct", "otlpretry"} {
			b.ReportMetric(records/wall[side].Seconds(), name+"-records/s")
			b.ReportMetric(float64(cpu[side].Nanoseconds())/records, name+"-cpu-ns/record")
		}
		b.ReportMetric(float64(wall[0])/float64(wall[1]), "rate-ratio")
		b.ReportMetric(float64(cpu[1])/float64(cpu[0]), "cpu-ratio")
	})
}

// benchDrainDirect sends the backlog's bodies from memory, 4 at a time, and
// returns the CPU time it took. The timer runs only meanwhile.
func benchDrainDirect(b *testing.B, ctx context.Context, srv *benchSink, client *http.Client, bodies [][]byte) time.Duration {
	return benchDrainLoop(b, srv, func(n int) error {
		_, err := benchExport(ctx, client, srv.url(), bodies[n])
		return err
	})
}

// benchDrainBodies returns benchDrainRecords copies of body, each in memory
// of its own.
func benchDrainBodies(body []byte) [][]byte {
	bodies := make([][]byte, benchDrainRecords)
	for i := range bodies {
		bodies[i] = bytes.Clone(body)
	}
	return bodies
}

// benchDrainLoop calls send for records 0 to benchDrainRecords-1, 4 at a
// time, checks that srv received them all and returns the CPU time it took.
// The timer runs only meanwhile.
func benchDrainLoop(b *testing.B, srv *benchSink, send func(n int) error) time.Duration {
	srv.records.Store(0)
	stopProfile := benchProfile(b)
	cpu0 := benchCPUTime(b)
	b.StartTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, otlpretry.DefaultConcurrency)
	for range otlpretry.DefaultConcurrency {
		wg.Go(func() {
			for n := next.Add(1) - 1; n < benchDrainRecords; n = next.Add(1) - 1 {
				if err := send(int(n)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := benchCPUTime(b) - cpu0
	stopProfile()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if got := srv.records.Load(); got != benchDrainRecords {
		b.Fatalf("server got %d exports, want %d", got, benchDrainRecords)
	}
	return cpu
}

// benchDrainBacklog stops srv and builds a backlog of benchDrainRecords
// exports of body in a new Transport spooling in dir. The timer must be
// stopped.
func benchDrainBacklog(b *testing.B, srv *benchSink, dir string, body []byte) *otlpretry.Transport {
	srv.stop()
	rt := benchTransport(b, dir, benchHTTPTransport(b))
	client := rt.Client()
	for range benchDrainRecords {
		if _, err := benchExport(context.Background(), client, srv.url(), body); err != nil {
			b.Fatal(err)
		}
	}
	if st := rt.Stats(); st.Records != benchDrainRecords {
		b.Fatalf("backlog not built: %+v", st)
	}
	if os.Getenv("SYNCHACK") != "" {
		syscall.Sync()
	}
	return rt
}

// benchDrainSpool starts srv, times rt's ForceFlush of its backlog to it,
// checks that all of it arrived, shuts rt down and returns the CPU time the
// drain took.
func benchDrainSpool(b *testing.B, srv *benchSink, rt *otlpretry.Transport) time.Duration {
	srv.records.Store(0)
	srv.start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stopProfile := benchProfile(b)
	cpu0 := benchCPUTime(b)
	b.StartTimer()
	err := rt.ForceFlush(ctx)
	b.StopTimer()
	cpu := benchCPUTime(b) - cpu0
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	st := rt.Stats()
	// The first export's own immediate retry, detached after the hold, may
	// deliver it once the endpoint is back (as Direct).
	if st.Records != 0 || st.Delivered+st.Direct != benchDrainRecords {
		b.Fatalf("after ForceFlush: %+v", st)
	}
	if got := srv.records.Load(); got != benchDrainRecords {
		b.Fatalf("server got %d exports, want %d", got, benchDrainRecords)
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	return cpu
}

// benchSendFile is the least any spool of one file per record does to
// deliver one: claim it by renaming, read it, send it, delete it.
func benchSendFile(ctx context.Context, c *http.Client, url, pending, claimed, name string) error {
	path := filepath.Join(claimed, name)
	if err := os.Rename(filepath.Join(pending, name), path); err != nil {
		return err
	}
	body, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if _, err := benchExport(ctx, c, url, body); err != nil {
		return err
	}
	return os.Remove(path)
}

func benchDrainSetup(b *testing.B, body []byte) {
	b.SetBytes(int64(benchDrainRecords * len(body))) // MB/s is the body bytes delivered
	b.ReportAllocs()
	b.ResetTimer()
}

func benchDrainReport(b *testing.B, cpu time.Duration) {
	records := float64(benchDrainRecords * b.N)
	b.ReportMetric(records/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/records, "cpu-ns/record")
}

// benchProfile records a CPU profile and an execution trace of the timed
// part of one drain when OTLPRETRY_BENCH_PROFILE names a folder (go test's
// -cpuprofile would also profile the building of the backlog, which
// dominates it). It writes <folder>/<benchmark name>-<n>.cpu and .trace
// for the n-th timed drain, so that several can be merged with
// "go tool pprof a.cpu b.cpu ...", and the allocation profiles .allocs0 and
// .allocs before and after it ("go tool pprof -diff_base x.allocs0
// x.allocs" shows the drain's own allocations). Allocation profiles are
// written around a forced GC, so profiling makes the drain look slower.
var benchProfileSeq atomic.Int64

func benchProfile(b *testing.B) (stop func()) {
	dir := os.Getenv("OTLPRETRY_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(b.Name())
	name = fmt.Sprintf("%s-%d", name, benchProfileSeq.Add(1))
	f, err := os.Create(filepath.Join(dir, name+".cpu"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	tf, err := os.Create(filepath.Join(dir, name+".trace"))
	if err != nil {
		b.Fatal(err)
	}
	if err := trace.Start(tf); err != nil {
		b.Fatal(err)
	}
	writeHeap := func(suffix string) {
		runtime.GC() // the allocation profile is as of the last GC
		hf, err := os.Create(filepath.Join(dir, name+suffix))
		if err != nil {
			b.Fatal(err)
		}
		if err := errors.Join(pprof.Lookup("allocs").WriteTo(hf, 0), hf.Close()); err != nil {
			b.Fatal(err)
		}
	}
	writeHeap(".allocs0")
	return func() {
		trace.Stop()
		pprof.StopCPUProfile()
		if err := errors.Join(f.Close(), tf.Close()); err != nil {
			b.Fatal(err)
		}
		writeHeap(".allocs")
	}
}
