// Package demo is the otlpretry command's demo: the real OTel Go SDK
// exporting spans, metrics and logs through an otlpretry.Transport to a
// local OTLP receiver, across a scripted outage (refused connections,
// then HTTP 503s, then recovery) made by a fault proxy between the two,
// with a live status line and a final account of what was produced,
// delivered, lost and duplicated. Over OTLP/gRPC the exporters are the
// SDK's gRPC exporters under otlpretrygrpc.DialOption, the proxy works
// at the TCP level and the receiver answers the gRPC status Unavailable in
// place of the 503s. Everything runs on 127.0.0.1, and the spool lives in
// a temporary folder removed at the end.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"
)

// Config sets the script.
type Config struct {
	// Protocol is ProtocolHTTP (the default when empty) or ProtocolGRPC.
	Protocol string
	// Steady is how long the workload runs before the outage.
	Steady time.Duration
	// Outage is the length of each outage phase: refused connections,
	// then 503s (gRPC: Unavailable).
	Outage time.Duration
	// Rate is spans per second.
	Rate int
	// DrainTimeout bounds the wait for the backlog after recovery.
	DrainTimeout time.Duration
	// BackoffMax caps the transport's backoff (its default is 128 s; the
	// demo uses 2 s so that the drain after recovery shows within the run).
	BackoffMax time.Duration
	// Out receives the status line, the events and the summary.
	Out io.Writer
	// Terminal redraws the status line in place; Width gives the
	// terminal's columns (0 when unknown).
	Terminal bool
	Width    func() int
}

// Signal counts one kind of telemetry.
type Signal struct {
	Produced, Delivered, Duplicates int
}

// Lost is what was produced and never delivered.
func (s Signal) Lost() int { return max(s.Produced-s.Delivered, 0) }

// Summary is the account of a run.
type Summary struct {
	Spans, Points, Logs Signal
	// LargestRecords and LargestBytes are the largest backlog seen.
	LargestRecords int
	LargestBytes   int64
	// DrainTime is from recovery to an empty spool; Drained is false when
	// that did not happen within the drain timeout.
	DrainTime time.Duration
	Drained   bool
	// Transport counters at the end.
	Stats   otlpretry.Stats
	Elapsed time.Duration
}

// Lost adds every signal's losses.
func (s *Summary) Lost() int { return s.Spans.Lost() + s.Points.Lost() + s.Logs.Lost() }

// phase names what the fault proxy does now.
type phase struct {
	name string
	mode Mode
}

