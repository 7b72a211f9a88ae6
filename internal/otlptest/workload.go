package otlptest

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// defaultTick paces SpanLoad: fine enough that a load looks steady to the
// exporter's batcher, coarse enough that ticker overhead stays negligible.
const defaultTick = 10 * time.Millisecond

// SpanLoad describes a steady stream of spans produced through the real SDK,
// so that batching, queueing and export behave as in production.
type SpanLoad struct {
	// Rate is spans per second.
	Rate int
	// Duration is how long to produce; exactly Rate*Duration spans
	// (rounded down) are produced unless ctx ends first.
	Duration time.Duration
	// Tick is the pacing interval; 0 means 10 ms.
	Tick time.Duration
	// Name is the span name; empty means "otlptest".
	Name string
	// Attributes are set on every span, e.g. to size payloads in
	// benchmarks.
	Attributes []attribute.KeyValue
}

// RunSpans produces rate spans per second for d through tp; see
// SpanLoad.Run.
func RunSpans(ctx context.Context, tp trace.TracerProvider, rate int, d time.Duration) *Produced {
	return SpanLoad{Rate: rate, Duration: d}.Run(ctx, tp)
}

// Run produces the load through tp and returns what it produced. Each span
// is a new root, ended immediately.
//
// Pacing is by elapsed time, not by tick count: at every tick the load
// catches up to Rate*elapsed, so a slow export path (or a dropped tick)
// lowers neither the total nor the long-run rate. Run therefore takes at
// least Duration, longer if span creation cannot keep up.
//
// tp must sample every span (the SDK default does), or the unsampled spans
// will be reported missing.
func (l SpanLoad) Run(ctx context.Context, tp trace.TracerProvider) *Produced {
	p := &Produced{}
	total := int64(0)
	if l.Rate > 0 && l.Duration > 0 {
		total = int64(l.Rate) * int64(l.Duration) / int64(time.Second)
	}
	tick := l.Tick
	if tick <= 0 {
		tick = defaultTick
	}
	name := l.Name
	if name == "" {
		name = "otlptest"
	}
	tracer := tp.Tracer("github.com/otlpretry/otlpretry/internal/otlptest")
	opts := []trace.SpanStartOption{trace.WithNewRoot()}
	if len(l.Attributes) > 0 {
		opts = append(opts, trace.WithAttributes(l.Attributes...))
	}

	start := time.Now()
	defer func() {
		p.mu.Lock()
		p.elapsed = time.Since(start)
		p.mu.Unlock()
	}()
	if total == 0 {
		return p
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var emitted int64
	for emitted < total {
		select {
		case <-ctx.Done():
			return p
		case <-ticker.C:
		}
		target := min(int64(l.Rate)*int64(time.Since(start))/int64(time.Second), total)
		for ; emitted < target; emitted++ {
			_, span := tracer.Start(ctx, name, opts...)
			span.End()
			sc := span.SpanContext()
			p.add(SpanKey{TraceID: sc.TraceID(), SpanID: sc.SpanID()})
		}
	}
	return p
}

// Produced is the record of a SpanLoad run: exactly which spans were handed
// to the SDK, so loss is a set difference rather than a count comparison
// that duplicates could mask.
type Produced struct {
	mu      sync.Mutex
	ids     []SpanKey
	elapsed time.Duration
}

func (p *Produced) add(k SpanKey) {
	p.mu.Lock()
	p.ids = append(p.ids, k)
	p.mu.Unlock()
}

// Count returns how many spans were produced.
func (p *Produced) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ids)
}

// IDs returns the produced spans in production order.
func (p *Produced) IDs() []SpanKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

// Elapsed returns how long the run took, for computing the achieved rate.
func (p *Produced) Elapsed() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.elapsed
}

// Missing returns how many produced spans c has not accepted: the spans
// lost so far. Duplicates at c do not hide losses.
func (p *Produced) Missing(c *Collector) int {
	return len(p.MissingIDs(c))
}

// MissingIDs returns the produced spans c has not accepted, in production
// order, so a failing test can say which ones (first, last, a burst) went
// missing.
func (p *Produced) MissingIDs(c *Collector) []SpanKey {
	return c.missing(p.IDs())
}
