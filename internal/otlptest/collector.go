package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Signal names an OTLP signal; its Path is the OTLP/HTTP default path.
type Signal string

// The three OTLP/HTTP signals the Collector accepts.
const (
	Traces  Signal = "traces"
	Metrics Signal = "metrics"
	Logs    Signal = "logs"
)

// Path returns the default OTLP/HTTP path of s, e.g. "/v1/traces".
func (s Signal) Path() string { return "/v1/" + string(s) }

// SpanKey identifies a span globally. The span ID alone is only unique within
// its trace, so delivery accounting keys on both.
type SpanKey struct {
	TraceID [16]byte
	SpanID  [8]byte
}

// String renders the key as "traceid/spanid" in hex, as collectors and
// backends display them, so test failures can be grepped against logs.
func (k SpanKey) String() string {
	return hex.EncodeToString(k.TraceID[:]) + "/" + hex.EncodeToString(k.SpanID[:])
}

// ParseSpanKey reads a key as String writes it.
func ParseSpanKey(s string) (SpanKey, error) {
	var k SpanKey
	tid, sid, ok := strings.Cut(s, "/")
	if !ok || hex.DecodedLen(len(tid)) != len(k.TraceID) || hex.DecodedLen(len(sid)) != len(k.SpanID) {
		return k, fmt.Errorf("otlptest: span key %q: want traceid/spanid in hex", s)
	}
	if _, err := hex.Decode(k.TraceID[:], []byte(tid)); err != nil {
		return k, fmt.Errorf("otlptest: span key %q: %w", s, err)
	}
	if _, err := hex.Decode(k.SpanID[:], []byte(sid)); err != nil {
		return k, fmt.Errorf("otlptest: span key %q: %w", s, err)
	}
	return k, nil
}

func spanKey(traceID, spanID []byte) SpanKey {
	var k SpanKey
	copy(k.TraceID[:], traceID)
	copy(k.SpanID[:], spanID)
	return k
}

// Answer scripts how the Collector responds to one request.
//
// A zero Answer is an ordinary success. Only a 2xx Status lets the payload
// count as received: a real collector that answers 503 has not stored
// anything, and the retry logic under test must resend it.
type Answer struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Header is added to the response (e.g. Retry-After).
	Header http.Header
	// Body replaces the response body. Nil on a 2xx means the empty
	// Export*ServiceResponse of the request's signal and encoding.
	Body []byte
	// Delay holds the answer back. If the client gives up or the
	// Collector stops meanwhile, the connection is aborted and the payload
	// is not counted, because the client cannot know it was delivered.
	Delay time.Duration
	// Hang never answers: the request is held until the client gives up or
	// the Collector stops, then the connection is aborted without a
	// response. The payload is not counted.
	Hang bool
}

func (a Answer) status() int {
	if a.Status == 0 {
		return http.StatusOK
	}
	return a.Status
}

// maxBodyBytes caps a request body, compressed and uncompressed, so a broken
// client under test fails loudly instead of exhausting the test machine.
const maxBodyBytes = 64 << 20

// Collector is an OTLP/HTTP receiver on 127.0.0.1 that decodes and counts
// what it receives. It is safe for concurrent use.
//
// Counts are updated before the response is written, so once a client has
// seen a 2xx the data is already visible through the accessors.
type Collector struct {
	// addr is fixed for the Collector's lifetime so that URL() stays valid
	// across Stop/Start, like a collector redeployed behind the same DNS name.
	addr string

	// life serializes Start, Stop and Close so the serving generation
	// cannot be replaced while it is being torn down.
	life sync.Mutex

	mu      sync.Mutex
	closed  bool
	run     *serving // nil while stopped
	script  []Answer
	def     *Answer
	changed chan struct{} // closed and replaced on every count change

	spans      map[SpanKey]struct{}
	spanDups   int
	dataPoints int
	logs       int
	logKeys    map[logKey]struct{}
	requests   map[string]int
	bytes      int64
	headers    map[string]http.Header
	// want, when set, is the header every request must carry; a request
	// without it is answered 401 and counted in badCredentials.
	want           http.Header
	badCredentials int
}

// serving is one listen generation. A fresh http.Server is needed for each
// Start because a closed http.Server refuses to Serve again.
type serving struct {
	srv      *http.Server
	served   chan struct{} // closed when Serve returned
	stop     chan struct{} // closed by Stop to release Delay and Hang
	stopped  bool          // guarded by Collector.mu
	handlers sync.WaitGroup
}