// Run plays the script and returns the account. It returns an error when
// the demo could not run, not when data was lost: see Summary.Lost.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if cfg.Rate <= 0 || cfg.Steady < 0 || cfg.Outage < 0 {
		return nil, errors.New("demo: rate must be positive and durations not negative")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 2 * time.Second
	}
	if cfg.Protocol == "" {
		cfg.Protocol = ProtocolHTTP
	}
	if cfg.Width == nil {
		cfg.Width = func() int { return 0 }
	}
	start := time.Now()
	disp := &display{out: cfg.Out, terminal: cfg.Terminal, width: cfg.Width}

	tmp, err := os.MkdirTemp("", "otlpretry-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	tgt, err := newTarget(cfg.Protocol)
	if err != nil {
		return nil, err
	}
	defer tgt.close()
	words := tgt.words()
	// The phase column fits every phase's name, so that the line keeps
	// its layout across phases.
	phaseWidth := max(len("recovered"), len(words.phase))

	logger := slog.New(&eventHandler{d: disp, start: start})
	rt, err := otlpretry.New(
		otlpretry.WithDir(filepath.Join(tmp, "spool")),
		otlpretry.WithBackoff(min(250*time.Millisecond, cfg.BackoffMax), cfg.BackoffMax),
		otlpretry.WithLogger(logger),
		otlpretry.WithLogInterval(5*time.Second),
	)
	if err != nil {
		return nil, err
	}
	defer rt.Shutdown(context.Background())
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		disp.event(fmt.Sprintf("%5.1fs  otel: %v", time.Since(start).Seconds(), err))
	}))

	sdk, err := newSDK(ctx, rt, cfg.Protocol, tgt.endpoint())
	if err != nil {
		return nil, err
	}
	wl, err := newWorkload(sdk.tp, sdk.mp, sdk.lp)
	if err != nil {
		return nil, err
	}

	disp.print(fmt.Sprintf("otlpretry demo: the OTel Go SDK exports spans, metrics and logs (%d spans/s) through the\n"+
		"otlpretry transport to a local %s, behind a fault proxy that scripts an outage:\n"+
		"%v steady, %v of refused connections, %v of %s, then recovery.\n"+
		"Spool in %s, removed at the end; backoff capped at %v for the demo.\n"+
		"Status: backlog = exports (bytes) waiting in the spool; delivered = exports the receiver\n"+
		"accepted; dropped = exports lost; circuit open = new exports go straight to the spool.\n\n",
		cfg.Rate, words.receiver, cfg.Steady, cfg.Outage, cfg.Outage, words.unavailable, tmp, cfg.BackoffMax))

	var (
		mu          sync.Mutex
		cur         = phase{name: "steady", mode: Pass}
		recoveredAt time.Time
		sum         = &Summary{}
		drained     = make(chan struct{})
		drainedOnce sync.Once
	)
	render := func() {
		st := rt.Stats()
		c := tgt.counts()
		mu.Lock()
		name := cur.name
		mu.Unlock()
		circuit := "closed"
		if st.CircuitOpen {
			circuit = "open"
		}
		disp.status(fmt.Sprintf("%5.1fs  %-*s  backlog %3d (%s)  delivered %d  dropped %d  circuit %s  receiver: %d spans",
			time.Since(start).Seconds(), phaseWidth, name, st.Records, human(st.Bytes), st.Direct+st.Delivered, st.Dropped.Total(), circuit, c.Spans))
	}
	sample := func() {
		st := rt.Stats()
		mu.Lock()
		defer mu.Unlock()
		if st.Records > sum.LargestRecords {
			sum.LargestRecords = st.Records
		}
		sum.LargestBytes = max(sum.LargestBytes, st.Bytes)
		if !recoveredAt.IsZero() && st.Records == 0 {
			drainedOnce.Do(func() {
				sum.DrainTime, sum.Drained = time.Since(recoveredAt), true
				close(drained)
			})
		}
	}
	stopUI := make(chan struct{})
	uiDone := make(chan struct{})
	go func() {
		defer close(uiDone)
		every := time.Second
		if cfg.Terminal {
			every = 100 * time.Millisecond
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		last := time.Time{}
		for {
			select {
			case <-stopUI:
				sample()
				render()
				return
			case <-tick.C:
			}
			sample()
			if time.Since(last) >= every {
				render()
				last = time.Now()
			}
		}
	}()

	wctx, stopWork := context.WithCancel(ctx)
	workDone := make(chan struct{})
	go func() {
		defer close(workDone)
		wl.run(wctx, cfg.Rate)
	}()

	setPhase := func(p phase, msg string) error {
		if err := tgt.set(p.mode); err != nil {
			return err
		}
		mu.Lock()
		cur = p
		if p.mode == Pass {
			recoveredAt = time.Now()
		}
		mu.Unlock()
		disp.event(fmt.Sprintf("%5.1fs  %s", time.Since(start).Seconds(), msg))
		return nil
	}
	sleep := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	runErr := func() error {
		disp.event(fmt.Sprintf("%5.1fs  steady: the receiver is up", 0.0))
		if err := sleep(cfg.Steady); err != nil {
			return err
		}
		if err := setPhase(phase{"refused", Refuse}, "outage 1/2: the receiver's port refuses connections"); err != nil {
			return err
		}
		if err := sleep(cfg.Outage); err != nil {
			return err
		}
		if err := setPhase(phase{words.phase, Unavailable}, "outage 2/2: "+words.event); err != nil {
			return err
		}
		if err := sleep(cfg.Outage); err != nil {
			return err
		}
		if err := setPhase(phase{"recovered", Pass}, "recovery: the receiver is reachable again"); err != nil {
			return err
		}
		// Keep producing until the backlog is gone (and for at least a
		// second, to show exports going direct again).
		t := time.NewTimer(cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-drained:
			mu.Lock()
			d := sum.DrainTime
			mu.Unlock()
			disp.event(fmt.Sprintf("%5.1fs  backlog delivered, %.1fs after recovery", time.Since(start).Seconds(), d.Seconds()))
		case <-t.C:
			disp.event(fmt.Sprintf("%5.1fs  the backlog was not delivered within %v", time.Since(start).Seconds(), cfg.DrainTimeout))
		case <-ctx.Done():
			return ctx.Err()
		}
		return sleep(time.Second - min(time.Second, time.Since(recoveredAt)))
	}()

	stopWork()
	<-workDone
	mu.Lock()
	cur.name = "flushing"
	mu.Unlock()
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	if runErr == nil {
		disp.event(fmt.Sprintf("%5.1fs  workload stopped; flushing the SDK and the spool", time.Since(start).Seconds()))
	}
	sdkErr := sdk.shutdown(flushCtx)
	flushErr := rt.ForceFlush(flushCtx)
	close(stopUI)
	<-uiDone
	disp.finish()
	if runErr != nil {
		return nil, runErr
	}
	if sdkErr != nil {
		disp.event("SDK shutdown: " + sdkErr.Error())
	}
	if flushErr != nil {
		disp.event("flush: " + flushErr.Error())
	}

	c := tgt.counts()
	sum.Spans = Signal{Produced: int(wl.spans.Load()), Delivered: c.Spans, Duplicates: c.SpanDups}
	sum.Points = Signal{Produced: int(sdk.metrics.points.Load()), Delivered: c.Points, Duplicates: c.PointDups}
	sum.Logs = Signal{Produced: int(wl.logs.Load()), Delivered: c.Logs, Duplicates: c.LogDups}
	sum.Stats = rt.Stats()
	sum.Elapsed = time.Since(start)
	disp.print("\n" + sum.Table())
	return sum, nil
}

