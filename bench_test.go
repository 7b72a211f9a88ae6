//go:build unix

package otlpretry_test

// Micro-benchmarks of the Transport: what one export costs, in one process,
// each figure beside its baseline in the same run.
//
//   - BenchmarkHappyPath: the cost of an export through the Transport over
//     a bare http.Transport (time, CPU, allocations, bytes), the two sides
//     taking turns every few exports so that changes in machine load hit
//     both alike.
//   - BenchmarkOverhead: the Transport's own cost per export, over a lower
//     transport that answers at once without a network: the figure to
//     watch when changing the export path, steadier than BenchmarkHappyPath
//     because nothing but the two sides' code runs.
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
// `go test -run '^$' -bench . -benchtime 1x` checks that each runs.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

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

// BenchmarkHappyPath is the happy path: one exporter sending 64 KiB
// exports, one at a time, to a loopback server that answers 200 at once,
// through a bare http.Transport ("bare") and through the Transport
// wrapping an identical one ("otlpretry"). The two sides take turns:
// blocks of otlptest.PairBlock exports, bare then otlpretry, then otlpretry
// then bare, and so on, to one server. On a shared machine the load
// changes from one second to the next, so two separate runs, one per side,
// would compare different machines; turns a few milliseconds long make
// both sides see the same load. One op is one turn of each side
// (2 × otlptest.PairBlock exports). Each side's wall time, CPU time (the whole
// process's, server and GC included, during that side's turns),
// allocations and bytes allocated (runtime.MemStats, read between turns)
// are reported per export, with the ratios otlpretry/bare. Profiles can be
// split by side: the exports of each carry the pprof label side=bare or
// side=otlpretry, and so do the goroutines they start.
func BenchmarkHappyPath(b *testing.B) {
	body := otlptest.TraceBodyOfSize(64 << 10)
	srv := startBenchSink(b)
	bare, ours := otlptest.NewPairSide("bare"), otlptest.NewPairSide("otlpretry")
	var rt *otlpretry.Transport
	clients := map[*otlptest.PairSide]*http.Client{}
	for _, s := range []*otlptest.PairSide{bare, ours} {
		pprof.SetGoroutineLabels(s.Ctx) // the connection's goroutines, started now, inherit it
		next := otlptest.BenchHTTPTransport(b)
		clients[s] = &http.Client{Transport: next}
		if s == ours {
			rt = benchTransport(b, filepath.Join(b.TempDir(), "spool"), next)
			clients[s] = rt.Client()
		}
		if _, err := benchExport(s.Ctx, clients[s], srv.url(), body); err != nil {
			b.Fatal(err)
		}
	}
	otlptest.RunPair(b, bare, ours, func(s *otlptest.PairSide, ctx context.Context) error {
		_, err := benchExport(ctx, clients[s], srv.url(), body)
		return err
	})
	// An export held past the hold limit is spooled and opens the circuit
	// for the ones after it, even on loopback when the machine is starved
	// of CPU: reported, so that such a run can be told apart.
	b.ReportMetric(float64(rt.Stats().Spooled), "spooled-total")
}

// BenchmarkOverhead is BenchmarkHappyPath without a network: both sides
// send 64 KiB exports to instantTransport, which reads the body and
// answers 200 at once. What is left is what the Transport itself adds to
// an export (its bookkeeping, the hand-off to a worker and back, each
// attempt's context), reported as overhead-ns per export beside each
// side's cost. The sides take turns as in BenchmarkHappyPath.
func BenchmarkOverhead(b *testing.B) {
	body := otlptest.TraceBodyOfSize(64 << 10)
	const url = "http://127.0.0.1:4318/v1/traces" // never dialled
	bare, ours := otlptest.NewPairSide("bare"), otlptest.NewPairSide("otlpretry")
	clients := map[*otlptest.PairSide]*http.Client{
		bare: {Transport: instantTransport{}},
		ours: benchTransport(b, filepath.Join(b.TempDir(), "spool"), instantTransport{}).Client(),
	}
	otlptest.RunPair(b, bare, ours, func(s *otlptest.PairSide, ctx context.Context) error {
		_, err := benchExport(ctx, clients[s], url, body)
		return err
	})
	b.ReportMetric(float64(ours.Wall()-bare.Wall())/float64(ours.Exports()), "overhead-ns/op")
}

// instantTransport answers every request 200 with an empty body, once it
// has read the request's body. Like http.Transport it derives a context
// of its own from the request's, ended when the response body is closed,
// so that an attempt's context costs here what it costs there.
type instantTransport struct{}

func (instantTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	_, cancel := context.WithCancelCause(req.Context())
	_, err := io.Copy(io.Discard, req.Body)
	req.Body.Close()
	if err != nil {
		cancel(err)
		return nil, err
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {benchProtobufCT}},
		Body:       &cancelOnClose{Reader: bytes.NewReader(nil), cancel: cancel},
		Request:    req,
	}, nil
}

// cancelOnClose is a response body that ends its request's context when
// closed.
type cancelOnClose struct {
	io.Reader
	cancel context.CancelCauseFunc
}

func (c *cancelOnClose) Close() error {
	c.cancel(nil)
	return nil
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
	body := otlptest.TraceBodyOfSize(8 << 10)
	root := b.TempDir()
	for _, c := range []struct {
		name string
		mode otlptest.Mode
	}{
		{"blackhole", otlptest.Blackhole},
		{"refused", otlptest.Refuse},
		{"503", otlptest.HTTPStatus(http.StatusServiceUnavailable, "")},
	} {
		b.Run(c.name, func(b *testing.B) { benchCircuitOpen(b, otlptest.SpoolSubdir(b, root), body, c.mode) })
	}
	b.Run("file", func(b *testing.B) { benchFileBaseline(b, otlptest.SpoolSubdir(b, root), body) })
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
	otlptest.ReportLatency(b, durations)
}

func benchCircuitOpen(b *testing.B, dir string, body []byte, mode otlptest.Mode) {
	srv := startBenchSink(b)
	proxy := otlptest.StartProxy(b, srv.addr)
	if err := proxy.SetMode(mode); err != nil {
		b.Fatal(err)
	}
	rt := benchTransport(b, dir, otlptest.BenchHTTPTransport(b))
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

	otlptest.TimeExports(b, int64(len(body)), func(ctx context.Context) error {
		_, err := benchExport(ctx, client, url, body)
		return err
	})
	if st := rt.Stats(); !st.CircuitOpen || st.Direct != 0 {
		b.Fatalf("circuit closed while the endpoint was down: %+v", st)
	}
}
