package e2e

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// Timing of a fault scenario: steady load, the fault, recovery under load.
const (
	steady  = 2 * time.Second
	fault   = 4 * time.Second
	recover = 2 * time.Second
	// flushLimit bounds each final flush and the wait for the receiver.
	flushLimit = 40 * time.Second
)

// rate is spans per second per scenario. Scenarios run two at a time (the
// default -parallel on 2 cores); under the race detector the SDK and the
// receiver are several times slower, so the rate is lower.
func rate() int {
	if raceEnabled {
		return 500
	}
	return 1000
}

func init() {
	// The SDK's default handler would print every failed export of the
	// relay scenarios' plain exporter retries; they are counted instead.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
}

type faultKind struct {
	name string
	mode otlptest.Mode
	// hits: the fault must show in the transport's counts (retries or
	// spooled exports).
	hits bool
	// maxDups overrides the duplicate bound of checkCounts (0: a tenth).
	maxDups int
}

var libraryFaults = []faultKind{
	{"refuse", otlptest.Refuse, true, 0},
	{"reset", otlptest.Reset, true, 0},
	{"blackhole", otlptest.Blackhole, true, 0},
	{"429-retry-after-1", otlptest.HTTPStatus(http.StatusTooManyRequests, "1"), true, 0},
	{"503", otlptest.HTTPStatus(http.StatusServiceUnavailable, ""), true, 0},
	{"500", otlptest.HTTPStatus(http.StatusInternalServerError, ""), true, 0},
	// Longer than the transport's 500 ms hold: exports are stored as
	// claimed while the slow attempt goes on. At the switch back to Pass
	// the proxy closes every connection, so the exports in flight (each
	// already received by the Collector, its answer held back) fail and
	// are sent again from the spool: at least once means one duplicate
	// per export in flight, up to 1.5 s of batches (512 spans each, one
	// every 0.5 s at 1,000 spans/s) plus one.
	{"latency-1500ms", otlptest.Latency(1500 * time.Millisecond), true, 4 * 512},
}

// baselineFaults are the fault kinds whose run also drives the plain OTel
// exporter (otlptracehttp without the transport) beside the transport, on
// a proxy and receiver of its own with the same schedule. Its loss is the
// baseline the transport is read against: reported in the table as
// plain/<kind>, never checked (it depends on the SDK's queue and retry
// settings, not on this project).
var baselineFaults = []string{"refuse", "503", "blackhole"}

// TestLibraryFaults: TracerProvider (default BatchSpanProcessor) →
// otlptracehttp with the transport's client → fault proxy → Collector
// receiver, each fault kind alone for 4 s in the middle of an 8 s run;
// for baselineFaults, the plain exporter beside it.
func TestLibraryFaults(t *testing.T) {
	for _, k := range libraryFaults {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			r := scenario(t, "library/"+k.name)
			p := newLibraryPipe(t, k.name, "")
			if slices.Contains(baselineFaults, k.name) {
				p.beside = newPlainPipe(t, "plain/"+k.name)
			}
			schedule := []step{{steady, k.mode}, {steady + fault, otlptest.Pass}}
			p.maxDups = k.maxDups
			p.run(t, r, steady+fault+recover, schedule)
			if k.hits {
				if st := p.rt.Stats(); st.Retried == 0 && st.Spooled == 0 {
					t.Errorf("the transport saw no failure: the fault did not hit the exports")
				}
			}
		})
	}
}

// TestLibraryFlapping: the collector goes down and up every 2 s for 20 s,
// down alternately as refused connections and as 503s. The 60 s run is
// TestLibraryFlappingSoak, opt-in, so that the default suite stays short.
func TestLibraryFlapping(t *testing.T) {
	t.Parallel()
	runLibraryFlapping(t, flappingScenario, 20*time.Second)
}

// runLibraryFlapping runs the flapping scenario for total.
func runLibraryFlapping(t *testing.T, name string, total time.Duration) {
	r := scenario(t, name)
	p := newLibraryPipe(t, "flapping", "")
	const period = 2 * time.Second
	var schedule []step
	downs := []otlptest.Mode{otlptest.Refuse, otlptest.HTTPStatus(http.StatusServiceUnavailable, "")}
	for i, at := 0, period; at < total; i, at = i+1, at+period {
		m := otlptest.Pass
		if i%2 == 0 {
			m = downs[(i/2)%len(downs)]
		}
		schedule = append(schedule, step{at, m})
	}
	schedule = append(schedule, step{total, otlptest.Pass})
	p.run(t, r, total+recover, schedule)
	if st := p.rt.Stats(); st.Spooled == 0 {
		t.Errorf("nothing was spooled: the flapping did not hit the exports")
	}
}

