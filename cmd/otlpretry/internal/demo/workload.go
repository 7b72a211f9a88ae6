package demo

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// workload produces spans at a steady rate through the SDK, and with each
// span a counter increment and a histogram record; every fourth span also
// emits a log record with a body of its own.
type workload struct {
	tracer  trace.Tracer
	logger  otellog.Logger
	counter metric.Int64Counter
	latency metric.Float64Histogram

	spans, logs atomic.Int64
}

var routes = []attribute.KeyValue{
	attribute.String("route", "/checkout"),
	attribute.String("route", "/cart"),
	attribute.String("route", "/search"),
}

func newWorkload(tp trace.TracerProvider, mp metric.MeterProvider, lp otellog.LoggerProvider) (*workload, error) {
	const scope = "github.com/otlpretry/otlpretry/cmd/otlpretry/demo"
	m := mp.Meter(scope)
	counter, err := m.Int64Counter("demo.requests", metric.WithDescription("Requests handled."))
	if err != nil {
		return nil, err
	}
	latency, err := m.Float64Histogram("demo.request.duration", metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	return &workload{
		tracer:  tp.Tracer(scope),
		logger:  lp.Logger(scope),
		counter: counter,
		latency: latency,
	}, nil
}

// run produces rate spans per second until ctx ends, catching up on
// elapsed time at each tick so that a slow export never lowers the rate.
func (w *workload) run(ctx context.Context, rate int) {
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var n int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		target := int64(rate) * int64(time.Since(start)) / int64(time.Second)
		for ; n < target; n++ {
			w.one(ctx, n)
		}
	}
}

func (w *workload) one(ctx context.Context, n int64) {
	route := routes[n%int64(len(routes))]
	spanCtx, span := w.tracer.Start(ctx, "GET "+route.Value.AsString(),
		trace.WithNewRoot(), trace.WithAttributes(route, attribute.Int64("demo.seq", n)))
	w.counter.Add(spanCtx, 1, metric.WithAttributes(route))
	w.latency.Record(spanCtx, float64(n%50)/1000, metric.WithAttributes(route))
	if n%4 == 0 {
		var rec otellog.Record
		rec.SetTimestamp(time.Now())
		rec.SetSeverity(otellog.SeverityInfo)
		rec.SetBody(attribute.StringValue(fmt.Sprintf("demo request #%d handled", n)))
		rec.AddAttributes(route)
		w.logger.Emit(spanCtx, rec)
		w.logs.Add(1)
	}
	span.End()
	w.spans.Add(1)
}

// countingExporter counts the metric data points handed to the exporter,
// delivered or not: the "produced" of the summary.
type countingExporter struct {
	sdkmetric.Exporter
	points atomic.Int64
}

func (c *countingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	c.points.Add(int64(countPoints(rm)))
	return c.Exporter.Export(ctx, rm)
}

func countPoints(rm *metricdata.ResourceMetrics) int {
	n := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				n += len(d.DataPoints)
			case metricdata.Sum[float64]:
				n += len(d.DataPoints)
			case metricdata.Gauge[int64]:
				n += len(d.DataPoints)
			case metricdata.Gauge[float64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[int64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[float64]:
				n += len(d.DataPoints)
			case metricdata.ExponentialHistogram[int64]:
				n += len(d.DataPoints)
			case metricdata.ExponentialHistogram[float64]:
				n += len(d.DataPoints)
			case metricdata.Summary:
				n += len(d.DataPoints)
			}
		}
	}
	return n
}
