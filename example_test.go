package otlpretry_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
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

// The same for an OTLP/gRPC exporter: the Transport's DialOption in the
// exporter's WithDialOption, and Shutdown after the TracerProvider's.
func ExampleTransport_DialOption() {
	ctx := context.Background()
	collector, spoolDir, cleanup := exampleGRPCReceiver()
	defer cleanup()

	rt, err := otlpretry.New(otlpretry.WithDir(spoolDir)) // in a program: otlpretry.New()
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(ctx)
	exp, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(collector.addr), // in a program: the collector's host:4317
		otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithDialOption(rt.DialOption()))
	if err != nil {
		log.Fatal(err)
	}

	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	_, span := tp.Tracer("example").Start(ctx, "hello")
	span.End()
	if err := tp.Shutdown(ctx); err != nil { // exports what is left
		log.Fatal(err)
	}
	spans, _, _, _ := collector.counts()
	fmt.Println("spans received:", spans)
	// Output: spans received: 1
}

// One Transport serves the gRPC metrics exporter too.
func ExampleTransport_DialOption_metrics() {
	ctx := context.Background()
	collector, spoolDir, cleanup := exampleGRPCReceiver()
	defer cleanup()

	rt, err := otlpretry.New(otlpretry.WithDir(spoolDir))
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(ctx)
	exp, err := otlpmetricgrpc.New(ctx,
		otlpmetricgrpc.WithEndpoint(collector.addr),
		otlpmetricgrpc.WithInsecure(),
		otlpmetricgrpc.WithDialOption(rt.DialOption()))
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
	_, points, _, _ := collector.counts()
	fmt.Println("data points received:", points)
	// Output: data points received: 1
}

// And the gRPC logs exporter.
func ExampleTransport_DialOption_logs() {
	ctx := context.Background()
	collector, spoolDir, cleanup := exampleGRPCReceiver()
	defer cleanup()

	rt, err := otlpretry.New(otlpretry.WithDir(spoolDir))
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(ctx)
	exp, err := otlploggrpc.New(ctx,
		otlploggrpc.WithEndpoint(collector.addr),
		otlploggrpc.WithInsecure(),
		otlploggrpc.WithDialOption(rt.DialOption()))
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
	_, _, logRecords, _ := collector.counts()
	fmt.Println("log records received:", logRecords)
	// Output: log records received: 1
}

// exampleGRPCReceiver stands in for a collector: an OTLP/gRPC receiver on
// 127.0.0.1 that counts what it gets, and a spool folder that is removed
// afterwards.
func exampleGRPCReceiver() (collector *grpcCollector, spoolDir string, cleanup func()) {
	collector, err := startGRPCCollector()
	if err != nil {
		log.Fatal(err)
	}
	spoolDir, err = os.MkdirTemp("", "otlpretry-example-")
	if err != nil {
		log.Fatal(err)
	}
	return collector, spoolDir, func() {
		collector.stop()
		_ = os.RemoveAll(spoolDir)
	}
}
