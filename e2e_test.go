package otlpretry_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// The trace outage scenario: steady load, an outage, recovery under load.
const (
	e2eSteady  = 3 * time.Second
	e2eOutage  = 5 * time.Second
	e2eRecover = 3 * time.Second
	// e2eFlush bounds each final ForceFlush.
	e2eFlush = 30 * time.Second
	// e2eSlowCall is an export call that overstayed the transport's hold.
	e2eSlowCall = otlpretry.DefaultMaxHold + 100*time.Millisecond
)

// e2eRate is the span rate of each load. The full 2,000 spans/s runs
// without the race detector. Under it, span creation and export are several
// times slower and six loads share the machine (three outage kinds, ours
// and plain), so the rate is halved and the outages stay as long.
func e2eRate() int {
	if raceEnabled {
		return 1000
	}
	return 2000
}

type e2eOutageKind struct {
	name string
	mode otlptest.Mode
}

var e2eOutageKinds = []e2eOutageKind{
	{"refused", otlptest.Refuse},
	{"503", otlptest.HTTPStatus(http.StatusServiceUnavailable, "")},
	{"blackhole", otlptest.Blackhole},
}

// e2eTraceRow is one line of the delivery table.
type e2eTraceRow struct {
	kind, exporter string
	produced       int           // spans ended in the SDK
	handed         int           // spans the batch processor passed to the exporter
	exportErrs     int           // exports that returned an error to the SDK
	received       int           // distinct spans the collector accepted
	lost           int           // produced but never accepted
	dups           int           // accepted more than once
	maxCall        time.Duration // longest export call
	slowCalls      int           // export calls longer than e2eSlowCall
	stats          string
}

// TestE2ETracesSurviveOutages drives the real SDK (TracerProvider, default
// BatchSpanProcessor, otlptracehttp) at e2eRate spans/s through a fault
// proxy into a collector, with an outage of each kind in the middle, once
// through the transport ("ours") and once with the plain exporter. Ours
// must lose nothing (duplicates are reported; delivery is at least once);
// the plain exporter's loss is only reported.
func TestE2ETracesSurviveOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("about 20 s of load; skipped with -short")
	}
	// The plain exporter's failures are counted per exporter (the errors
	// column); the SDK's default handler would print each one.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	rate := e2eRate()
	var (
		mu   sync.Mutex
		rows = map[string][]e2eTraceRow{}
	)
	t.Run("kind", func(t *testing.T) {
		for _, k := range e2eOutageKinds {
			t.Run(k.name, func(t *testing.T) {
				t.Parallel()
				r := runE2ETraceOutage(t, k, rate)
				mu.Lock()
				rows[k.name] = r
				mu.Unlock()
			})
		}
	})

	var b strings.Builder
	fmt.Fprintf(&b, "%d spans/s, %v steady, %v outage, %v recovery; exported: spans the batch processor handed to the exporter;\n", rate, e2eSteady, e2eOutage, e2eRecover)
	fmt.Fprintf(&b, "max-call: longest export call; slow: export calls over %v\n", e2eSlowCall)
	fmt.Fprintf(&b, "%-9s %-5s %8s %8s %8s %8s %5s %6s %8s %5s\n",
		"kind", "exp", "produced", "exported", "received", "lost", "dups", "errors", "max-call", "slow")
	for _, k := range e2eOutageKinds {
		for _, r := range rows[k.name] {
			fmt.Fprintf(&b, "%-9s %-5s %8d %8d %8d %8d %5d %6d %8v %5d\n",
				r.kind, r.exporter, r.produced, r.handed, r.received, r.lost, r.dups, r.exportErrs, r.maxCall.Round(time.Millisecond), r.slowCalls)
		}
	}
	for _, k := range e2eOutageKinds {
		for _, r := range rows[k.name] {
			if r.stats != "" {
				fmt.Fprintf(&b, "%s %s transport: %s\n", r.kind, r.exporter, r.stats)
			}
		}
	}
	t.Log("\n" + b.String())
}

