package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// The soak scenarios take minutes: they run only when asked for, with
// -soak or OTLPRETRY_SOAK=1. OTLPRETRY_SOAK_DURATION (a Go duration)
// shortens the library soak, to smoke-test it.
var soakFlag = flag.Bool("soak", false, "run the long soak scenarios (or set OTLPRETRY_SOAK=1)")

func skipUnlessSoak(t *testing.T) {
	t.Helper()
	if !*soakFlag && os.Getenv("OTLPRETRY_SOAK") != "1" {
		t.Skip("soak scenario: opt-in with -soak or OTLPRETRY_SOAK=1")
	}
}

// TestLibraryFlappingSoak is the full flapping run, opt-in: down and up
// every 2 s for 60 s.
func TestLibraryFlappingSoak(t *testing.T) {
	skipUnlessSoak(t)
	t.Parallel()
	runLibraryFlapping(t, "library/flapping-2s-60s", 60*time.Second)
}

// TestLibrarySoak: the library at 2,000 spans/s for 10 minutes, with an
// outage of a third of every minute, refused connections, 503s and a
// black hole in turn. Nothing may be lost, and resident memory must stay
// flat: VmRSS is sampled every 5 s; after the first minute (warm-up) a
// linear fit's slope must stay under 1 MiB/minute, and the last sample
// within 20% of the warm-up's highest. Run it without -race: the race
// detector's shadow memory grows by itself.
func TestLibrarySoak(t *testing.T) {
	skipUnlessSoak(t)
	total, warm, period := 10*time.Minute, time.Minute, time.Minute
	if v := os.Getenv("OTLPRETRY_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("OTLPRETRY_SOAK_DURATION=%q: want a duration of 10s or more", v)
		}
		total = d
		if d < 10*time.Minute { // scaled down: ten periods, a tenth warm-up
			warm, period = d/10, d/10
		}
	}
	r := scenario(t, fmt.Sprintf("library/soak-%v", total))
	p := newLibraryPipe(t, "soak", "")
	downs := []otlptest.Mode{otlptest.Refuse, otlptest.HTTPStatus(http.StatusServiceUnavailable, ""), otlptest.Blackhole}
	var schedule []step
	outage := period / 3
	for i, at := 0, period-outage; at < total; i, at = i+1, at+period {
		schedule = append(schedule, step{at, downs[i%len(downs)]}, step{at + outage, otlptest.Pass})
	}

	type sample struct {
		at  time.Duration
		rss int64
	}
	var (
		mu      sync.Mutex
		samples []sample
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	began := time.Now()
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			rss, err := vmRSS()
			if err != nil {
				t.Errorf("reading VmRSS: %v", err)
				return
			}
			mu.Lock()
			samples = append(samples, sample{time.Since(began), rss})
			mu.Unlock()
		}
	})
	runSoakLoad(t, r, p, total, schedule)
	close(stop)
	wg.Wait()

	var warmMax int64
	var xs, ys []float64
	var lines []string
	for _, s := range samples {
		lines = append(lines, fmt.Sprintf("%v %.1fMiB", s.at.Round(time.Second), float64(s.rss)/(1<<20)))
		if s.at < warm {
			warmMax = max(warmMax, s.rss)
			continue
		}
		xs = append(xs, s.at.Minutes())
		ys = append(ys, float64(s.rss))
	}
	t.Logf("VmRSS every 5 s (warm-up %v): %s", warm, strings.Join(lines, ", "))
	if len(xs) < 3 || warmMax == 0 {
		t.Fatalf("too few VmRSS samples: %d after a warm-up of %v, %d during it", len(xs), warm, len(samples)-len(xs))
	}
	slope := slopeOf(xs, ys) / (1 << 20) // MiB per minute
	last := samples[len(samples)-1].rss
	t.Logf("VmRSS: slope %.2f MiB/minute after warm-up; warm-up max %.1f MiB, last %.1f MiB",
		slope, float64(warmMax)/(1<<20), float64(last)/(1<<20))
	if slope > 1 {
		t.Errorf("resident memory grows %.2f MiB/minute after warm-up, over 1 MiB/minute", slope)
	}
	if float64(last) > 1.2*float64(warmMax) {
		t.Errorf("last VmRSS %.1f MiB is over 120%% of the warm-up's highest, %.1f MiB",
			float64(last)/(1<<20), float64(warmMax)/(1<<20))
	}
}