// logKey is what makes a log record "the same record" for duplicate
// detection. OTLP log records carry no ID, so the key is the tuple that a
// resend reproduces bit for bit while two distinct records almost never
// share it: trace and span ID, both timestamps (the SDK stamps
// observed_time_unix_nano at emit time even when the caller set no time) and
// the body. A string body is used as is; any other body by its deterministic
// protobuf encoding.
type logKey struct {
	traceID  [16]byte
	spanID   [8]byte
	time     uint64
	observed uint64
	body     string
}

// NewCollector starts a Collector on a free port of 127.0.0.1.
func NewCollector() (*Collector, error) {
	ln, err := listenLoopback(loopbackHost+":0", 0)
	if err != nil {
		return nil, err
	}
	c := &Collector{
		addr:    ln.Addr().String(),
		changed: make(chan struct{}),
	}
	c.resetCountsLocked()
	c.launch(ln)
	return c, nil
}

// StartCollector is NewCollector for tests and benchmarks: it fails tb on
// error and closes the Collector when tb ends.
func StartCollector(tb testing.TB) *Collector {
	tb.Helper()
	c, err := NewCollector()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// Addr returns the listen address, "127.0.0.1:PORT". It does not change
// across Stop and Start.
func (c *Collector) Addr() string { return c.addr }

// URL returns the base URL, "http://127.0.0.1:PORT".
func (c *Collector) URL() string { return "http://" + c.addr }

// Endpoint returns the full URL for signal s, e.g. URL()+"/v1/traces".
func (c *Collector) Endpoint(s Signal) string { return c.URL() + s.Path() }

func (c *Collector) launch(ln net.Listener) {
	run := &serving{
		served: make(chan struct{}),
		stop:   make(chan struct{}),
	}
	run.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.handle(run, w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
		// Aborted connections are the point of many tests; logging them
		// would only bury real failures in noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	c.mu.Lock()
	c.run = run
	c.mu.Unlock()
	go func() {
		defer close(run.served)
		_ = run.srv.Serve(ln)
	}()
}

// Stop closes the listener and every open connection, so new connects are
// refused (ECONNREFUSED) and keep-alive connections die, as when a collector
// process exits. Requests held by Delay or Hang are aborted. Counts, script
// and default answer are kept. Stop returns once no handler is running.
func (c *Collector) Stop() {
	c.life.Lock()
	defer c.life.Unlock()
	c.stopLocked()
}

func (c *Collector) stopLocked() {
	c.mu.Lock()
	run := c.run
	c.run = nil
	if run != nil {
		run.stopped = true
		close(run.stop)
	}
	c.mu.Unlock()
	if run == nil {
		return
	}
	_ = run.srv.Close()
	<-run.served
	run.handlers.Wait()
}

// Start listens again on the same address after Stop. It retries the bind
// for up to about 2 s because the port may not be free the very instant the
// old socket closed. Start on a running Collector is a no-op.
func (c *Collector) Start() error {
	c.life.Lock()
	defer c.life.Unlock()
	c.mu.Lock()
	closed, running := c.closed, c.run != nil
	c.mu.Unlock()
	if closed {
		return errors.New("otlptest: Start on closed Collector")
	}
	if running {
		return nil
	}
	ln, err := listenLoopback(c.addr, relistenTimeout)
	if err != nil {
		return err
	}
	c.launch(ln)
	return nil
}

// Close stops the Collector for good. It is idempotent.
func (c *Collector) Close() {
	c.life.Lock()
	defer c.life.Unlock()
	c.stopLocked()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// Script queues answers for the next export requests, one answer per
// request in arrival order across all signals. Requests rejected before
// decoding (wrong path, method, Content-Type or Content-Encoding) do not use
// up an answer. Once the queue is empty the default answer applies again.
// Script appends to anything still queued.
func (c *Collector) Script(answers ...Answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.script = append(c.script, answers...)
}

// SetDefault sets the answer used when no scripted answer is queued, e.g.
// "503 until further notice" for the length of an outage.
func (c *Collector) SetDefault(a Answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.def = &a
}

// ResetDefault restores normal acceptance as the default answer.
func (c *Collector) ResetDefault() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.def = nil
}

// Reset zeroes every count and forgets recorded span IDs and headers, e.g.
// between benchmark iterations. Script and default answer are kept.
func (c *Collector) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetCountsLocked()
	c.notifyLocked()
}

func (c *Collector) resetCountsLocked() {
	c.spans = make(map[SpanKey]struct{})
	c.spanDups = 0
	c.dataPoints = 0
	c.logs = 0
	c.logKeys = make(map[logKey]struct{})
	c.requests = make(map[string]int)
	c.bytes = 0
	c.headers = make(map[string]http.Header)
	c.badCredentials = 0
}

func (c *Collector) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Spans returns the number of distinct spans accepted.
func (c *Collector) Spans() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}

