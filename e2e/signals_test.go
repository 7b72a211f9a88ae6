package e2e

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// TestLibraryMetricsAndLogs: a MeterProvider (PeriodicReader every 100 ms,
// otlpmetrichttp, delta temporality) and a LoggerProvider (BatchProcessor,
// otlploghttp), both through one transport, while the collector refuses
// connections for 4 s in the middle of an 8 s run. One increment and one
// log record with a unique body every 5 ms: the distinct data points at the
// receiver add up to every increment, and every log record arrives. The
// two rows count increments and log records instead of spans.
func TestLibraryMetricsAndLogs(t *testing.T) {
	t.Parallel()
	mrow := scenario(t, "library/metrics-refuse")
	lrow := scenario(t, "library/logs-refuse")
	const tick = 5 * time.Millisecond
	ctx := context.Background()
	s := startSink(t)
	proxy := otlptest.StartProxy(t, s.url)
	rt := newTransport(t, "metrics+logs", "")

	mexp, err := otlpmetrichttp.New(ctx,
		otlpmetrichttp.WithEndpointURL(proxy.URL()+"/v1/metrics"),
		otlpmetrichttp.WithHTTPClient(rt.Client()),
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
		otlploghttp.WithEndpointURL(proxy.URL()+"/v1/logs"),
		otlploghttp.WithHTTPClient(rt.Client()))
	if err != nil {
		t.Fatal(err)
	}
	clexp := &countingLogExporter{Exporter: lexp}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(clexp)))
	t.Cleanup(func() { _ = lp.Shutdown(context.Background()) })
	logger := lp.Logger("e2e")

	stopSampling := sampleBacklog(func() int { return rt.Stats().Records }, mrow)
	var increments, records int
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(tick)
		defer ticker.Stop()
		end := time.Now().Add(steady + fault + recover)
		for time.Now().Before(end) {
			<-ticker.C
			counter.Add(ctx, 1)
			increments++
			var rec otellog.Record
			rec.SetTimestamp(time.Now())
			rec.SetBody(attribute.StringValue(fmt.Sprintf("e2e log #%d", records)))
			rec.AddAttributes(attribute.Int("n", records))
			logger.Emit(ctx, rec)
			records++
		}
	}()
	time.Sleep(steady)
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	time.Sleep(fault)
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	<-done

	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
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

	st := rt.Stats()
	sum := int(s.pointSum())
	points, pointDups := s.pointCounts()
	distinctLogs, logDups := s.recordCounts()
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
		r.backlog = mrow.backlog
	})
	t.Logf("metrics: %d increments, %d distinct data points adding up to %d, %d duplicate points", increments, points, sum, pointDups)
	t.Logf("logs: %d emitted, %d distinct received, %d duplicates", records, distinctLogs, logDups)
	t.Logf("transport: %+v", st)
	if n := cmexp.failed.Load(); n != 0 {
		t.Errorf("%d metric exports failed to the SDK", n)
	}
	if n := clexp.failed.Load(); n != 0 || lrow.acked != records {
		t.Errorf("%d of %d log records acknowledged to the SDK (%d failed)", lrow.acked, records, n)
	}
	if st.Spooled == 0 {
		t.Errorf("nothing was spooled: the outage did not hit the exports")
	}
	if sum != increments {
		t.Errorf("the distinct data points add up to %d, want the %d increments (lost or counted twice)", sum, increments)
	}
	if distinctLogs != records {
		t.Errorf("%d distinct log records received, want %d", distinctLogs, records)
	}
	if st.Dropped.Total() != 0 {
		t.Errorf("the transport dropped %d exports: %+v", st.Dropped.Total(), st.Dropped)
	}
	if st.Records != 0 {
		t.Errorf("%d exports still in the spool after ForceFlush", st.Records)
	}
}

// countingMetricExporter counts the metric exports that failed to the SDK.
type countingMetricExporter struct {
	sdkmetric.Exporter
	failed atomic.Int64
}

func (c *countingMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := c.Exporter.Export(ctx, rm)
	if err != nil {
		c.failed.Add(1)
	}
	return err
}

// countingLogExporter counts the log records whose export succeeded or
// failed to the SDK.
type countingLogExporter struct {
	sdklog.Exporter
	acked, failed atomic.Int64
}

func (c *countingLogExporter) Export(ctx context.Context, records []sdklog.Record) error {
	err := c.Exporter.Export(ctx, records)
	if err != nil {
		c.failed.Add(int64(len(records)))
	} else {
		c.acked.Add(int64(len(records)))
	}
	return err
}
