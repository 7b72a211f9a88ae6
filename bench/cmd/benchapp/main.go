// Command benchapp is the application of the side-by-side benchmark: the
// OTel Go SDK (TracerProvider, BatchSpanProcessor, otlptracehttp or
// otlptracegrpc) producing spans at a steady rate, run as its own process
// so that the driver can measure its CPU time and peak memory apart from
// everything else.
//
// It exports in one of three ways (-exporter):
//
//	plain      the exporter's own HTTP client (system A, and the application
//	           of systems C and D, which point it at the Collector or relay),
//	           or with -protocol grpc its own gRPC connection (A-grpc, and
//	           the application of C-grpc and D-grpc)
//	otlpretry  the exporter over otlpretry.Transport's client (system B), or
//	           with -protocol grpc the gRPC exporter with
//	           otlpretrygrpc.DialOption (system B-grpc)
//	limit      an oracle that holds exports in memory while told the
//	           endpoint is down and posts them, oldest first, with a plain
//	           HTTP client at -limit-concurrency when told it is back: what
//	           no layer could beat; with -limit-merge-bytes it packs
//	           consecutive uncompressed protobuf exports into requests of up
//	           to that many bytes (protobuf messages of one type merge when
//	           concatenated)
//
// With -protocol grpc the exporter is otlptracegrpc (the plain and
// otlpretry ways only), every setting at its default but the endpoint:
// -endpoint is then http://host:port, which makes the connection
// insecure.
//
// The driver talks to it over stdin and stdout, one line each:
//
//	stdin:  start | down | up | mark | stop
//	stdout: ready | stat PRODUCED OK FAILED | ack CMD PRODUCED | loaded PRODUCED | bye ...
//
// "stat" comes every 100 ms: spans produced, and spans whose export call
// returned success or an error. Span i (from 0) has trace ID
// -prefix||uint64(i) and span ID uint64(i+1), big-endian, so the driver
// knows every span produced without being sent their IDs.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/otlpretry/otlpretry"
)

type options struct {
	exporter    string
	protocol    string
	endpoint    string
	dir         string
	rate        int
	duration    time.Duration
	spans       int
	batch       int
	blocking    bool
	attrBytes   int
	prefix      [8]byte
	concurrency int
	mergeBytes  int
}

func main() {
	// BENCHAPP_CPUPROFILE names a file for a CPU profile of the whole run,
	// for looking into one system's figures; the driver never sets it.
	if path := os.Getenv("BENCHAPP_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchapp:", err)
			os.Exit(2)
		}
		code := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
		pprof.StopCPUProfile()
		f.Close()
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchapp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var prefix string
	fs.StringVar(&o.exporter, "exporter", "plain", "plain, otlpretry or limit")
	fs.StringVar(&o.protocol, "protocol", "http", "http (otlptracehttp) or grpc (otlptracegrpc)")
	fs.StringVar(&o.endpoint, "endpoint", "", "traces URL, e.g. http://127.0.0.1:4318/v1/traces; for grpc http://127.0.0.1:4317 (required)")
	fs.StringVar(&o.dir, "dir", "", "spool folder (otlpretry; required there)")
	fs.IntVar(&o.rate, "rate", 2000, "spans per second")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to produce (unless -spans is set)")
	fs.IntVar(&o.spans, "spans", 0, "produce exactly this many spans at -rate instead of for -duration")
	fs.IntVar(&o.batch, "batch", 0, "BatchSpanProcessor's largest export, in spans (0: the SDK default, 512)")
	fs.BoolVar(&o.blocking, "blocking", false, "BatchSpanProcessor waits for queue space instead of dropping spans")
	fs.IntVar(&o.attrBytes, "attr-bytes", 0, "size of a string attribute on every span (0: none)")
	fs.StringVar(&prefix, "prefix", "", "16 hex digits: the first half of every trace ID (required)")
	fs.IntVar(&o.concurrency, "limit-concurrency", 4, "posts in flight while the limit drains")
	fs.IntVar(&o.mergeBytes, "limit-merge-bytes", 0, "the limit packs held exports into requests of up to this many bytes (0: one export per request)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b, err := hex.DecodeString(prefix)
	switch {
	case err != nil || len(b) != 8:
		fmt.Fprintln(stderr, "benchapp: -prefix must be 16 hex digits")
		return 2
	case o.endpoint == "":
		fmt.Fprintln(stderr, "benchapp: -endpoint is required")
		return 2
	case o.rate <= 0 || o.spans < 0 || o.batch < 0 || o.attrBytes < 0 || o.concurrency < 1 || o.mergeBytes < 0:
		fmt.Fprintln(stderr, "benchapp: -rate and -limit-concurrency must be positive, -spans, -batch, -attr-bytes and -limit-merge-bytes not negative")
		return 2
	case o.protocol != "http" && o.protocol != "grpc":
		fmt.Fprintln(stderr, "benchapp: -protocol must be http or grpc")
		return 2
	case o.protocol == "grpc" && o.exporter == "limit":
		fmt.Fprintln(stderr, "benchapp: the limit exports over HTTP only")
		return 2
	case o.exporter == "otlpretry" && o.dir == "":
		fmt.Fprintln(stderr, "benchapp: -dir is required with -exporter otlpretry")
		return 2
	}
	copy(o.prefix[:], b)
	if err := app(o, stdin, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "benchapp: %v\n", err)
		return 1
	}
	return 0
}

