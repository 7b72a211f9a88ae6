package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// Timing of TestDestinations: A is down for destinationsOutage between
// two stretches with both up.
const (
	destinationsOutage = 60 * time.Second
	destinationsBefore = 2 * time.Second
	destinationsAfter  = 5 * time.Second
	// destinationsSpanRate is A's load in spans per second; B gets an
	// increment and a log record every destinationsTick.
	destinationsSpanRate = 200
	destinationsTick     = 10 * time.Millisecond
	// bDelayLimit bounds the time from produce to receipt of everything
	// B got: the logs' batch interval (1 s) and the metrics' (100 ms) with
	// a wide margin for a loaded machine, and a small fraction of A's
	// outage, which B must not wait out.
	bDelayLimit = 10 * time.Second
)

// Tokens of the two destinations.
const (
	tokenA = "Bearer e2e-token-A-4f1c"
	tokenB = "Bearer e2e-token-B-9d27"
)

// TestDestinations: one Transport under otlptracehttp, otlpmetrichttp and
// otlploghttp, each with its own endpoint and token: traces to receiver A
// (behind a fault proxy), metrics and logs to receiver B. A refuses
// connections for 60 s while spans, increments and log records are
// produced at a steady rate; B is up throughout. During A's outage B's
// exports all go direct: each reaches B's receiver once, before its export
// call returns, and B's lanes stay healthy. After A returns its backlog is
// delivered; nothing is lost on either; every request each receiver got
// carried its own token. It reports B's export-call p99, B's delay from
// produce to receipt, and the time A's backlog took to drain.
func TestDestinations(t *testing.T) {
	t.Parallel()
	arow := scenario(t, "dest/A-traces-down-60s")
	mrow := scenario(t, "dest/B-metrics-up")
	lrow := scenario(t, "dest/B-logs-up")
	ctx := context.Background()

	var delays delayLog
	sinkA := startSink(t)
	sinkB := startObservedSink(t, delays.metrics, delays.logs)
	frontA := startAuthFront(t, sinkA.url, tokenA)
	frontB := startAuthFront(t, sinkB.url, tokenB)
	proxyA := otlptest.StartProxy(t, frontA.url)
	aURL := proxyA.URL() + "/v1/traces"

	rt := newTransport(t, "destinations", "")
	timed := &timedTransport{next: rt, follow: strings.TrimPrefix(frontB.url, "http://")}
	client := &http.Client{Transport: timed}

	texp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(aURL),
		otlptracehttp.WithHeaders(map[string]string{"Authorization": tokenA}),
		otlptracehttp.WithHTTPClient(client))
	if err != nil {
		t.Fatal(err)
	}
	cexp := &countingExporter{SpanExporter: texp}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(cexp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	mexp, err := otlpmetrichttp.New(ctx,
		otlpmetrichttp.WithEndpointURL(frontB.url+"/v1/metrics"),
		otlpmetrichttp.WithHeaders(map[string]string{"Authorization": tokenB}),
		otlpmetrichttp.WithHTTPClient(client),
		otlpmetrichttp.WithTemporalitySelector(sdkmetric.DeltaTemporalitySelector))
	if err != nil {
		t.Fatal(err)
	}
	cmexp := &countingMetricExporter{Exporter: mexp}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(
		sdkmetric.NewPeriodicReader(cmexp, sdkmetric.WithInterval(100*time.Millisecond))))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	counter, err := mp.Meter("e2e").Int64Counter("e2e.increments")
	if err != nil {
		t.Fatal(err)
	}

	lexp, err := otlploghttp.New(ctx,
		otlploghttp.WithEndpointURL(frontB.url+"/v1/logs"),
		otlploghttp.WithHeaders(map[string]string{"Authorization": tokenB}),
		otlploghttp.WithHTTPClient(client))
	if err != nil {
		t.Fatal(err)
	}
	clexp := &countingLogExporter{Exporter: lexp}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(clexp)))
	t.Cleanup(func() { _ = lp.Shutdown(context.Background()) })
	logger := lp.Logger("e2e")

	total := destinationsBefore + destinationsOutage + destinationsAfter
	stopSampling := sampleBacklog(func() int { return rt.Stats().Records }, arow)
	start := time.Now()
	var load sync.WaitGroup
	var spans *otlptest.Produced
	load.Go(func() { spans = otlptest.SpanLoad{Rate: destinationsSpanRate, Duration: total}.Run(ctx, tp) })
	var increments, records int
	load.Go(func() {
		ticker := time.NewTicker(destinationsTick)
		defer ticker.Stop()
		for end := start.Add(total); time.Now().Before(end); {
			<-ticker.C
			counter.Add(ctx, 1)
			increments++
			var rec otellog.Record
			rec.SetTimestamp(time.Now())
			rec.SetBody(attribute.StringValue(fmt.Sprintf("e2e destinations log #%d", records)))
			logger.Emit(ctx, rec)
			records++
		}
	})

	time.Sleep(time.Until(start.Add(destinationsBefore)))
	if err := proxyA.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	watch := watchDestinations(rt, frontB.url)
	time.Sleep(time.Until(start.Add(destinationsBefore + destinationsOutage)))
	seen := watch()
	if err := proxyA.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	// A's backlog drains while the load goes on: the first moment the
	// spool is empty again.
	drain, drained := drainTime(rt, up, flushLimit)
	load.Wait()

	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	if err := tp.ForceFlush(fctx); err != nil {
		t.Errorf("TracerProvider.ForceFlush: %v", err)
	}
	if err := mp.ForceFlush(fctx); err != nil {
		t.Errorf("MeterProvider.ForceFlush: %v", err)
	}
	if err := lp.ForceFlush(fctx); err != nil {
		t.Errorf("LoggerProvider.ForceFlush: %v", err)
	}
	if err := rt.ForceFlush(fctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}
	stopSampling()

	// The counts, as in every scenario.
	ids := spans.IDs()
	received, dups := sinkA.spanCounts()
	acked, _ := cexp.counts()
	arow.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = len(ids), acked, received, dups
		r.lost = sinkA.missing(ids)
	})
	checkCounts(t, arow, 0)
	sum := int(sinkB.pointSum())
	_, pointDups := sinkB.pointCounts()
	distinctLogs, logDups := sinkB.recordCounts()
	mrow.set(func(r *row) {
		r.counted = true
		r.produced, r.received, r.dups = increments, sum, pointDups
		if cmexp.failed.Load() == 0 {
			r.acked = increments
		}
		r.lost = max(increments-sum, 0)
	})
	lrow.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = records, int(clexp.acked.Load()), distinctLogs, logDups
		r.lost = max(records-distinctLogs, 0)
	})
	if n := cmexp.failed.Load(); n != 0 {
		t.Errorf("%d metric exports failed to the SDK", n)
	}
	if sum != increments {
		t.Errorf("B's distinct data points add up to %d, want the %d increments (lost or counted twice)", sum, increments)
	}
	if n := clexp.failed.Load(); n != 0 || lrow.acked != records {
		t.Errorf("%d of %d log records acknowledged to the SDK (%d failed)", lrow.acked, records, n)
	}
	if distinctLogs != records {
		t.Errorf("%d distinct log records at B, want %d", distinctLogs, records)
	}
	// Each signal went to its own destination only.
	if n, _ := sinkA.pointCounts(); n != 0 {
		t.Errorf("A received %d data points, want none", n)
	}
	if n, _ := sinkA.recordCounts(); n != 0 {
		t.Errorf("A received %d log records, want none", n)
	}
	if n, _ := sinkB.spanCounts(); n != 0 {
		t.Errorf("B received %d spans, want none", n)
	}
	checkAuth(t, "A", frontA)
	checkAuth(t, "B", frontB)

	// B went direct throughout: every export reached B once, before its
	// call returned (a stored one returns first and arrives later, from
	// the sender, under another export's number).
	calls := timed.followed()
	arrivals := frontB.arrivals()
	var took []time.Duration
	duringOutage, notDirect := 0, 0
	for _, c := range calls {
		took = append(took, c.took)
		if c.start.After(down) && c.end.Before(up) {
			duringOutage++
		}
		at := arrivals[c.id]
		switch {
		case c.err != nil || c.status/100 != 2:
			t.Errorf("B's export %s (%s) ended with status %d, error %v", c.id, c.path, c.status, c.err)
		case len(at) != 1 || at[0].After(c.end):
			notDirect++
			if notDirect <= 3 {
				t.Errorf("B's export %s (%s), call ended %s after start: arrived at B at %v, want once before the call returned",
					c.id, c.path, c.end.Sub(start).Round(time.Millisecond), offsets(at, start))
			}
		}
	}
	if notDirect > 0 {
		t.Errorf("%d of B's %d exports did not go direct", notDirect, len(calls))
	}
	if len(arrivals) > len(calls) {
		t.Errorf("B got %d numbered exports, more than the %d calls made", len(arrivals), len(calls))
	}
	if duringOutage == 0 {
		t.Errorf("no export to B during A's outage")
	}
	for _, v := range seen.bad {
		t.Errorf("during A's outage: %s", v)
	}
	t.Logf("Stats during A's outage: A listed in %d samples, waiting in %d; B's destinations listed in %d", seen.aSamples, seen.aWaiting, seen.bSamples)
	if seen.aSamples == 0 || seen.aWaiting == 0 {
		t.Errorf("A was shown waiting in %d of %d samples of Stats during its outage, want some", seen.aWaiting, seen.aSamples)
	}

	st := rt.Stats()
	if st.Spooled == 0 {
		t.Errorf("nothing was spooled: A's outage did not hit its exports")
	}
	if a := timed.others(); st.Spooled > uint64(a) {
		t.Errorf("%d exports spooled, more than the %d exports to A: some of B's were stored", st.Spooled, a)
	}
	if st.Quarantined != 0 || st.Dropped.Total() != 0 || st.Records != 0 {
		t.Errorf("transport: quarantined %d, dropped %+v, %d left in the spool; want none", st.Quarantined, st.Dropped, st.Records)
	}
	if !drained {
		t.Errorf("A's backlog was not delivered within %v of its return", flushLimit)
	}

	mdel, ldel := delays.during(down, up)
	p99 := quantile(took, 0.99)
	t.Logf("A down %v; A: %d exports, %d spooled, backlog drained %v after its return (largest %d exports)",
		up.Sub(down).Round(time.Millisecond), timed.others(), st.Spooled, drain.Round(time.Millisecond), arow.backlog)
	t.Logf("B: %d export calls (%d during A's outage), call p50 %v p99 %v max %v",
		len(calls), duringOutage, quantile(took, 0.5), p99, quantile(took, 1))
	t.Logf("B delay from produce to receipt during A's outage: metric points (collection→receipt) p50 %v p99 %v max %v of %d; log records (emit→receipt, the SDK batches for 1 s) p50 %v p99 %v max %v of %d",
		quantile(mdel, 0.5), quantile(mdel, 0.99), quantile(mdel, 1), len(mdel),
		quantile(ldel, 0.5), quantile(ldel, 0.99), quantile(ldel, 1), len(ldel))
	t.Logf("transport: %+v", st)
	if len(mdel) == 0 || len(ldel) == 0 {
		t.Errorf("B received %d data points and %d log records produced during A's outage, want some of each", len(mdel), len(ldel))
	}
	if m := max(quantile(mdel, 1), quantile(ldel, 1)); m > bDelayLimit {
		t.Errorf("B's data waited up to %v from produce to receipt during A's outage, want at most %v", m, bDelayLimit)
	}
}