// SpanDuplicates returns how many accepted spans had been accepted before,
// i.e. deliveries that a retry made twice.
func (c *Collector) SpanDuplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spanDups
}

// HasSpan reports whether the span was accepted. It takes trace.TraceID and
// trace.SpanID values directly.
func (c *Collector) HasSpan(traceID [16]byte, spanID [8]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.spans[SpanKey{TraceID: traceID, SpanID: spanID}]
	return ok
}

// SpanIDs returns a snapshot of the distinct spans accepted.
func (c *Collector) SpanIDs() map[SpanKey]struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.spans)
}

// missing counts the keys that were not accepted, under one lock
// acquisition so large workloads are cheap to check.
func (c *Collector) missing(keys []SpanKey) []SpanKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []SpanKey
	for _, k := range keys {
		if _, ok := c.spans[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// DataPoints returns the number of metric data points accepted, summed over
// gauges, sums, histograms, exponential histograms and summaries. Metrics
// have no identity, so duplicates are not detected.
func (c *Collector) DataPoints() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dataPoints
}

// LogRecords returns the number of log records accepted, duplicates
// included.
func (c *Collector) LogRecords() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs
}

// UniqueLogRecords returns the number of distinct log records accepted.
// OTLP log records carry no ID, so two records are the same record when
// trace ID, span ID, time_unix_nano, observed_time_unix_nano and body all
// match: a resend reproduces that tuple exactly, while the SDK's
// observed timestamp keeps distinct records with equal bodies apart.
func (c *Collector) UniqueLogRecords() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.logKeys)
}

// Requests returns how many requests arrived for path (e.g. "/v1/traces"),
// whatever they were answered, including malformed and scripted ones.
func (c *Collector) Requests(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests[path]
}

// BytesReceived returns the total size of all request bodies as sent on the
// wire (before gunzip), whatever they were answered, so tests can measure
// what retries cost in bandwidth.
func (c *Collector) BytesReceived() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// RequireHeader makes the Collector check the credentials of every
// request it gets: a request whose header name does not have exactly the
// given value is answered 401, and counted by BadCredentials. A test that
// gives each destination its own token thus fails when a credential is
// missing or crosses to another destination.
func (c *Collector) RequireHeader(name, value string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.want == nil {
		c.want = http.Header{}
	}
	c.want.Set(name, value)
}

// BadCredentials counts the requests refused by RequireHeader.
func (c *Collector) BadCredentials() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.badCredentials
}

// LastHeader returns a copy of the headers of the last request to path, or
// nil if none arrived.
func (c *Collector) LastHeader(path string) http.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.headers[path].Clone()
}

// WaitSpans blocks until at least n distinct spans were accepted or ctx ends.
func (c *Collector) WaitSpans(ctx context.Context, n int) error {
	return c.wait(ctx, fmt.Sprintf("%d spans", n), func() (int, bool) { return len(c.spans), len(c.spans) >= n })
}

// WaitDataPoints blocks until at least n data points were accepted or ctx
// ends.
func (c *Collector) WaitDataPoints(ctx context.Context, n int) error {
	return c.wait(ctx, fmt.Sprintf("%d data points", n), func() (int, bool) { return c.dataPoints, c.dataPoints >= n })
}

// WaitLogRecords blocks until at least n log records (duplicates included)
// were accepted or ctx ends.
func (c *Collector) WaitLogRecords(ctx context.Context, n int) error {
	return c.wait(ctx, fmt.Sprintf("%d log records", n), func() (int, bool) { return c.logs, c.logs >= n })
}

// WaitRequests blocks until at least n requests arrived for path or ctx
// ends. Requests are counted before they are answered, so this is how a test
// learns that a request is being held by Delay or Hang.
func (c *Collector) WaitRequests(ctx context.Context, path string, n int) error {
	return c.wait(ctx, fmt.Sprintf("%d requests to %s", n, path), func() (int, bool) {
		return c.requests[path], c.requests[path] >= n
	})
}