// Table renders the summary.
func (s *Summary) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-15s %9s %10s %6s %11s\n", "", "produced", "delivered", "lost", "duplicates")
	for _, r := range []struct {
		name string
		s    Signal
	}{{"spans", s.Spans}, {"metric points", s.Points}, {"log records", s.Logs}} {
		fmt.Fprintf(&b, "%-15s %9d %10d %6d %11d\n", r.name, r.s.Produced, r.s.Delivered, r.s.Lost(), r.s.Duplicates)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%-24s %d exports, %s\n", "largest backlog", s.LargestRecords, human(s.LargestBytes))
	if s.Drained {
		fmt.Fprintf(&b, "%-24s %.1fs\n", "drained after recovery", s.DrainTime.Seconds())
	} else {
		fmt.Fprintf(&b, "%-24s not drained\n", "drained after recovery")
	}
	fmt.Fprintf(&b, "%-24s %d direct, %d from the spool, %d dropped\n", "exports delivered", s.Stats.Direct, s.Stats.Delivered, s.Stats.Dropped.Total())
	fmt.Fprintf(&b, "%-24s %.1fs\n", "total time", s.Elapsed.Seconds())
	if lost := s.Lost(); lost == 0 {
		b.WriteString("\nNothing was lost.\n")
	} else {
		fmt.Fprintf(&b, "\nLOST: %d item(s) never reached the receiver.\n", lost)
	}
	return b.String()
}

// sdk is the three providers, exporting through the transport.
type sdk struct {
	tp      *sdktrace.TracerProvider
	mp      *sdkmetric.MeterProvider
	lp      *sdklog.LoggerProvider
	metrics *countingExporter
}