// drainTime polls rt every 20 ms from since until its spool is empty and
// returns how long that took, or false after limit.
func drainTime(rt *otlpretry.Transport, since time.Time, limit time.Duration) (time.Duration, bool) {
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for time.Since(since) < limit {
		if rt.Stats().Records == 0 {
			return time.Since(since), true
		}
		<-poll.C
	}
	return 0, false
}

// timedTransport sits between the OTel exporters and the Transport and
// times every export call. Calls to the host follow are numbered in
// exportIDHeader so that their arrival can be matched; the rest are
// counted.
type timedTransport struct {
	next   http.RoundTripper
	follow string // host:port

	n     atomic.Int64
	other atomic.Int64

	mu    sync.Mutex
	calls []exportCall
}

// exportCall is one export call to the followed host.
type exportCall struct {
	id, path   string
	start, end time.Time
	took       time.Duration
	status     int
	err        error
}

func (tt *timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != tt.follow {
		tt.other.Add(1)
		return tt.next.RoundTrip(req)
	}
	id := strconv.FormatInt(tt.n.Add(1), 10)
	req = req.Clone(req.Context())
	req.Header.Set(exportIDHeader, id)
	start := time.Now()
	resp, err := tt.next.RoundTrip(req)
	c := exportCall{id: id, path: req.URL.Path, start: start, end: time.Now(), err: err}
	c.took = c.end.Sub(start)
	if resp != nil {
		c.status = resp.StatusCode
	}
	tt.mu.Lock()
	tt.calls = append(tt.calls, c)
	tt.mu.Unlock()
	return resp, err
}