// seqIDs numbers root spans in the order they start, under a per-run
// prefix, so that the driver can name every span produced.
type seqIDs struct {
	prefix [8]byte
	n      atomic.Uint64
	child  atomic.Uint64
}

func (g *seqIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	i := g.n.Add(1) - 1
	var t trace.TraceID
	copy(t[:8], g.prefix[:])
	binary.BigEndian.PutUint64(t[8:], i)
	var s trace.SpanID
	binary.BigEndian.PutUint64(s[:], i+1)
	return t, s
}

// NewSpanID serves child spans, which the load never makes; their IDs stay
// apart from the root spans' all the same.
func (g *seqIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var s trace.SpanID
	binary.BigEndian.PutUint64(s[:], g.child.Add(1)|1<<63)
	return s
}

// countingExporter counts the spans of export calls by outcome: a span
// counted ok has been accepted by the next hop (the receiver, or a layer
// that took responsibility for it).
type countingExporter struct {
	sdktrace.SpanExporter
	ok, failed atomic.Int64
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		e.failed.Add(int64(len(spans)))
	} else {
		e.ok.Add(int64(len(spans)))
	}
	return err
}

// out serialises writes to stdout, which the driver reads line by line.
type out struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *out) printf(format string, a ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, format+"\n", a...)
}

func app(o options, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx := context.Background()
	w := &out{w: stdout}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	// The plain exporter reports each failed export through otel.Handle;
	// the driver counts failures from the "stat" lines, so a few examples
	// in the log are enough.
	var handled atomic.Int64
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		if handled.Add(1) <= 5 {
			logger.Warn("otel error", "err", err)
		}
	}))

	var (
		rt  *otlpretry.Transport
		orc *oracle
	)
	switch o.exporter {
	case "plain":
	case "otlpretry":
		var err error
		rt, err = otlpretry.New(otlpretry.WithDir(o.dir), otlpretry.WithLogger(logger))
		if err != nil {
			return err
		}
	case "limit":
		orc = newOracle(o.concurrency, o.mergeBytes, logger)
	default:
		return fmt.Errorf("unknown -exporter %q", o.exporter)
	}
	exp, err := newExporter(ctx, o, rt, orc)
	if err != nil {
		return err
	}
	counting := &countingExporter{SpanExporter: exp}
	var bspOpts []sdktrace.BatchSpanProcessorOption
	if o.batch > 0 {
		bspOpts = append(bspOpts, sdktrace.WithMaxExportBatchSize(o.batch))
	}
	if o.blocking {
		bspOpts = append(bspOpts, sdktrace.WithBlocking())
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(counting, bspOpts...),
		sdktrace.WithIDGenerator(&seqIDs{prefix: o.prefix}),
	)

	total := o.spans
	if total == 0 {
		total = int(int64(o.rate) * int64(o.duration) / int64(time.Second))
	}
	var produced atomic.Int64
	stat := func() string {
		return fmt.Sprintf("stat %d %d %d", produced.Load(), counting.ok.Load(), counting.failed.Load())
	}

	cmds := make(chan string)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			cmds <- strings.TrimSpace(sc.Text())
		}
	}()

	w.printf("ready")
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loaded := make(chan struct{})
	started := false
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-tick.C:
			w.printf("%s", stat())
		case <-loaded:
			loaded = nil
			w.printf("%s", stat())
			w.printf("loaded %d", produced.Load())
		case c, ok := <-cmds:
			if !ok {
				// The driver is gone: stop as if told to.
				break loop
			}
			switch c {
			case "start":
				if !started {
					started = true
					go func() {
						defer close(loaded)
						produce(loadCtx, tp, o, total, &produced)
					}()
				}
			case "down":
				if orc != nil {
					orc.hold()
				}
			case "up":
				if orc != nil {
					orc.release()
				}
			case "mark":
			case "stop":
				break loop
			default:
				logger.Warn("unknown command", "cmd", c)
				continue
			}
			w.printf("ack %s %d", c, produced.Load())
		}
	}
	stopLoad()
	if started && loaded != nil {
		<-loaded
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var errs []error
	if err := tp.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("tracer provider shutdown: %w", err))
	}
	if rt != nil {
		if err := rt.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("otlpretry shutdown: %w", err))
		}
	}
	if orc != nil {
		orc.close()
	}
	w.printf("%s", stat())
	w.printf("bye %d", handled.Load())
	return errors.Join(errs...)
}