// wait re-evaluates cond (under c.mu) each time a count changes; cond
// returns the current value for the error message and whether to stop.
func (c *Collector) wait(ctx context.Context, what string, cond func() (int, bool)) error {
	for {
		c.mu.Lock()
		have, ok := cond()
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("otlptest: waiting for %s, have %d: %w", what, have, ctx.Err())
		}
	}
}

func signalOf(path string) (Signal, bool) {
	for _, s := range []Signal{Traces, Metrics, Logs} {
		if path == s.Path() {
			return s, true
		}
	}
	return "", false
}

func (c *Collector) handle(run *serving, w http.ResponseWriter, r *http.Request) {
	// Register with the generation so Stop can wait for us; a request that
	// slipped in after Stop began must not touch the counts.
	c.mu.Lock()
	if run.stopped {
		c.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	run.handlers.Add(1)
	c.mu.Unlock()
	defer run.handlers.Done()

	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))

	c.mu.Lock()
	c.requests[r.URL.Path]++
	c.bytes += int64(len(raw))
	c.headers[r.URL.Path] = r.Header.Clone()
	credentialed := true
	for k, v := range c.want {
		if !slices.Equal(r.Header.Values(k), v) {
			credentialed = false
		}
	}
	if !credentialed {
		c.badCredentials++
	}
	c.notifyLocked()
	c.mu.Unlock()
	if !credentialed && readErr == nil {
		http.Error(w, "missing or wrong credentials", http.StatusUnauthorized)
		return
	}

	if readErr != nil {
		// The client went away mid-body; there is nobody to answer.
		panic(http.ErrAbortHandler)
	}
	sig, ok := signalOf(r.URL.Path)
	if !ok {
		http.Error(w, "unknown OTLP path", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "OTLP/HTTP requires POST", http.StatusMethodNotAllowed)
		return
	}
	if len(raw) > maxBodyBytes {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	isJSON, err := requestEncoding(r.Header.Get("Content-Type"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
		return
	}
	body, status, err := decompress(r.Header.Get("Content-Encoding"), raw)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}

	answer := c.nextAnswer()
	if answer.Delay > 0 {
		t := time.NewTimer(answer.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			panic(http.ErrAbortHandler)
		case <-run.stop:
			t.Stop()
			panic(http.ErrAbortHandler)
		}
	}
	if answer.Hang {
		select {
		case <-r.Context().Done():
		case <-run.stop:
		}
		// Returning normally would make net/http send an empty 200.
		panic(http.ErrAbortHandler)
	}
	if st := answer.status(); st < 200 || st > 299 {
		writeAnswer(w, answer, "", nil)
		return
	}

	resp, err := c.accept(sig, isJSON, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var out []byte
	ct := "application/x-protobuf"
	if isJSON {
		ct = "application/json"
		out, err = protojson.Marshal(resp)
	} else {
		out, err = proto.Marshal(resp)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeAnswer(w, answer, ct, out)
}

// nextAnswer pops the script, falling back to the default answer.
func (c *Collector) nextAnswer() Answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.script) > 0 {
		a := c.script[0]
		c.script = c.script[1:]
		return a
	}
	if c.def != nil {
		return *c.def
	}
	return Answer{}
}

// writeAnswer writes a's status, headers and body, falling back to the
// given success body when a carries none.
func writeAnswer(w http.ResponseWriter, a Answer, ct string, okBody []byte) {
	body := a.Body
	if body == nil {
		body = okBody
	}
	h := w.Header()
	if ct != "" && a.Body == nil {
		h.Set("Content-Type", ct)
	}
	for k, vs := range a.Header {
		h[k] = append([]string(nil), vs...)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(a.status())
	_, _ = w.Write(body)
}

func requestEncoding(contentType string) (isJSON bool, err error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, fmt.Errorf("bad Content-Type %q: %w", contentType, err)
	}
	switch mt {
	case "application/x-protobuf":
		return false, nil
	case "application/json":
		return true, nil
	}
	return false, fmt.Errorf("unsupported Content-Type %q", contentType)
}

func decompress(encoding string, raw []byte) ([]byte, int, error) {
	switch encoding {
	case "", "identity":
		return raw, 0, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("bad gzip body: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(zr, maxBodyBytes+1))
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("bad gzip body: %w", err)
		}
		if len(body) > maxBodyBytes {
			return nil, http.StatusRequestEntityTooLarge, errors.New("decompressed body too large")
		}
		return body, 0, nil
	}
	return nil, http.StatusUnsupportedMediaType, fmt.Errorf("unsupported Content-Encoding %q", encoding)
}

