package otlpretrygrpc_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"
)

// The setup for the OTLP/gRPC traces exporter: a Transport, DialOption in
// the exporter's WithDialOption, and Shutdown after the TracerProvider's.
func ExampleDialOption() {
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
		otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
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
func ExampleDialOption_metrics() {
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
		otlpmetricgrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
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
func ExampleDialOption_logs() {
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
		otlploggrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
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