const flappingScenario = "library/flapping-2s-20s"

// step switches the proxy to mode at an offset from the start of the load.
type step struct {
	at   time.Duration
	mode otlptest.Mode
}

// libraryPipe is TracerProvider → counting exporter → otlptracehttp with
// the transport's client → fault proxy → Collector receiver; without the
// transport (rt nil) it is the plain exporter's pipe.
type libraryPipe struct {
	name  string
	sink  *sink
	proxy *otlptest.Proxy
	rt    *otlpretry.Transport
	exp   *countingExporter
	tp    *sdktrace.TracerProvider
	// maxDups overrides the duplicate bound of checkCounts (0: a tenth).
	maxDups int
	// beside, if set, is the plain exporter's pipe, run with the same load
	// and schedule at the same time; its row is a baseline.
	beside *libraryPipe
	row    *row // the baseline row of a plain pipe
}

// newLibraryPipe builds the pipe; dir is the spool folder ("" for a new
// temporary one), headers name, value pairs for otlptracehttp.WithHeaders.
func newLibraryPipe(t *testing.T, name, dir string, headers ...string) *libraryPipe {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	return newPipe(t, name, newTransport(t, name, dir), headers...)
}

// newPlainPipe builds the plain exporter's pipe, with its baseline row.
func newPlainPipe(t *testing.T, name string) *libraryPipe {
	t.Helper()
	p := newPipe(t, name, nil)
	p.row = baseline(t, name)
	return p
}

func newPipe(t *testing.T, name string, rt *otlpretry.Transport, headers ...string) *libraryPipe {
	t.Helper()
	ctx := context.Background()
	p := &libraryPipe{name: name, rt: rt}
	p.sink = startSink(t)
	p.proxy = otlptest.StartProxy(t, p.sink.url)
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(p.proxy.URL() + "/v1/traces")}
	if rt != nil {
		opts = append(opts, otlptracehttp.WithHTTPClient(rt.Client()))
	}
	if len(headers) > 0 {
		h := map[string]string{}
		for i := 0; i+1 < len(headers); i += 2 {
			h[headers[i]] = headers[i+1]
		}
		opts = append(opts, otlptracehttp.WithHeaders(h))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p.exp = &countingExporter{SpanExporter: exp}
	p.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(p.exp))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.tp.Shutdown(sctx)
	})
	return p
}