// slopeOf is the least-squares slope of ys over xs.
func slopeOf(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}

// vmRSS is this process's resident set size in bytes (Linux).
func vmRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}

// seqIDs gives every new root span the next sequence number: trace ID
// seqMagic then the number, span ID the number plus one. The sink counts
// such spans in a byte per number (useSeq), so that its memory does not
// grow with the run.
type seqIDs struct{ n atomic.Uint64 }

const seqMagic = 0x5e9_5e9_5e9_5e9

func (g *seqIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	n := g.n.Add(1) - 1
	var tid trace.TraceID
	var sid trace.SpanID
	binary.BigEndian.PutUint64(tid[:8], seqMagic)
	binary.BigEndian.PutUint64(tid[8:], n)
	binary.BigEndian.PutUint64(sid[:], n+1)
	return tid, sid
}

func (g *seqIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], g.n.Add(1))
	return sid
}

// seqOf returns the sequence number of a seqIDs trace ID.
func seqOf(tid [16]byte) (uint64, bool) {
	if binary.BigEndian.Uint64(tid[:8]) != seqMagic {
		return 0, false
	}
	return binary.BigEndian.Uint64(tid[8:]), true
}

// useSeq makes the sink count seqIDs spans numbered below n, its memory
// allocated and touched now.
func (s *sink) useSeq(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq = make([]uint8, n)
	for i := range s.seq {
		s.seq[i] = 1
	}
	clear(s.seq)
}

// seqCounts returns, for the spans numbered below produced, how many were
// received, lost and received more than once, and how many numbered spans
// arrived outside them.
func (s *sink) seqCounts(produced int) (received, lost, dups, outside int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	outside = s.seqTotal
	for _, c := range s.seq {
		outside -= int(c)
	}
	for _, c := range s.seq[:produced] {
		if c == 0 {
			lost++
		} else {
			received++
			dups += int(c) - 1
		}
	}
	return received, lost, dups, outside
}

// soakRate is the library soak's spans per second.
const soakRate = 2000

// runSoakLoad is libraryPipe.run for the soak, with the spans numbered by
// seqIDs and counted by the sink in a fixed footprint: the test's own
// bookkeeping does not grow with the run, so the resident memory sampled
// is the pipeline's.
func runSoakLoad(t *testing.T, r *row, p *libraryPipe, d time.Duration, schedule []step) {
	t.Helper()
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(p.exp), sdktrace.WithIDGenerator(&seqIDs{}))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
	})
	total := int(int64(soakRate) * int64(d) / int64(time.Second))
	p.sink.useSeq(total)
	stopSampling := sampleBacklog(func() int { return p.rt.Stats().Records }, r)

	produced := 0
	loadDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(loadDone)
		tracer := tp.Tracer("e2e-soak")
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for produced < total {
			<-tick.C
			target := min(int(int64(soakRate)*int64(time.Since(start))/int64(time.Second)), total)
			for ; produced < target; produced++ {
				_, span := tracer.Start(ctx, "soak", trace.WithNewRoot())
				span.End()
			}
		}
	}()
	for _, s := range schedule {
		time.Sleep(time.Until(start.Add(s.at)))
		if err := p.proxy.SetMode(s.mode); err != nil {
			t.Errorf("SetMode(%v): %v", s.mode, err)
		}
	}
	<-loadDone

	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	if err := tp.ForceFlush(fctx); err != nil {
		t.Errorf("TracerProvider.ForceFlush: %v", err)
	}
	if err := p.rt.ForceFlush(fctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}
	stopSampling()

	received, lost, dups, outside := p.sink.seqCounts(produced)
	acked, _ := p.exp.counts()
	st := p.rt.Stats()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.lost, r.dups = produced, acked, received, lost, dups
	})
	t.Logf("produced=%d acked=%d received=%d lost=%d dups=%d backlog=%d; transport %+v",
		r.produced, r.acked, r.received, r.lost, r.dups, r.backlog, st)
	checkCounts(t, r, 0)
	if outside != 0 {
		t.Errorf("%d spans received outside the numbered range", outside)
	}
	if st.Dropped.Total() != 0 {
		t.Errorf("the transport dropped %d exports: %+v", st.Dropped.Total(), st.Dropped)
	}
	if st.Records != 0 {
		t.Errorf("%d exports still in the spool after ForceFlush", st.Records)
	}
}
