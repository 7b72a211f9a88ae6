//go:build unix

package otlptest

import (
	"context"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"syscall"
	"testing"
	"time"
)

// The pieces the micro-benchmarks of otlpretry and otlpretrygrpc share:
// paired sides that take turns, latency percentiles, bodies of a given
// size.

// PairBlock is the exports in one turn of a paired benchmark: a few
// milliseconds of 64 KiB exports on loopback, short beside the machine's
// swings in load (which last seconds), long beside reading the clocks and
// runtime.MemStats between turns.
const PairBlock = 20

// PairSide is one side ("bare" or "otlpretry") of a paired benchmark: the
// two sides take turns of PairBlock exports, so that changes in machine
// load hit both alike, and each adds up what its turns cost.
type PairSide struct {
	Name string
	// Ctx carries the side's profile label, side=Name.
	Ctx context.Context

	n                        int
	wall, cpu, allocs, bytes int64
}

// NewPairSide returns a side named name. The calling goroutine takes its
// label, so that connections it opens next inherit it.
func NewPairSide(name string) *PairSide {
	s := &PairSide{Name: name, Ctx: pprof.WithLabels(context.Background(), pprof.Labels("side", name))}
	pprof.SetGoroutineLabels(s.Ctx)
	return s
}

// Wall is the side's wall time so far, over Exports exports.
func (s *PairSide) Wall() time.Duration { return time.Duration(s.wall) }

// Exports is how many exports the side has made so far.
func (s *PairSide) Exports() int { return s.n }

// Turn makes PairBlock exports with export and adds what they cost to the
// side: wall time, CPU time (the whole process's), allocations and bytes.
func (s *PairSide) Turn(b *testing.B, export func(ctx context.Context) error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs, allocated := ms.Mallocs, ms.TotalAlloc
	pprof.SetGoroutineLabels(s.Ctx)
	cpu0 := CPUTime(b)
	start := time.Now()
	for range PairBlock {
		if err := export(s.Ctx); err != nil {
			b.Fatal(err)
		}
	}
	s.wall += int64(time.Since(start))
	s.cpu += int64(CPUTime(b) - cpu0)
	runtime.ReadMemStats(&ms)
	s.allocs += int64(ms.Mallocs - mallocs)
	s.bytes += int64(ms.TotalAlloc - allocated)
	s.n += PairBlock
}

// RunPair runs a paired benchmark: bare and ours take turns, each going
// first half the time, export(side) making one export of that side, and
// what each turn cost is reported (ReportPair).
func RunPair(b *testing.B, bare, ours *PairSide, export func(s *PairSide, ctx context.Context) error) {
	defer pprof.SetGoroutineLabels(context.Background())
	sides := [2]*PairSide{bare, ours}
	for i := 0; b.Loop(); i++ {
		first := sides[i%2]
		second := sides[1-i%2]
		first.Turn(b, func(ctx context.Context) error { return export(first, ctx) })
		second.Turn(b, func(ctx context.Context) error { return export(second, ctx) })
	}
	b.StopTimer()
	ReportPair(b, bare, ours)
}

// ReportPair reports each side's cost per export and the ratios
// otlpretry/bare of time, CPU, allocations and bytes.
func ReportPair(b *testing.B, bare, ours *PairSide) {
	ratio := func(o, b int64) float64 { return float64(o) / float64(b) }
	for _, s := range []*PairSide{bare, ours} {
		b.ReportMetric(float64(s.wall)/float64(s.n), s.Name+"-ns/op")
		b.ReportMetric(float64(s.cpu)/float64(s.n), s.Name+"-cpu-ns/op")
		b.ReportMetric(float64(s.allocs)/float64(s.n), s.Name+"-allocs/op")
		b.ReportMetric(float64(s.bytes)/float64(s.n), s.Name+"-B/op")
	}
	b.ReportMetric(ratio(ours.wall, bare.wall), "ns-ratio")
	b.ReportMetric(ratio(ours.cpu, bare.cpu), "cpu-ratio")
	b.ReportMetric(ratio(ours.allocs, bare.allocs), "allocs-ratio")
	b.ReportMetric(ratio(ours.bytes, bare.bytes), "B-ratio")
}

// CPUTime is the user plus system CPU time of the whole process so far:
// client, in-process server, runtime and GC together.
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TimeExports times each export call of the benchmark's loop, export
// making one of size bytes, and reports their latency (ReportLatency)
// and allocations.
func TimeExports(b *testing.B, size int64, export func(ctx context.Context) error) {
	ctx := context.Background()
	durations := make([]time.Duration, 0, 1<<16)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		err := export(ctx)
		durations = append(durations, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ReportLatency(b, durations)
}

// ReportLatency reports the p50, p99 and max of durations (nearest rank).
func ReportLatency(b *testing.B, durations []time.Duration) {
	slices.Sort(durations)
	b.ReportMetric(float64(Percentile(durations, 50)), "p50-ns")
	b.ReportMetric(float64(Percentile(durations, 99)), "p99-ns")
	b.ReportMetric(float64(durations[len(durations)-1]), "max-ns")
}

// Percentile returns the p-th percentile of sorted durations, nearest
// rank.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// TraceBodyOfSize returns a valid OTLP trace export of at least size bytes
// (a few hundred more at most).
func TraceBodyOfSize(size int) []byte {
	one, _ := TraceBody(1)
	ten, _ := TraceBody(10)
	perSpan := (len(ten) - len(one)) / 9
	n := max(1, (size-len(one))/perSpan+1)
	for {
		body, _ := TraceBody(n)
		if len(body) >= size {
			return body
		}
		n += max(1, (size-len(body))/perSpan)
	}
}

// BenchHTTPTransport is the lower transport of every benchmark, bare or
// wrapped: a clone of http.DefaultTransport, the Transport's own default,
// except that it keeps enough idle connections for the sender's four
// concurrent sends (the default keeps 2 per host, so a third and fourth
// connection would be closed and redialled after every request).
func BenchHTTPTransport(tb testing.TB) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tb.Cleanup(tr.CloseIdleConnections)
	return tr
}

// SpoolSubdir returns a new spool folder under root. The benchmarks that
// fill spools keep them all until the end of the top-level benchmark
// (root is its TempDir): deleting thousands of files between rounds would
// slow the file creation of the next round on ext4 without a journal,
// which skips recently freed inodes (see spool/rawdisk_test.go).
func SpoolSubdir(b *testing.B, root string) string {
	dir, err := os.MkdirTemp(root, "spool-")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}
