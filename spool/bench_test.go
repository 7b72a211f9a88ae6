//go:build linux

package spool_test

// Benchmarks of the spool, to be read beside BenchmarkRawWrite (the limit of
// the same disk, measured in the same run) and BenchmarkRawFiles (the same
// without the spool, a file per record), in rawdisk_test.go. Results and
// the targets they are checked against: docs/BENCHMARKS.md.
//
// A plain -bench run stays small (seconds with -benchtime 1x). The open
// benchmarks of full spools (512 MiB of 8 KiB records, and 1 KiB records)
// run only with OTLPRETRY_BENCH_LARGE=1.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/otlpretry/otlpretry/spool"
)

func benchRecord(body []byte) *spool.Record {
	return &spool.Record{
		URL:         "http://collector:4318/v1/traces",
		ContentType: "application/x-protobuf",
		Signal:      spool.SignalTraces,
		Body:        body,
	}
}

func benchOpen(tb testing.TB, dir string, opts ...spool.Option) *spool.Spool {
	tb.Helper()
	opts = append([]spool.Option{
		spool.WithLogger(slog.New(slog.DiscardHandler)),
		spool.WithRescanInterval(-1),
	}, opts...)
	sp, err := spool.Open(dir, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return sp
}

// BenchmarkPut stores records of each size in each sync mode, one writer,
// and for SyncDurable also eight concurrent writers (group commit). The
// spool has no cap that matters: it only grows.
func BenchmarkPut(b *testing.B) {
	root := benchRoot(b)
	for _, c := range []struct {
		mode    spool.SyncMode
		writers int
	}{
		{spool.SyncProcess, 1},
		{spool.SyncDurable, 1},
		{spool.SyncDurable, 8},
	} {
		for _, sz := range benchSizes {
			b.Run(fmt.Sprintf("sync=%s/writers=%d/size=%s", c.mode, c.writers, sz.name), func(b *testing.B) {
				benchPut(b, benchSubdir(b, root), c.mode, c.writers, sz.n)
			})
		}
	}
}

func benchPut(b *testing.B, dir string, mode spool.SyncMode, writers, size int) {
	sp := benchOpen(b, filepath.Join(dir, "spool"), spool.WithSync(mode), spool.WithMaxBytes(1<<62))
	defer sp.Close()
	body := benchBody(size)
	benchSettle()
	benchPrewarm(b, dir, b.N, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	if writers == 1 {
		for i := 0; i < b.N; i++ {
			if err := sp.Put(benchRecord(body)); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		// Explicit goroutines rather than RunParallel, whose goroutine count
		// depends on GOMAXPROCS.
		var next atomic.Int64
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					if err := sp.Put(benchRecord(body)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	benchReportRate(b, b.N)
}

// BenchmarkClaimAck drains a spool of 8 KiB records in batches: Claim(16),
// then Ack of each record. The records were just written, so they are read
// from the page cache, as a sender catching up after a short outage would.
func BenchmarkClaimAck(b *testing.B) {
	const size, batch = 8 << 10, 16
	root := benchRoot(b)
	b.Run(fmt.Sprintf("size=8KiB/batch=%d", batch), func(b *testing.B) {
		sp := benchOpen(b, filepath.Join(benchSubdir(b, root), "spool"), spool.WithMaxBytes(1<<62))
		defer sp.Close()
		body := benchBody(size)
		benchSettle() // for the untimed fill
		for i := 0; i < b.N; i++ {
			if err := sp.Put(benchRecord(body)); err != nil {
				b.Fatal(err)
			}
		}
		benchSync() // no file is created below
		b.SetBytes(size)
		b.ResetTimer()
		for done := 0; done < b.N; {
			recs, err := sp.Claim(batch)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				b.Fatalf("spool empty after %d of %d records", done, b.N)
			}
			for _, r := range recs {
				if err := sp.Ack(r.ID); err != nil {
					b.Fatal(err)
				}
			}
			done += len(recs)
		}
		b.StopTimer()
		benchReportRate(b, b.N)
		benchNoteDeletes(b.N, int64(b.N)*size)
	})
}

// BenchmarkSteady is a spool in steady state, holding a few records
// whatever the load: every record is put, then claimed in a batch of 16 and
// acked, by one goroutine. ns/op is a record's whole life. On ext4 without
// a journal this includes the cost of creating files among inodes freed in
// the last minute (see benchSettle); with a journal ext4 has no such cost.
func BenchmarkSteady(b *testing.B) {
	const size, batch = 8 << 10, 16
	root := benchRoot(b)
	for _, mode := range []spool.SyncMode{spool.SyncProcess, spool.SyncDurable} {
		b.Run(fmt.Sprintf("sync=%s/size=8KiB/batch=%d", mode, batch), func(b *testing.B) {
			sp := benchOpen(b, filepath.Join(benchSubdir(b, root), "spool"), spool.WithSync(mode), spool.WithMaxBytes(1<<62))
			defer sp.Close()
			body := benchBody(size)
			benchSettle()
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := sp.Put(benchRecord(body)); err != nil {
					b.Fatal(err)
				}
				if i%batch != batch-1 && i != b.N-1 {
					continue
				}
				recs, err := sp.Claim(batch)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range recs {
					if err := sp.Ack(r.ID); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			benchReportRate(b, b.N)
			benchNoteDeletes(b.N, int64(b.N)*size)
		})
	}
}

// BenchmarkOpen times Open+Close of a full spool, that is one filled with
// records until Put returned ErrFull at its cap, and reports the memory an
// opened spool takes:
//
//	records          records in the spool
//	heap-inuse-MiB   HeapInuse right after Open (garbage of the scan included)
//	heap-live-MiB    HeapInuse after a GC, the spool still open
//	rss-MiB          VmRSS of the whole test process right after Open
//	peak-rss-MiB     VmHWM during Open (reset just before it)
//	settled-rss-MiB  VmRSS once the GC has returned free memory to the OS,
//	                 the spool still open: what it keeps
//	base-rss-MiB     VmRSS before Open, after returning free memory to the OS
//
// cache=warm opens a folder the kernel has cached (a restart); cache=cold
// drops the page, dentry and inode caches before each Open (a reboot; needs
// root, skipped otherwise).
//
// The spool is built once per case, outside the timer, and removed after
// it. Only the 16 MiB case runs unless OTLPRETRY_BENCH_LARGE=1.
func BenchmarkOpen(b *testing.B) {
	large := os.Getenv("OTLPRETRY_BENCH_LARGE") == "1"
	root := benchRoot(b)
	for _, c := range []struct {
		size  int
		total int64
		large bool
	}{
		{8 << 10, 16 << 20, false},
		{8 << 10, 512 << 20, true},
		{1 << 10, 128 << 20, true},
		{1 << 10, 512 << 20, true},
	} {
		name := fmt.Sprintf("size=%s/total=%dMiB", benchSizeName(c.size), c.total>>20)
		b.Run(name, func(b *testing.B) {
			if c.large && !large {
				b.Skip("set OTLPRETRY_BENCH_LARGE=1 to run")
			}
			// A benchmark that calls Run runs once: the spool is built
			// once for both of its sub-benchmarks.
			sub := benchSubdir(b, root)
			b.Cleanup(func() { benchRemoveAll(sub) })
			dir := filepath.Join(sub, "spool")
			n := benchFill(b, dir, c.size, c.total)
			for _, cold := range []bool{false, true} {
				b.Run(map[bool]string{false: "cache=warm", true: "cache=cold"}[cold], func(b *testing.B) {
					benchOpenClose(b, dir, c.total, n, cold)
				})
			}
		})
	}
}

func benchSizeName(n int) string {
	for _, s := range benchSizes {
		if s.n == n {
			return s.name
		}
	}
	return fmt.Sprint(n)
}

// benchFill puts records of size bytes until the spool, capped at total
// bytes, is full, with a few writers, and returns how many it holds.
func benchFill(b *testing.B, dir string, size int, total int64) int {
	benchSettle()
	sp := benchOpen(b, dir, spool.WithMaxBytes(total))
	body := benchBody(size)
	var stored atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				err := sp.Put(benchRecord(body))
				if errors.Is(err, spool.ErrFull) {
					return
				}
				if err != nil {
					b.Error(err)
					return
				}
				stored.Add(1)
			}
		})
	}
	wg.Wait()
	if err := sp.Close(); err != nil {
		b.Fatal(err)
	}
	benchSettle()
	return int(stored.Load())
}

func benchOpenClose(b *testing.B, dir string, total int64, want int, cold bool) {
	if cold {
		if err := benchDropCaches(); err != nil {
			b.Skipf("cannot drop caches: %v", err)
		}
	}
	opts := []spool.Option{spool.WithMaxBytes(total)}
	if !cold {
		// Fill the caches, which benchSettle may have emptied.
		if err := benchOpen(b, dir, opts...).Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if cold {
			b.StopTimer()
			if err := benchDropCaches(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		sp := benchOpen(b, dir, opts...)
		if err := sp.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()

	// Memory, measured on one more Open outside the timer.
	runtime.GC()
	debug.FreeOSMemory()
	base, rssOK := benchProcStatusMiB("VmRSS")
	peakOK := benchResetPeakRSS()
	sp := benchOpen(b, dir, opts...)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	rss, _ := benchProcStatusMiB("VmRSS")
	peak, _ := benchProcStatusMiB("VmHWM")
	runtime.GC()
	var live runtime.MemStats
	runtime.ReadMemStats(&live)
	debug.FreeOSMemory()
	settled, _ := benchProcStatusMiB("VmRSS")
	if got := sp.Stats().Records; got != want {
		b.Errorf("opened spool holds %d records, want %d", got, want)
	}
	if err := sp.Close(); err != nil {
		b.Fatal(err)
	}

	const mib = 1 << 20
	b.ReportMetric(float64(want), "records")
	b.ReportMetric(float64(after.HeapInuse)/mib, "heap-inuse-MiB")
	b.ReportMetric(float64(live.HeapInuse)/mib, "heap-live-MiB")
	if rssOK {
		b.ReportMetric(rss, "rss-MiB")
		b.ReportMetric(settled, "settled-rss-MiB")
		b.ReportMetric(base, "base-rss-MiB")
	}
	if rssOK && peakOK {
		b.ReportMetric(peak, "peak-rss-MiB")
	}
}