// newExporter is the span exporter of o.protocol, over rt or orc if not
// nil.
func newExporter(ctx context.Context, o options, rt *otlpretry.Transport, orc *oracle) (sdktrace.SpanExporter, error) {
	if o.protocol == "grpc" {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(o.endpoint)}
		if rt != nil {
			opts = append(opts, otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(o.endpoint)}
	switch {
	case rt != nil:
		opts = append(opts, otlptracehttp.WithHTTPClient(rt.Client()))
	case orc != nil:
		opts = append(opts, otlptracehttp.WithHTTPClient(&http.Client{Transport: orc}))
	}
	return otlptracehttp.New(ctx, opts...)
}

// produce ends total root spans through tp at o.rate. Like
// otlptest.SpanLoad it paces by elapsed time, catching up at every 10 ms
// tick, so a slow export path lowers neither the total nor the rate; it
// keeps no record of the spans, so the process's memory is the SDK's.
func produce(ctx context.Context, tp trace.TracerProvider, o options, total int, produced *atomic.Int64) {
	tracer := tp.Tracer("github.com/otlpretry/otlpretry/bench")
	var payloads []attribute.KeyValue
	if o.attrBytes > 0 {
		// Distinct random text per span within an export, so that a
		// compressing hop (the Collector gzips) sees realistic data, not
		// one repeated string.
		const kinds = 64
		r := rand.New(rand.NewPCG(1, 2))
		const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:/-_"
		for range kinds {
			var sb strings.Builder
			for range o.attrBytes {
				sb.WriteByte(letters[r.IntN(len(letters))])
			}
			payloads = append(payloads, attribute.String("payload", sb.String()))
		}
	}
	start := time.Now()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	var n int64
	for n < int64(total) {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		target := min(int64(o.rate)*int64(time.Since(start))/int64(time.Second), int64(total))
		for ; n < target; n++ {
			opts := []trace.SpanStartOption{trace.WithNewRoot()}
			if payloads != nil {
				opts = append(opts, trace.WithAttributes(payloads[n%int64(len(payloads))]))
			}
			_, span := tracer.Start(ctx, "bench", opts...)
			span.End()
			produced.Store(n + 1)
		}
	}
}

// oracle is the limit: an in-memory buffer told by the driver exactly when
// the endpoint is down and when it is back. While held, or while anything
// is still queued (so order is kept), an export is queued and answered 200
// at once; otherwise it goes straight through. Once released, workers post
// the queue oldest first; a post that fails is queued again at the front.
// With a merge bound, a worker takes the longest run of queued exports to
// one URL, uncompressed and of one content type whose bodies fit the bound
// together (at least one), and posts their concatenation: for protobuf,
// one request holding all of them.
type oracle struct {
	next       http.RoundTripper
	logger     *slog.Logger
	mergeBytes int // 0: one export per request

	mu sync.Mutex // guards the fields below
	// win, with a merge bound, is otlpretry's own adaptive window
	// (internal/batch: 4 growing in slow start to the concurrency), so
	// that the limit differs from otlpretry by its layer, not by how many
	// requests it dares have in flight.
	win *batch.Window
	// budget, with a merge bound, is otlpretry's in-flight bytes budget
	// (WithMaxInflightBytes' default): a post starts only while the
	// exports of those in flight hold less, or none is in flight, so that
	// the limit holds no more memory in flight than otlpretry does.
	budget   int
	inflight int // bytes of the exports in the posts in flight
	held     bool
	queue    []held
	busy     int // exports taken by workers and not yet delivered
	closed   bool
	wake     *sync.Cond
	wg       sync.WaitGroup
}

type held struct {
	url, contentType, encoding string
	body                       []byte
}

func newOracle(concurrency, mergeBytes int, logger *slog.Logger) *oracle {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * concurrency
	o := &oracle{next: tr, logger: logger, mergeBytes: mergeBytes}
	if mergeBytes > 0 {
		o.win = batch.NewWindow(batch.DefaultInitialWindow, concurrency)
		o.budget = otlpretry.DefaultMaxInflightBytes
	}
	o.wake = sync.NewCond(&o.mu)
	for range concurrency {
		o.wg.Add(1)
		go o.worker()
	}
	return o
}

func (o *oracle) hold() {
	o.mu.Lock()
	o.held = true
	o.mu.Unlock()
}

func (o *oracle) release() {
	o.mu.Lock()
	o.held = false
	o.mu.Unlock()
	o.wake.Broadcast()
}

func (o *oracle) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.wake.Broadcast()
	o.wg.Wait()
}