// exporters are the three OTLP exporters of one protocol.
type exporters struct {
	trace  sdktrace.SpanExporter
	metric sdkmetric.Exporter
	log    sdklog.Exporter
}

// newHTTPExporters builds the OTLP/HTTP exporters with the Transport's
// client, sending to base, a URL.
func newHTTPExporters(ctx context.Context, rt *otlpretry.Transport, base string) (exp exporters, err error) {
	if exp.trace, err = otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(base+"/v1/traces"), otlptracehttp.WithHTTPClient(rt.Client())); err != nil {
		return exp, err
	}
	if exp.metric, err = otlpmetrichttp.New(ctx,
		otlpmetrichttp.WithEndpointURL(base+"/v1/metrics"), otlpmetrichttp.WithHTTPClient(rt.Client())); err != nil {
		return exp, err
	}
	exp.log, err = otlploghttp.New(ctx,
		otlploghttp.WithEndpointURL(base+"/v1/logs"), otlploghttp.WithHTTPClient(rt.Client()))
	return exp, err
}

// newGRPCExporters builds the OTLP/gRPC exporters under
// otlpretrygrpc.DialOption(rt), sending in clear to addr, a host:port. Their own retry is
// off, so that every retry, hold and spooled export shown is the
// Transport's.
func newGRPCExporters(ctx context.Context, rt *otlpretry.Transport, addr string) (exp exporters, err error) {
	if exp.trace, err = otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
		otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt))); err != nil {
		return exp, err
	}
	if exp.metric, err = otlpmetricgrpc.New(ctx,
		otlpmetricgrpc.WithEndpoint(addr), otlpmetricgrpc.WithInsecure(),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
		otlpmetricgrpc.WithDialOption(otlpretrygrpc.DialOption(rt))); err != nil {
		return exp, err
	}
	exp.log, err = otlploggrpc.New(ctx,
		otlploggrpc.WithEndpoint(addr), otlploggrpc.WithInsecure(),
		otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}),
		otlploggrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
	return exp, err
}

func newSDK(ctx context.Context, rt *otlpretry.Transport, protocol, endpoint string) (*sdk, error) {
	res := resource.NewSchemaless(attribute.String("service.name", "otlpretry-demo"))
	newExporters := newHTTPExporters
	if protocol == ProtocolGRPC {
		newExporters = newGRPCExporters
	}
	exp, err := newExporters(ctx, rt, endpoint)
	if err != nil {
		return nil, err
	}
	texp, mexp, lexp := exp.trace, exp.metric, exp.log
	counting := &countingExporter{Exporter: mexp}
	return &sdk{
		tp: sdktrace.NewTracerProvider(sdktrace.WithResource(res),
			sdktrace.WithBatcher(texp, sdktrace.WithBatchTimeout(500*time.Millisecond))),
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithResource(res),
			sdkmetric.WithReader(sdkmetric.NewPeriodicReader(counting, sdkmetric.WithInterval(time.Second)))),
		lp: sdklog.NewLoggerProvider(sdklog.WithResource(res),
			sdklog.WithProcessor(sdklog.NewBatchProcessor(lexp, sdklog.WithExportInterval(500*time.Millisecond)))),
		metrics: counting,
	}, nil
}

// shutdown flushes and stops the providers; each exports what it holds.
func (s *sdk) shutdown(ctx context.Context) error {
	return errors.Join(s.tp.Shutdown(ctx), s.lp.Shutdown(ctx), s.mp.Shutdown(ctx))
}

// eventHandler shows the transport's log messages as events.
type eventHandler struct {
	d     *display
	start time.Time
}

func (h *eventHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *eventHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%5.1fs  log: %s", time.Since(h.start).Seconds(), r.Message)
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "url", "dir", "path":
		default:
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		}
		return true
	})
	h.d.event(b.String())
	return nil
}

func (h *eventHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *eventHandler) WithGroup(string) slog.Handler      { return h }

// human formats a byte count.
func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
