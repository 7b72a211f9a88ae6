package otlpretry_test

// The recovery benchmark: how soon after an outage ends the spans exported
// during it reach the collector. Real time, about 70 s per outage kind (the
// three run in parallel), so it runs only with OTLPRETRY_BENCH_RECOVERY=1:
//
//	OTLPRETRY_BENCH_RECOVERY=1 go test -run '^TestRecovery$' -v -parallel 3 -timeout 10m .
//
// Results and targets: docs/BENCHMARKS.md (Transport).

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

const (
	recoveryRate   = 2000 // spans/s
	recoverySteady = 10 * time.Second
	recoveryOutage = 30 * time.Second
	// recoveryLimit bounds the wait for the outage's spans after the
	// endpoint is back; reaching it is reported, not waited out.
	recoveryLimit = 90 * time.Second
)

// recoveryRow is one line of the table.
type recoveryRow struct {
	kind       string
	produced   int           // spans ended in the SDK, whole run
	outage     int           // of which during the outage
	handed     int           // spans the batch processor passed to the exporter
	exportErrs int           // export calls that failed
	recovery   time.Duration // endpoint back → every span of the outage received
	recovered  bool
	// lostSDK: dropped by the batch processor (its queue full while the
	// exporter was held), never handed to the exporter; lostTransport:
	// handed to the exporter and never received.
	lostSDK, lostTransport int
	dups                   int
	maxHold                time.Duration // longest export call while the endpoint was down
	hits                   int           // requests (503) or connections (blackhole) the endpoint got while down
	stats                  otlpretry.Stats
}

// TestRecovery drives the OTel SDK (TracerProvider with the default
// BatchSpanProcessor, otlptracehttp with WithHTTPClient) at 2,000 spans/s
// through a Transport with its defaults, a fault proxy and a Collector:
// 10 s steady, a 30 s outage, then the endpoint returns under the same
// load. Recovery is the time from the return until every span produced
// before it has been received (Collector.WaitSpans, then a set difference
// against what the SDK produced). Loss and duplicates are counted over the
// whole run after a final flush. The targets are checked and reported,
// never failed on: this is a measurement.
func TestRecovery(t *testing.T) {
	if os.Getenv("OTLPRETRY_BENCH_RECOVERY") != "1" {
		t.Skip("set OTLPRETRY_BENCH_RECOVERY=1 to run the recovery benchmark (about 75 s)")
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	kinds := []struct {
		name string
		mode otlptest.Mode
	}{
		{"refused", otlptest.Refuse},
		{"503", otlptest.HTTPStatus(http.StatusServiceUnavailable, "")},
		{"blackhole", otlptest.Blackhole},
	}
	var (
		mu   sync.Mutex
		rows = map[string]recoveryRow{}
	)
	t.Run("kind", func(t *testing.T) {
		for _, k := range kinds {
			t.Run(k.name, func(t *testing.T) {
				t.Parallel()
				r := runRecovery(t, k.name, k.mode)
				mu.Lock()
				rows[k.name] = r
				mu.Unlock()
			})
		}
	})

	var b strings.Builder
	fmt.Fprintf(&b, "%d spans/s, %v steady, %v outage, then load continues until recovered\n",
		recoveryRate, recoverySteady, recoveryOutage)
	fmt.Fprintf(&b, "| %-9s | %8s | %8s | %8s | %6s | %8s | %9s | %10s | %4s | %8s | %5s |\n",
		"outage", "produced", "outage", "exported", "errors", "recovery", "lost: SDK", "lost: after", "dups", "max hold", "hits")
	for _, k := range kinds {
		r, ok := rows[k.name]
		if !ok {
			continue
		}
		rec := r.recovery.Round(10 * time.Millisecond).String()
		if !r.recovered {
			rec = ">" + rec
		}
		fmt.Fprintf(&b, "| %-9s | %8d | %8d | %8d | %6d | %8s | %9d | %10d | %4d | %8v | %5d |\n",
			r.kind, r.produced, r.outage, r.handed, r.exportErrs, rec, r.lostSDK, r.lostTransport, r.dups, r.maxHold.Round(time.Millisecond), r.hits)
	}
	for _, k := range kinds {
		if r, ok := rows[k.name]; ok {
			st := r.stats
			fmt.Fprintf(&b, "%s: direct=%d spooled=%d delivered=%d retried=%d dropped=%d records=%d\n",
				r.kind, st.Direct, st.Spooled, st.Delivered, st.Retried, st.Dropped.Total(), st.Records)
		}
	}
	for _, k := range kinds {
		r, ok := rows[k.name]
		if !ok {
			continue
		}
		target := 5 * time.Second
		if k.name == "503" {
			target = 29 * time.Second
		}
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "NOT met"
		}
		fmt.Fprintf(&b, "target %s: recovery %v, under %v: %s; nothing lost: %s (SDK queue %d, after hand-off %d)\n",
			k.name, r.recovery.Round(10*time.Millisecond), target, verdict(r.recovered && r.recovery <= target),
			verdict(r.lostSDK+r.lostTransport == 0), r.lostSDK, r.lostTransport)
	}
	t.Log("\n" + b.String())
}