// run produces spans for d while schedule drives the proxy, flushes the
// SDK and the transport, fills r and checks the counts: every span
// acknowledged to the SDK, none lost, no export dropped, few duplicates.
// during, if set, runs at the end of the last fault step, before recovery.
// The pipe beside it, if any, gets the same load and schedule at the same
// time and is flushed at the same time; its counts fill its row and are
// only logged.
func (p *libraryPipe) run(t *testing.T, r *row, d time.Duration, schedule []step, during ...func()) {
	t.Helper()
	ctx := context.Background()
	pipes := []*libraryPipe{p}
	if p.beside != nil {
		pipes = append(pipes, p.beside)
	}
	stopSampling := sampleBacklog(func() int { return p.rt.Stats().Records }, r)

	produced := make([]*otlptest.Produced, len(pipes))
	var load sync.WaitGroup
	start := time.Now()
	for i, q := range pipes {
		load.Go(func() { produced[i] = otlptest.SpanLoad{Rate: rate(), Duration: d}.Run(ctx, q.tp) })
	}
	for i, s := range schedule {
		time.Sleep(time.Until(start.Add(s.at)))
		if i == len(schedule)-1 {
			for _, f := range during {
				f()
			}
		}
		for _, q := range pipes {
			if err := q.proxy.SetMode(s.mode); err != nil {
				t.Errorf("%s: SetMode(%v): %v", q.name, s.mode, err)
			}
		}
	}
	load.Wait()

	// Flushed together: the plain exporter may sit out its own retry
	// backoff meanwhile.
	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	var flush sync.WaitGroup
	if q := p.beside; q != nil {
		flush.Go(func() {
			if err := q.tp.ForceFlush(fctx); err != nil {
				t.Logf("%s: TracerProvider.ForceFlush: %v", q.name, err)
			}
		})
	}
	if err := p.tp.ForceFlush(fctx); err != nil {
		t.Errorf("TracerProvider.ForceFlush: %v", err)
	}
	if err := p.rt.ForceFlush(fctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}
	stopSampling()
	flush.Wait()

	if q := p.beside; q != nil {
		ids := produced[1].IDs()
		received, dups := q.sink.spanCounts()
		acked, failed := q.exp.counts()
		lost := q.sink.missing(ids)
		q.row.set(func(r *row) {
			r.counted = true
			r.produced, r.acked, r.received, r.lost, r.dups = len(ids), acked, received, lost, dups
		})
		t.Logf("%s: produced=%d acked=%d (failed %d) received=%d lost=%d dups=%d",
			q.name, len(ids), acked, failed, received, lost, dups)
	}

	ids := produced[0].IDs()
	received, dups := p.sink.spanCounts()
	acked, _ := p.exp.counts()
	st := p.rt.Stats()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = len(ids), acked, received, dups
		r.lost = p.sink.missing(ids)
	})
	t.Logf("produced=%d acked=%d received=%d lost=%d dups=%d backlog=%d; transport direct=%d spooled=%d delivered=%d retried=%d dropped=%d records=%d",
		r.produced, r.acked, r.received, r.lost, r.dups, r.backlog,
		st.Direct, st.Spooled, st.Delivered, st.Retried, st.Dropped.Total(), st.Records)
	checkCounts(t, r, p.maxDups)
	if st.Dropped.Total() != 0 {
		t.Errorf("the transport dropped %d exports: %+v", st.Dropped.Total(), st.Dropped)
	}
	if st.Records != 0 {
		t.Errorf("%d exports still in the spool after ForceFlush", st.Records)
	}
}

// checkCounts asserts what every counted scenario must show. Delivery is
// at least once: an export in flight when a fault starts or ends may
// arrive twice (one batch is 512 spans). Unless maxDups says otherwise,
// over a tenth of the run would mean resends without cause.
func checkCounts(t *testing.T, r *row, maxDups int) {
	t.Helper()
	if r.produced == 0 {
		t.Fatalf("no span produced")
	}
	if r.acked != r.produced {
		t.Errorf("%d of %d spans acknowledged to the SDK: the batch processor dropped or failed the rest", r.acked, r.produced)
	}
	if r.lost != 0 {
		t.Errorf("lost %d of %d spans", r.lost, r.produced)
	}
	if r.received+r.lost != r.produced {
		t.Errorf("received %d distinct spans + %d lost != %d produced: spans nobody produced arrived", r.received, r.lost, r.produced)
	}
	if maxDups == 0 {
		maxDups = r.produced / 10
	}
	if r.dups > maxDups {
		t.Errorf("%d duplicate spans, over the %d expected at most of %d", r.dups, maxDups, r.produced)
	}
}

// sampleBacklog records the largest backlog seen every 50 ms until the
// returned stop is called.
func sampleBacklog(records func() int, r *row) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			n := records()
			r.set(func(r *row) { r.backlog = max(r.backlog, n) })
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// countingExporter sits between the batch processor and the OTLP exporter
// and counts the spans whose export returned success to the SDK.
type countingExporter struct {
	sdktrace.SpanExporter
	acked, failed atomic.Int64
}

func (c *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := c.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		c.failed.Add(int64(len(spans)))
	} else {
		c.acked.Add(int64(len(spans)))
	}
	return err
}

func (c *countingExporter) counts() (acked, failed int) {
	return int(c.acked.Load()), int(c.failed.Load())
}

// newTransport is a Transport with every default but the folder, logging
// to the test.
func newTransport(t *testing.T, name, dir string, opts ...otlpretry.Option) *otlpretry.Transport {
	t.Helper()
	if dir == "" {
		// Never the default folder: tests run in parallel, and a folder
		// shared with another test's Transport (or an earlier run) holds
		// exports for destinations this one has no credentials for.
		dir = t.TempDir()
	}
	rt, err := otlpretry.New(append([]otlpretry.Option{
		otlpretry.WithDir(dir),
		otlpretry.WithLogger(otlptest.Logger(t, name)),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			t.Errorf("%s: Shutdown: %v", name, err)
		}
	})
	return rt
}