func runE2ETraceOutage(t *testing.T, kind e2eOutageKind, rate int) []e2eTraceRow {
	ours := newE2ETracePipe(t, kind.name, true)
	plain := newE2ETracePipe(t, kind.name, false)
	ctx := context.Background()

	var produced [2]*otlptest.Produced
	var wg sync.WaitGroup
	for i, p := range []*e2eTracePipe{ours, plain} {
		wg.Go(func() { produced[i] = otlptest.RunSpans(ctx, p.tp, rate, e2eSteady+e2eOutage+e2eRecover) })
	}
	start := time.Now()
	setModes := func(at time.Duration, m otlptest.Mode) {
		time.Sleep(time.Until(start.Add(at)))
		for _, p := range []*e2eTracePipe{ours, plain} {
			if err := p.proxy.SetMode(m); err != nil {
				t.Errorf("%s: SetMode(%v): %v", p.name, m, err)
			}
		}
	}
	setModes(e2eSteady, kind.mode)
	setModes(e2eSteady+e2eOutage, otlptest.Pass)
	wg.Wait()

	// Flush both at once: the plain exporter may sit in its own retry
	// backoff for a while.
	var flushErr [2]error
	var flushTook [2]time.Duration
	for i, p := range []*e2eTracePipe{ours, plain} {
		wg.Go(func() {
			fctx, cancel := context.WithTimeout(ctx, e2eFlush)
			defer cancel()
			begin := time.Now()
			flushErr[i] = p.tp.ForceFlush(fctx)
			if p.rt != nil && flushErr[i] == nil {
				flushErr[i] = p.rt.ForceFlush(fctx)
			}
			flushTook[i] = time.Since(begin)
		})
	}
	wg.Wait()
	t.Logf("flush took: ours %v, plain %v", flushTook[0].Round(time.Millisecond), flushTook[1].Round(time.Millisecond))
	if flushErr[0] != nil {
		t.Errorf("ours: ForceFlush: %v", flushErr[0])
	}
	if flushErr[1] != nil {
		t.Logf("plain: ForceFlush: %v", flushErr[1])
	}

	rows := make([]e2eTraceRow, 2)
	for i, p := range []*e2eTracePipe{ours, plain} {
		rows[i] = p.row(kind.name, produced[i])
	}
	r := rows[0]
	if st := ours.rt.Stats(); st.Retried == 0 && st.Spooled == 0 {
		t.Errorf("ours: the transport saw no failure: the outage did not hit the exports")
	}
	if r.lost != 0 {
		missing := produced[0].MissingIDs(ours.coll)
		t.Errorf("ours lost %d of %d spans: the batch processor dropped %d from its queue (longest export call %v, %d calls over %v), "+
			"%d exports failed, %d spans handed to the exporter never arrived; first missing %v, last %v; transport %s",
			r.lost, r.produced, r.produced-r.handed, r.maxCall.Round(time.Millisecond), r.slowCalls, e2eSlowCall,
			r.exportErrs, r.handed-r.received, missing[0], missing[len(missing)-1], r.stats)
	}
	// Delivery is at least once: a batch in flight when the fault starts
	// may arrive twice (512 spans, over 2% of a run). A tenth is far
	// beyond that and would mean resends without cause.
	if r.dups*10 > r.produced {
		t.Errorf("ours delivered %d duplicate spans, over 10%% of %d", r.dups, r.produced)
	}
	for _, r := range rows {
		t.Logf("%-9s %-5s produced=%d exported=%d received=%d lost=%d duplicates=%d errors=%d max-call=%v",
			r.kind, r.exporter, r.produced, r.handed, r.received, r.lost, r.dups, r.exportErrs, r.maxCall.Round(time.Millisecond))
	}
	return rows
}

// e2eTracePipe is TracerProvider → exporter [→ transport] → Proxy → Collector.
type e2eTracePipe struct {
	name  string
	coll  *otlptest.Collector
	proxy *otlptest.Proxy
	rt    *otlpretry.Transport // nil for the plain exporter
	exp   *e2eCountingExporter
	tp    *sdktrace.TracerProvider
}