func runRecovery(t *testing.T, kind string, mode otlptest.Mode) recoveryRow {
	ctx := context.Background()
	coll := otlptest.StartCollector(t)
	proxy := otlptest.StartProxy(t, coll.URL())
	logs := &recoveryLog{}
	t.Cleanup(func() { logs.dump(t, kind) })
	rt, err := otlpretry.New(
		otlpretry.WithDir(t.TempDir()),
		otlpretry.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rt.Shutdown(sctx)
	})
	hold := &recoveryHold{next: rt}
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(proxy.URL()+"/v1/traces"),
		otlptracehttp.WithHTTPClient(&http.Client{Transport: hold}),
	)
	if err != nil {
		t.Fatal(err)
	}
	counting := &recoveryExporter{SpanExporter: exp}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(counting))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
	})

	steady := otlptest.RunSpans(ctx, tp, recoveryRate, recoverySteady)
	if err := proxy.SetMode(mode); err != nil {
		t.Fatal(err)
	}
	hold.reset()
	outage := otlptest.RunSpans(ctx, tp, recoveryRate, recoveryOutage)
	hits := proxy.Handled(mode)
	maxHold := hold.max()
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	back := time.Now()

	// The load goes on after the return, as in production; it stops once
	// the outage's spans are in.
	afterCtx, stopAfter := context.WithCancel(ctx)
	afterDone := make(chan *otlptest.Produced, 1)
	go func() {
		afterDone <- otlptest.SpanLoad{Rate: recoveryRate, Duration: recoveryLimit, Name: recoveryAfterName}.Run(afterCtx, tp)
	}()

	r := recoveryRow{kind: kind, outage: outage.Count(), maxHold: maxHold, hits: hits}
	// Recovered: every span produced before the return that the batch
	// processor handed to the exporter has been received, and the batch
	// processor has handed over a span of the load after the return. Its
	// queue is first in, first out, so the spans before the return that it
	// has not handed over by then it dropped (queue full while the
	// exporter was held): those count as lost in the SDK, not as late.
	pending := append(steady.IDs(), outage.IDs()...)
	wctx, cancel := context.WithTimeout(ctx, recoveryLimit)
	for {
		have := coll.Spans()
		pending = slices.DeleteFunc(pending, func(k otlptest.SpanKey) bool { return coll.HasSpan(k.TraceID, k.SpanID) })
		if counting.sawAfter() && !slices.ContainsFunc(pending, counting.wasHanded) {
			r.recovered = true
			break
		}
		if err := coll.WaitSpans(wctx, have+1); err != nil {
			t.Errorf("%s: the outage's spans were not all received %v after the return: %v", kind, recoveryLimit, err)
			break
		}
	}
	r.recovery = time.Since(back)
	cancel()
	stopAfter()
	after := <-afterDone

	// Whatever is still on its way, then count loss over the whole run.
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := tp.ForceFlush(fctx); err != nil {
		t.Errorf("%s: TracerProvider.ForceFlush: %v", kind, err)
	}
	if err := rt.ForceFlush(fctx); err != nil {
		t.Errorf("%s: Transport.ForceFlush: %v", kind, err)
	}
	r.produced = steady.Count() + outage.Count() + after.Count()
	r.handed, r.exportErrs = counting.counts()
	for _, p := range []*otlptest.Produced{steady, outage, after} {
		for _, k := range p.MissingIDs(coll) {
			if counting.wasHanded(k) {
				r.lostTransport++
			} else {
				r.lostSDK++
			}
		}
	}
	r.dups = coll.SpanDuplicates()
	r.stats = rt.Stats()
	t.Logf("%s: recovery %v (recovered=%v), produced %d (outage %d), lost in the SDK queue %d, lost after hand-off %d, duplicates %d, max hold %v, hits while down %d",
		kind, r.recovery.Round(time.Millisecond), r.recovered, r.produced, r.outage, r.lostSDK, r.lostTransport, r.dups, r.maxHold, r.hits)
	return r
}

// recoveryHold measures how long each export call is held by the Transport.
type recoveryHold struct {
	next    http.RoundTripper
	mu      sync.Mutex
	longest time.Duration
}

func (h *recoveryHold) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := h.next.RoundTrip(req)
	took := time.Since(start)
	h.mu.Lock()
	h.longest = max(h.longest, took)
	h.mu.Unlock()
	return resp, err
}

func (h *recoveryHold) reset() {
	h.mu.Lock()
	h.longest = 0
	h.mu.Unlock()
}

func (h *recoveryHold) max() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.longest
}

// recoveryAfterName names the spans of the load after the return.
const recoveryAfterName = "after-return"

// recoveryExporter records what the batch processor handed to the
// exporter, so that spans it dropped from its own queue can be told apart
// from spans lost after the hand-off.
type recoveryExporter struct {
	sdktrace.SpanExporter
	mu     sync.Mutex
	keys   map[otlptest.SpanKey]struct{}
	handed int
	errors int
	after  bool // a span of the load after the return was handed over
}

func (e *recoveryExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	if e.keys == nil {
		e.keys = make(map[otlptest.SpanKey]struct{})
	}
	for _, s := range spans {
		sc := s.SpanContext()
		e.keys[otlptest.SpanKey{TraceID: sc.TraceID(), SpanID: sc.SpanID()}] = struct{}{}
		e.after = e.after || s.Name() == recoveryAfterName
	}
	e.handed += len(spans)
	e.mu.Unlock()
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		e.mu.Lock()
		e.errors++
		e.mu.Unlock()
	}
	return err
}

func (e *recoveryExporter) wasHanded(k otlptest.SpanKey) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.keys[k]
	return ok
}

func (e *recoveryExporter) sawAfter() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.after
}

func (e *recoveryExporter) counts() (handed, errors int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.handed, e.errors
}

// recoveryLog keeps the Transport's log lines for the end of the run (a
// background goroutine may log after the test is over).
type recoveryLog struct {
	mu    sync.Mutex
	lines []string
	done  bool
}

func (l *recoveryLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.lines = append(l.lines, strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *recoveryLog) dump(t *testing.T, kind string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	for _, line := range l.lines {
		t.Logf("%s log: %s", kind, line)
	}
}