func (o *oracle) RoundTrip(req *http.Request) (*http.Response, error) {
	o.mu.Lock()
	queue := o.held || len(o.queue) > 0 || o.busy > 0
	o.mu.Unlock()
	if !queue {
		return o.next.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.queue = append(o.queue, held{
		url:         req.URL.String(),
		contentType: req.Header.Get("Content-Type"),
		encoding:    req.Header.Get("Content-Encoding"),
		body:        body,
	})
	o.mu.Unlock()
	o.wake.Signal()
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/x-protobuf"}},
		Body:          http.NoBody,
		ContentLength: 0,
		Request:       req,
	}, nil
}

func (o *oracle) worker() {
	defer o.wg.Done()
	for {
		o.mu.Lock()
		var ticket batch.Ticket
		for {
			for !o.closed && (o.held || len(o.queue) == 0) {
				o.wake.Wait()
			}
			if o.closed {
				o.mu.Unlock()
				return
			}
			if o.win == nil {
				break
			}
			if o.busy == 0 || o.inflight < o.budget {
				var ok bool
				if ticket, ok = o.win.Acquire(); ok {
					break
				}
			}
			o.wake.Wait() // the window or budget is full: a post's end wakes us
		}
		n := o.takeLocked()
		group := o.queue[:n:n]
		o.queue = o.queue[n:]
		size := 0
		for _, h := range group {
			size += len(h.body)
		}
		o.busy++
		o.inflight += size
		o.mu.Unlock()

		err := o.post(group)

		o.mu.Lock()
		o.busy--
		o.inflight -= size
		if err != nil {
			o.queue = append(slices.Clone(group), o.queue...)
		}
		if o.win != nil {
			f := batch.Success
			if err != nil {
				f = batch.Congestion
			}
			o.win.Release(ticket, f)
			o.wake.Broadcast()
		}
		o.mu.Unlock()
		if err != nil {
			o.logger.Warn("limit: post failed; queued again", "err", err)
			time.Sleep(10 * time.Millisecond) // the endpoint is on loopback and expected up
		}
	}
}

// takeLocked is how many exports from the front of the queue (at least
// one) go into the next request.
func (o *oracle) takeLocked() int {
	first := o.queue[0]
	if o.mergeBytes <= 0 || !mergeable(first) {
		return 1
	}
	n, size := 1, len(first.body)
	for n < len(o.queue) {
		h := o.queue[n]
		if !mergeable(h) || h.url != first.url || h.contentType != first.contentType || size+len(h.body) > o.mergeBytes {
			break
		}
		size += len(h.body)
		n++
	}
	return n
}

// mergeable: concatenated protobuf messages of one type are one message
// holding the fields of all; compressed or JSON bodies are not merged.
func mergeable(h held) bool {
	return h.encoding == "" && h.contentType == "application/x-protobuf"
}

// post sends group, one export or several merged, as one request.
func (o *oracle) post(group []held) error {
	h := group[0]
	body := h.body
	if len(group) > 1 {
		var size int
		for _, g := range group {
			size += len(g.body)
		}
		body = make([]byte, 0, size)
		for _, g := range group {
			body = append(body, g.body...)
		}
	}
	req, err := http.NewRequest(http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", h.contentType)
	if h.encoding != "" {
		req.Header.Set("Content-Encoding", h.encoding)
	}
	resp, err := o.next.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