func newE2ETracePipe(t *testing.T, kind string, ours bool) *e2eTracePipe {
	t.Helper()
	ctx := context.Background()
	p := &e2eTracePipe{name: kind + "/plain"}
	p.coll = otlptest.StartCollector(t)
	p.proxy = otlptest.StartProxy(t, p.coll.URL())
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(p.proxy.URL() + "/v1/traces")}
	if ours {
		p.name = kind + "/ours"
		p.rt = e2eTransport(t, p.name)
		opts = append(opts, otlptracehttp.WithHTTPClient(p.rt.Client()))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p.exp = &e2eCountingExporter{SpanExporter: exp}
	p.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(p.exp))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.tp.Shutdown(sctx)
	})
	return p
}

func (p *e2eTracePipe) row(kind string, produced *otlptest.Produced) e2eTraceRow {
	p.exp.mu.Lock()
	defer p.exp.mu.Unlock()
	r := e2eTraceRow{
		kind:       kind,
		exporter:   "plain",
		produced:   produced.Count(),
		handed:     p.exp.handed,
		exportErrs: p.exp.errors,
		received:   p.coll.Spans(),
		lost:       produced.Missing(p.coll),
		dups:       p.coll.SpanDuplicates(),
		maxCall:    p.exp.maxCall,
		slowCalls:  p.exp.slow,
	}
	if p.rt != nil {
		r.exporter = "ours"
		st := p.rt.Stats()
		r.stats = fmt.Sprintf("direct=%d spooled=%d delivered=%d retried=%d dropped=%d records=%d",
			st.Direct, st.Spooled, st.Delivered, st.Retried, st.Dropped.Total(), st.Records)
	}
	return r
}

// e2eCountingExporter sits between the batch processor and the OTLP exporter
// and changes nothing: it counts what the SDK handed over, so that a loss
// can be told apart from spans the batch processor dropped from its queue
// while the exporter was held, and records the longest export call.
type e2eCountingExporter struct {
	sdktrace.SpanExporter
	mu      sync.Mutex
	handed  int
	errors  int
	maxCall time.Duration
	slow    int
}

func (c *e2eCountingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	start := time.Now()
	err := c.SpanExporter.ExportSpans(ctx, spans)
	took := time.Since(start)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handed += len(spans)
	if err != nil {
		c.errors++
	}
	c.maxCall = max(c.maxCall, took)
	if took > e2eSlowCall {
		c.slow++
	}
	return err
}

