package otlpretry_test

import (
	"context"
	"fmt"
	"log"
	"os"

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

// The three-line setup for traces: a Transport, its Client in the
// exporter, and Shutdown after the TracerProvider's.
func ExampleNew_traces() {
	ctx := context.Background()
	collector, spoolDir, cleanup := exampleReceiver()
	defer cleanup()

	rt, err := otlpretry.New(otlpretry.WithDir(spoolDir)) // in a program: otlpretry.New()
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(ctx)
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(collector.Endpoint(otlptest.Traces)),
		otlptracehttp.WithHTTPClient(rt.Client()))
	if err != nil {
		log.Fatal(err)
	}

	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	_, span := tp.Tracer("example").Start(ctx, "hello")
	span.End()
	if err := tp.Shutdown(ctx); err != nil { // exports what is left
		log.Fatal(err)
	}
	fmt.Println("spans received:", collector.Spans())
	// Output: spans received: 1
}

// The same Client serves the metrics exporter.
func ExampleNew_metrics() {
	ctx := context.Background()
	collector, spoolDir, cleanup := exampleReceiver()
	defer cleanup()

	rt, err := otlpretry.New(otlpretry.WithDir(spoolDir))
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(ctx)
	exp, err := otlpmetrichttp.New(ctx,
		otlpmetrichttp.WithEndpointURL(collector.Endpoint(otlptest.Metrics)),
		otlpmetrichttp.WithHTTPClient(rt.Client()))
	if err != nil {
		log.Fatal(err)
	}

	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	counter, err := mp.Meter("example").Int64Counter("requests")
	if err != nil {
		log.Fatal(err)
	}
	counter.Add(ctx, 1)
	if err := mp.Shutdown(ctx); err != nil { // collects and exports once more
		log.Fatal(err)
	}
	fmt.Println("data points received:", collector.DataPoints())
	// Output: data points received: 1
}

// And the logs exporter.
func ExampleNew_logs() {
	ctx := context.Background()
	collector, spoolDir, cleanup := exampleReceiver()
	defer cleanup()

	rt, err := otlpretry.New(otlpretry.WithDir(spoolDir))
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(ctx)
	exp, err := otlploghttp.New(ctx,
		otlploghttp.WithEndpointURL(collector.Endpoint(otlptest.Logs)),
		otlploghttp.WithHTTPClient(rt.Client()))
	if err != nil {
		log.Fatal(err)
	}

	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(exp)))
	var rec otellog.Record
	rec.SetBody(attribute.StringValue("hello"))
	lp.Logger("example").Emit(ctx, rec)
	if err := lp.Shutdown(ctx); err != nil { // exports what is left
		log.Fatal(err)
	}
	fmt.Println("log records received:", collector.LogRecords())
	// Output: log records received: 1
}

// exampleReceiver stands in for a collector: an OTLP/HTTP receiver on
// 127.0.0.1 that counts what it gets, and a spool folder that is removed
// afterwards. A program leaves the folder to its default, a folder of its
// own in the user's cache.
func exampleReceiver() (collector *otlptest.Collector, spoolDir string, cleanup func()) {
	collector, err := otlptest.NewCollector()
	if err != nil {
		log.Fatal(err)
	}
	spoolDir, err = os.MkdirTemp("", "otlpretry-example-")
	if err != nil {
		log.Fatal(err)
	}
	return collector, spoolDir, func() {
		collector.Close()
		_ = os.RemoveAll(spoolDir)
	}
}
