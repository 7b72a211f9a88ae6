package otlptest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func recordingProvider(t *testing.T, extra ...sdktrace.SpanProcessor) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	sr := tracetest.NewSpanRecorder()
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSpanProcessor(sr)}
	for _, sp := range extra {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, sr
}

func TestRunSpansProducesExactCount(t *testing.T) {
	tp, sr := recordingProvider(t)
	const rate, d = 1000, 100 * time.Millisecond
	p := RunSpans(context.Background(), tp, rate, d)

	if p.Count() != 100 {
		t.Fatalf("Count() = %d, want 100", p.Count())
	}
	ended := sr.Ended()
	if len(ended) != 100 {
		t.Fatalf("SDK saw %d spans, want 100", len(ended))
	}
	ids := p.IDs()
	seen := make(map[SpanKey]bool)
	for i, s := range ended {
		sc := s.SpanContext()
		k := SpanKey{TraceID: sc.TraceID(), SpanID: sc.SpanID()}
		if ids[i] != k {
			t.Fatalf("IDs()[%d] = %v, SDK ended %v", i, ids[i], k)
		}
		if seen[k] {
			t.Fatalf("duplicate span %v", k)
		}
		seen[k] = true
		if s.Parent().IsValid() {
			t.Fatal("spans must be roots")
		}
	}
	if p.Elapsed() < d {
		t.Fatalf("Elapsed() = %v, want >= %v (rate must be paced, not burst)", p.Elapsed(), d)
	}
}

func TestSpanLoadOptions(t *testing.T) {
	tp, sr := recordingProvider(t)
	l := SpanLoad{Rate: 500, Duration: 20 * time.Millisecond, Tick: time.Millisecond, Name: "load",
		Attributes: []attribute.KeyValue{attribute.String("k", "v")}}
	if n := l.Run(context.Background(), tp).Count(); n != 10 {
		t.Fatalf("Count() = %d, want 10", n)
	}
	for _, s := range sr.Ended() {
		if s.Name() != "load" || len(s.Attributes()) != 1 || s.Attributes()[0] != attribute.String("k", "v") {
			t.Fatalf("span %q attrs %v", s.Name(), s.Attributes())
		}
	}
}

func TestRunSpansNothingToDo(t *testing.T) {
	tp, sr := recordingProvider(t)
	for _, l := range []SpanLoad{{Rate: 0, Duration: time.Second}, {Rate: 100, Duration: 0}, {Rate: 10, Duration: time.Millisecond}} {
		if n := l.Run(context.Background(), tp).Count(); n != 0 {
			t.Fatalf("%+v produced %d", l, n)
		}
	}
	if len(sr.Ended()) != 0 {
		t.Fatal("spans produced")
	}
}

// cancelAfter cancels a context once n spans have ended, to stop a load at
// a point chosen by the test rather than by the clock.
type cancelAfter struct {
	sdktrace.SpanProcessor
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) OnEnd(sdktrace.ReadOnlySpan) {
	if c.n--; c.n == 0 {
		c.cancel()
	}
}

func TestRunSpansStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tp, sr := recordingProvider(t, &cancelAfter{SpanProcessor: tracetest.NewSpanRecorder(), n: 50, cancel: cancel})

	p := RunSpans(ctx, tp, 1000, 10*time.Second)
	if p.Count() < 50 || p.Count() >= 10000 {
		t.Fatalf("Count() = %d, want the load cut short after 50", p.Count())
	}
	if p.Count() != len(sr.Ended()) {
		t.Fatalf("Count() = %d but SDK saw %d: the count must be exact", p.Count(), len(sr.Ended()))
	}
}

func TestRunSpansThroughCollectorNoLoss(t *testing.T) {
	c := StartCollector(t)
	tp := newTracerProvider(t, c.Endpoint(Traces))
	p := RunSpans(context.Background(), tp, 2000, 200*time.Millisecond)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.Count() != 400 {
		t.Fatalf("Count() = %d, want 400", p.Count())
	}
	if m := p.Missing(c); m != 0 {
		t.Fatalf("Missing() = %d, want 0", m)
	}
	if c.Spans() != 400 || c.SpanDuplicates() != 0 {
		t.Fatalf("Spans %d dups %d", c.Spans(), c.SpanDuplicates())
	}
}

func TestProducedMissingPinpointsLoss(t *testing.T) {
	c := StartCollector(t)
	// A synchronous exporter without retries makes each span its own
	// request, so exactly the first three spans meet the three 503s.
	c.Script(Answer{Status: http.StatusServiceUnavailable}, Answer{Status: 503}, Answer{Status: 503})
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(c.Endpoint(Traces)),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	p := RunSpans(context.Background(), tp, 500, 60*time.Millisecond)
	if p.Count() != 30 {
		t.Fatalf("Count() = %d, want 30", p.Count())
	}
	if m := p.Missing(c); m != 3 {
		t.Fatalf("Missing() = %d, want 3", m)
	}
	lost, ids := p.MissingIDs(c), p.IDs()
	for i := range lost {
		if lost[i] != ids[i] {
			t.Fatalf("lost %v, want the first three produced", lost)
		}
	}
}