// e2eTransport is a Transport with every default but the folder, logging
// to the test.
func e2eTransport(t *testing.T, name string) *otlpretry.Transport {
	t.Helper()
	rt, err := otlpretry.New(
		otlpretry.WithDir(t.TempDir()),
		otlpretry.WithLogger(otlptest.Logger(t, name)),
	)
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

// TestE2EMetricsAndLogsSurviveRefusedOutage sends metrics (MeterProvider,
// PeriodicReader, otlpmetrichttp) and logs (LoggerProvider,
// BatchProcessor, otlploghttp) through one transport while the collector
// refuses connections for a while, and checks that every counter increment
// and every log record arrived.
//
// Metrics use delta temporality, where a lost export is lost increments:
// the sum of the received deltas, each collection interval counted once
// (a resend repeats its interval exactly), must equal the increments made.
func TestE2EMetricsAndLogsSurviveRefusedOutage(t *testing.T) {
	const (
		steady  = time.Second
		outage  = 2 * time.Second
		recover = 1500 * time.Millisecond
		tick    = 5 * time.Millisecond
	)
	ctx := context.Background()
	coll := otlptest.StartCollector(t)
	tap := startE2EMetricsTap(t, coll.URL(), "e2e.increments")
	proxy := otlptest.StartProxy(t, tap.url)
	rt := e2eTransport(t, "metrics+logs")

	mexp, err := otlpmetrichttp.New(ctx,
		otlpmetrichttp.WithEndpointURL(proxy.URL()+"/v1/metrics"),
		otlpmetrichttp.WithHTTPClient(rt.Client()),
		otlpmetrichttp.WithTemporalitySelector(sdkmetric.DeltaTemporalitySelector))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(
		sdkmetric.NewPeriodicReader(mexp, sdkmetric.WithInterval(100*time.Millisecond))))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	counter, err := mp.Meter("e2e").Int64Counter("e2e.increments")
	if err != nil {
		t.Fatal(err)
	}

	lexp, err := otlploghttp.New(ctx,
		otlploghttp.WithEndpointURL(proxy.URL()+"/v1/logs"),
		otlploghttp.WithHTTPClient(rt.Client()))
	if err != nil {
		t.Fatal(err)
	}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(lexp)))
	t.Cleanup(func() { _ = lp.Shutdown(context.Background()) })
	logger := lp.Logger("e2e")

	// One increment and one log record per tick, before, during and after
	// the outage.
	var increments, records int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(tick)
		defer ticker.Stop()
		end := time.Now().Add(steady + outage + recover)
		for time.Now().Before(end) {
			<-ticker.C
			counter.Add(ctx, 1)
			increments++
			var rec otellog.Record
			rec.SetBody(attribute.StringValue(fmt.Sprintf("e2e log #%d", records)))
			logger.Emit(ctx, rec)
			records++
		}
	}()
	time.Sleep(steady)
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outage)
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	<-done

	fctx, cancel := context.WithTimeout(ctx, e2eFlush)
	defer cancel()
	if err := mp.ForceFlush(fctx); err != nil {
		t.Fatalf("MeterProvider.ForceFlush: %v", err)
	}
	if err := lp.ForceFlush(fctx); err != nil {
		t.Fatalf("LoggerProvider.ForceFlush: %v", err)
	}
	if err := rt.ForceFlush(fctx); err != nil {
		t.Fatalf("Transport.ForceFlush: %v", err)
	}

	st := rt.Stats()
	sum, intervals, dupIntervals := tap.result()
	t.Logf("metrics: %d increments, received sum %d over %d intervals (%d resent), %d data points at the collector",
		increments, sum, intervals, dupIntervals, coll.DataPoints())
	t.Logf("logs: %d emitted, %d distinct received, %d duplicates",
		records, coll.UniqueLogRecords(), coll.LogRecords()-coll.UniqueLogRecords())
	t.Logf("transport: direct=%d spooled=%d delivered=%d retried=%d dropped=%d",
		st.Direct, st.Spooled, st.Delivered, st.Retried, st.Dropped.Total())
	if st.Spooled == 0 {
		t.Errorf("nothing was spooled: the outage did not hit the exports")
	}
	if sum != increments {
		t.Errorf("received counter sum %d, want the %d increments made", sum, increments)
	}
	if got := int64(coll.UniqueLogRecords()); got != records {
		t.Errorf("received %d distinct log records, want %d", got, records)
	}
}

// e2eMetricsTap sits between the proxy and the collector: it forwards every
// request and, for each metrics export the collector accepted, records the
// delta data points of one counter by collection interval.
type e2eMetricsTap struct {
	url    string
	next   string
	metric string
	client *http.Client

	mu     sync.Mutex
	deltas map[[2]uint64]int64 // (start, time) → value
	resent int
}

func startE2EMetricsTap(t *testing.T, next, metric string) *e2eMetricsTap {
	tr := &http.Transport{}
	m := &e2eMetricsTap{next: next, metric: metric, client: &http.Client{Transport: tr}, deltas: map[[2]uint64]int64{}}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	t.Cleanup(tr.CloseIdleConnections)
	m.url = srv.URL
	return m
}

func (m *e2eMetricsTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, m.next+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := m.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 && r.URL.Path == "/v1/metrics" {
		m.record(body)
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

func (m *e2eMetricsTap) record(body []byte) {
	var req collectormetrics.ExportMetricsServiceRequest
	if proto.Unmarshal(body, &req) != nil {
		return // the collector would have refused it
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, metric := range sm.GetMetrics() {
				if metric.GetName() != m.metric {
					continue
				}
				for _, dp := range metric.GetSum().GetDataPoints() {
					k := [2]uint64{dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano()}
					if _, seen := m.deltas[k]; seen {
						m.resent++
						continue
					}
					m.deltas[k] = dp.GetAsInt()
				}
			}
		}
	}
}

// result returns the sum over distinct intervals, their number, and how
// many data points were resends of an interval already counted.
func (m *e2eMetricsTap) result() (sum int64, intervals, resent int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.deltas {
		sum += v
	}
	return sum, len(m.deltas), m.resent
}