func unmarshal(isJSON bool, body []byte, m proto.Message) error {
	var err error
	if isJSON {
		body, err = hexIDsToBase64(body)
		if err == nil {
			err = protojson.Unmarshal(body, m)
		}
	} else {
		err = proto.Unmarshal(body, m)
	}
	if err != nil {
		return fmt.Errorf("malformed OTLP payload: %w", err)
	}
	return nil
}

// accept decodes body as sig, counts it and returns the matching empty
// response message.
func (c *Collector) accept(sig Signal, isJSON bool, body []byte) (proto.Message, error) {
	switch sig {
	case Traces:
		var req collectortrace.ExportTraceServiceRequest
		if err := unmarshal(isJSON, body, &req); err != nil {
			return nil, err
		}
		c.mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					k := spanKey(sp.GetTraceId(), sp.GetSpanId())
					if _, dup := c.spans[k]; dup {
						c.spanDups++
					} else {
						c.spans[k] = struct{}{}
					}
				}
			}
		}
		c.notifyLocked()
		c.mu.Unlock()
		return &collectortrace.ExportTraceServiceResponse{}, nil
	case Metrics:
		var req collectormetrics.ExportMetricsServiceRequest
		if err := unmarshal(isJSON, body, &req); err != nil {
			return nil, err
		}
		n := countDataPoints(&req)
		c.mu.Lock()
		c.dataPoints += n
		c.notifyLocked()
		c.mu.Unlock()
		return &collectormetrics.ExportMetricsServiceResponse{}, nil
	default:
		var req collectorlogs.ExportLogsServiceRequest
		if err := unmarshal(isJSON, body, &req); err != nil {
			return nil, err
		}
		var keys []logKey
		for _, rl := range req.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				for _, lr := range sl.GetLogRecords() {
					k := logKey{
						time:     lr.GetTimeUnixNano(),
						observed: lr.GetObservedTimeUnixNano(),
						body:     bodyKey(lr.GetBody()),
					}
					copy(k.traceID[:], lr.GetTraceId())
					copy(k.spanID[:], lr.GetSpanId())
					keys = append(keys, k)
				}
			}
		}
		c.mu.Lock()
		c.logs += len(keys)
		for _, k := range keys {
			c.logKeys[k] = struct{}{}
		}
		c.notifyLocked()
		c.mu.Unlock()
		return &collectorlogs.ExportLogsServiceResponse{}, nil
	}
}

func bodyKey(v *commonpb.AnyValue) string {
	if v == nil {
		return ""
	}
	if s, ok := v.GetValue().(*commonpb.AnyValue_StringValue); ok {
		return "s:" + s.StringValue
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	return "p:" + string(b)
}

func countDataPoints(req *collectormetrics.ExportMetricsServiceRequest) int {
	n := 0
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				switch d := m.GetData().(type) {
				case *metricspb.Metric_Gauge:
					n += len(d.Gauge.GetDataPoints())
				case *metricspb.Metric_Sum:
					n += len(d.Sum.GetDataPoints())
				case *metricspb.Metric_Histogram:
					n += len(d.Histogram.GetDataPoints())
				case *metricspb.Metric_ExponentialHistogram:
					n += len(d.ExponentialHistogram.GetDataPoints())
				case *metricspb.Metric_Summary:
					n += len(d.Summary.GetDataPoints())
				}
			}
		}
	}
	return n
}

// idLengths maps the OTLP/JSON ID fields to the hex length they have there.
var idLengths = map[string]int{"traceId": 32, "spanId": 16, "parentSpanId": 16}

// hexIDsToBase64 rewrites OTLP/JSON into what protojson expects. OTLP/JSON
// deviates from the canonical protobuf JSON mapping in one way that matters
// here: trace and span IDs are hex, not base64. Decoding them as base64
// would not fail (hex is valid base64) but would yield wrong IDs, so every
// span would look lost. IDs already in base64 have a different length and
// are left alone, so protojson-encoded bodies are accepted too.
func hexIDsToBase64(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep 64-bit integers such as timestamps exact
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if n, ok := idLengths[k]; ok {
					if h, ok := e.(string); ok && len(h) == n {
						if raw, err := hex.DecodeString(h); err == nil {
							v[k] = base64.StdEncoding.EncodeToString(raw)
							continue
						}
					}
				}
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(doc)
	return json.Marshal(doc)
}