func (tt *timedTransport) followed() []exportCall {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return slices.Clone(tt.calls)
}

func (tt *timedTransport) others() int { return int(tt.other.Load()) }

// destinationsSeen is what watchDestinations saw in Stats.
type destinationsSeen struct {
	aSamples, aWaiting int
	bSamples           int      // B listed (a destination only ever reached direct may not be)
	bad                []string // B shown other than healthy, at most a few
}

// watchDestinations samples rt.Stats every 100 ms until the returned stop
// is called: every destination under bBase must be healthy with its
// circuit closed; any other (A) is counted when shown waiting with a
// cause.
func watchDestinations(rt *otlpretry.Transport, bBase string) (stop func() destinationsSeen) {
	done := make(chan struct{})
	var seen destinationsSeen
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, d := range rt.Stats().Destinations {
				if strings.HasPrefix(d.URL, bBase) {
					seen.bSamples++
					if (d.State != "healthy" || d.CircuitOpen) && len(seen.bad) < 5 {
						seen.bad = append(seen.bad, fmt.Sprintf("B's destination shown %+v", d))
					}
					continue
				}
				seen.aSamples++
				if d.State == "waiting" && d.Cause != "" {
					seen.aWaiting++
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() destinationsSeen { close(done); wg.Wait(); return seen }
}

// delayLog records, for every data point and log record a receiver
// accepted, when it was produced (its timestamp) and how long it took to
// arrive.
type delayLog struct {
	mu             sync.Mutex
	points, record []delay
}

type delay struct {
	produced time.Time
	took     time.Duration
}

func (l *delayLog) metrics(md pmetric.Metrics) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				if ms.At(k).Type() != pmetric.MetricTypeSum {
					continue
				}
				dps := ms.At(k).Sum().DataPoints()
				for n := range dps.Len() {
					at := dps.At(n).Timestamp().AsTime()
					l.points = append(l.points, delay{at, now.Sub(at)})
				}
			}
		}
	}
}

func (l *delayLog) logs(ld plog.Logs) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		sls := rls.At(i).ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				at := lrs.At(k).Timestamp().AsTime()
				l.record = append(l.record, delay{at, now.Sub(at)})
			}
		}
	}
}

// during returns the delays of the points and records produced between
// from and to.
func (l *delayLog) during(from, to time.Time) (points, records []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pick := func(ds []delay) []time.Duration {
		var out []time.Duration
		for _, d := range ds {
			if !d.produced.Before(from) && d.produced.Before(to) {
				out = append(out, d.took)
			}
		}
		return out
	}
	return pick(l.points), pick(l.record)
}

// quantile returns the q-quantile of ds (nearest rank; 1 is the largest),
// 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// offsets gives times as offsets from start, for messages.
func offsets(ts []time.Time, start time.Time) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t.Sub(start).Round(time.Millisecond)
	}
	return out
}
