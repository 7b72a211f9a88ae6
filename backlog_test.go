package otlpretry

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// stored is one export put in a spool by storeBacklog.
type stored struct {
	path, contentType, encoding string
	spans                       []otlptest.SpanKey
}

// storeBacklog puts exports to base (traces unless path says otherwise)
// in the spool at dir, oldest first, as an earlier process leaves them.
func storeBacklog(t *testing.T, dir, base string, exports []stored, bodies [][]byte) {
	t.Helper()
	sp, err := spool.Open(dir, spool.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range exports {
		rec := &spool.Record{URL: base + e.path, ContentType: e.contentType, ContentEncoding: e.encoding,
			Signal: spool.SignalFromPath(e.path), Body: bodies[i]}
		if err := sp.Put(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
}

// traceExports makes n protobuf trace exports of spans spans each.
func traceExports(n, spans int) ([]stored, [][]byte) {
	var (
		exports []stored
		bodies  [][]byte
	)
	for range n {
		body, keys := otlptest.TraceBody(spans)
		exports = append(exports, stored{path: tracesPath, contentType: "application/x-protobuf", spans: keys})
		bodies = append(bodies, body)
	}
	return exports, bodies
}

// jsonTraceBody is an OTLP/JSON trace export of n spans: the protobuf JSON
// mapping with the trace and span IDs in hex, as OTLP/JSON writes them.
func jsonTraceBody(t *testing.T, n int) ([]byte, []otlptest.SpanKey) {
	t.Helper()
	req, keys := otlptest.TraceRequest(n)
	b, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, rs := range doc["resourceSpans"].([]any) {
		for _, ss := range rs.(map[string]any)["scopeSpans"].([]any) {
			for _, sp := range ss.(map[string]any)["spans"].([]any) {
				m := sp.(map[string]any)
				for _, f := range []string{"traceId", "spanId", "parentSpanId"} {
					if v, ok := m[f].(string); ok {
						raw, err := base64.StdEncoding.DecodeString(v)
						if err != nil {
							t.Fatal(err)
						}
						m[f] = hex.EncodeToString(raw)
					}
				}
			}
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out, keys
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sent is one request as the recorder saw it leave.
type sent struct {
	path, contentType, encoding string
	size                        int // the body before compression
	// spans of a protobuf trace request, in the body's order.
	spans []otlptest.SpanKey
	// inFlight is the requests in flight when it left, itself included.
	inFlight int
}

// recorder carries requests to the collector, noting each: its address,
// encoding, spans and how many requests were in flight.
type recorder struct {
	next http.RoundTripper
	t    *testing.T

	mu       sync.Mutex // guards the fields below
	sent     []sent
	inFlight int
}

func newRecorder(t *testing.T) *recorder {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &recorder{next: tr, t: t}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	s := sent{path: req.URL.Path, contentType: req.Header.Get("Content-Type"), encoding: req.Header.Get("Content-Encoding")}
	plain := body
	if s.encoding == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			plain, err = io.ReadAll(zr)
		}
		if err != nil {
			r.t.Errorf("a request's gzip body does not decompress: %v", err)
		}
	}
	s.size = len(plain)
	if s.path == tracesPath && s.contentType == "application/x-protobuf" {
		var m collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(plain, &m); err == nil {
			for _, rs := range m.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					for _, sp := range ss.Spans {
						s.spans = append(s.spans, spanKeyOf(sp))
					}
				}
			}
		}
	}
	r.mu.Lock()
	r.inFlight++
	s.inFlight = r.inFlight
	r.sent = append(r.sent, s)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
	}()
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r.next.RoundTrip(out)
}

func spanKeyOf(sp *tracepb.Span) otlptest.SpanKey {
	var k otlptest.SpanKey
	copy(k.TraceID[:], sp.TraceId)
	copy(k.SpanID[:], sp.SpanId)
	return k
}

func (r *recorder) requests() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// TestBacklogDrainsInMergedRequests: a backlog left by an earlier process
// (protobuf, gzip and JSON trace exports interleaved, and metrics) is
// sent in few requests, each of one destination, Content-Type and
// Content-Encoding, within the bound; every span arrives once, and each
// protobuf request carries a run of consecutive stored exports, oldest
// first.
func TestBacklogDrainsInMergedRequests(t *testing.T) {
	coll := otlptest.StartCollector(t)
	dir := filepath.Join(t.TempDir(), "spool")
	const n, spans, bound = 300, 5, 16 << 10
	var (
		exports []stored
		bodies  [][]byte
		want    int
	)
	for i := range n {
		var e stored
		var body []byte
		switch i % 4 {
		case 0, 1:
			body, e.spans = otlptest.TraceBody(spans)
			e.path, e.contentType = tracesPath, "application/x-protobuf"
		case 2:
			body, e.spans = otlptest.TraceBody(spans)
			e.path, e.contentType, e.encoding = tracesPath, "application/x-protobuf", "gzip"
			body = gzipped(t, body)
		case 3:
			if i%8 == 3 {
				body, e.spans = jsonTraceBody(t, spans)
				e.path, e.contentType = tracesPath, "application/json"
			} else {
				body = otlptest.MetricsBody(spans)
				e.path, e.contentType = metricsPath, "application/x-protobuf"
			}
		}
		want += len(e.spans)
		exports = append(exports, e)
		bodies = append(bodies, body)
	}
	storeBacklog(t, dir, coll.URL(), exports, bodies)

	rec := newRecorder(t)
	h := newHarnessOn(t, coll, dir, WithTransport(rec), WithMaxRequestBytes(bound))
	if err := h.rt.ForceFlush(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := h.rt.Stats()
	if st.Records != 0 || st.Delivered != n || st.Quarantined != 0 || st.Retried != 0 {
		t.Fatalf("stats %+v", st)
	}
	if coll.Spans() != want || coll.SpanDuplicates() != 0 || coll.DataPoints() != n/8*spans {
		t.Fatalf("collector: %d spans (want %d), %d duplicates, %d data points", coll.Spans(), want, coll.SpanDuplicates(), coll.DataPoints())
	}

	// Where each stored span is: export index and position.
	index := map[otlptest.SpanKey]int{}
	for i, e := range exports {
		for _, k := range e.spans {
			index[k] = i
		}
	}
	reqs := rec.requests()
	var total int
	for _, b := range bodies {
		total += len(b)
	}
	// Four kinds interleaved, each merged apart from the others: about
	// total/bound requests, and a few more where a claim cut a kind short.
	if len(reqs) > n/10 {
		t.Errorf("%d requests for %d exports of %d bytes in all: not merged", len(reqs), n, total)
	}
	for i, s := range reqs {
		if s.size > bound {
			t.Errorf("request %d: %d bytes before compression, over the bound of %d", i, s.size, bound)
		}
		if len(s.spans) == 0 {
			continue
		}
		// One encoding per request, and a run of consecutive stored
		// exports of that encoding, oldest first.
		prev := -1
		for j, k := range s.spans {
			e, ok := index[k]
			if !ok {
				t.Fatalf("request %d carries a span never stored", i)
			}
			if exports[e].encoding != s.encoding || exports[e].contentType != s.contentType {
				t.Fatalf("request %d (%s, %q) carries an export stored as %s, %q", i, s.contentType, s.encoding, exports[e].contentType, exports[e].encoding)
			}
			if e < prev {
				t.Fatalf("request %d: span %d is of export %d, after export %d: not oldest first", i, j, e, prev)
			}
			for skip := prev + 1; prev >= 0 && skip < e; skip++ {
				if exports[skip].encoding == s.encoding && exports[skip].contentType == s.contentType && exports[skip].path == s.path {
					t.Fatalf("request %d skips export %d of its own kind", i, skip)
				}
			}
			prev = e
		}
	}
	t.Logf("%d exports (%d bytes) in %d requests", n, total, len(reqs))
}

// TestBacklogPackedToTheBound: a backlog of one kind fills its requests
// up to the bound: hardly more requests than its bytes over the bound.
func TestBacklogPackedToTheBound(t *testing.T) {
	coll := otlptest.StartCollector(t)
	dir := filepath.Join(t.TempDir(), "spool")
	const n, bound = 1000, 32 << 10
	exports, bodies := traceExports(n, 5)
	storeBacklog(t, dir, coll.URL(), exports, bodies)
	rec := newRecorder(t)
	h := newHarnessOn(t, coll, dir, WithTransport(rec), WithMaxRequestBytes(bound))
	if err := h.rt.ForceFlush(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := h.rt.Stats(); st.Records != 0 || st.Delivered != n {
		t.Fatalf("stats %+v", st)
	}
	if coll.Spans() != 5*n || coll.SpanDuplicates() != 0 {
		t.Fatalf("collector: %d spans, %d duplicates", coll.Spans(), coll.SpanDuplicates())
	}
	total := 0
	for _, b := range bodies {
		total += len(b)
	}
	least := (total + bound - 1) / bound
	reqs := rec.requests()
	if len(reqs) > least+least/4+2 {
		t.Errorf("%d requests for %d bytes, want about %d of %d bytes", len(reqs), total, least, bound)
	}
	t.Logf("%d exports (%d bytes) in %d requests; %d at the least", n, total, len(reqs), least)
}

// settlementCase stores 8 trace exports, of which refused (if not -1) is
// one the collector cannot decode, and drains them with the collector
// answering as script says.
type settlementCase struct {
	exports []stored
	bad     int
	h       *harness
	rec     *recorder
}

func newSettlementCase(t *testing.T, bad int, prepare func(*otlptest.Collector)) *settlementCase {
	coll := otlptest.StartCollector(t)
	if prepare != nil {
		// Before the Transport, which sends what it finds at once.
		prepare(coll)
	}
	dir := filepath.Join(t.TempDir(), "spool")
	exports, bodies := traceExports(8, 2)
	if bad >= 0 {
		// Whole fields, so it merges, but field 1 is no ResourceSpans:
		// the collector answers 400 to any request carrying it.
		bodies[bad] = []byte{0x0a, 0x02, 0xff, 0xff}
		exports[bad].spans = nil
	}
	storeBacklog(t, dir, coll.URL(), exports, bodies)
	rec := newRecorder(t)
	h := newHarnessOn(t, coll, dir, WithTransport(rec))
	return &settlementCase{exports: exports, bad: bad, h: h, rec: rec}
}

// delivered checks that every good span arrived exactly once.
func (c *settlementCase) delivered(t *testing.T) {
	t.Helper()
	want := 0
	for _, e := range c.exports {
		want += len(e.spans)
		for _, k := range e.spans {
			if !c.h.coll.HasSpan(k.TraceID, k.SpanID) {
				t.Fatalf("span %s never arrived", k)
			}
		}
	}
	if c.h.coll.Spans() != want || c.h.coll.SpanDuplicates() != 0 {
		t.Fatalf("collector: %d spans (want %d), %d duplicates", c.h.coll.Spans(), want, c.h.coll.SpanDuplicates())
	}
}

// TestMergedRequestRefusalBisected: a merged request that the endpoint
// refuses (400) is split until the one export it refuses is found: that
// export alone is quarantined, every other is delivered exactly once, in
// at most 1 + 2·log2(8) requests.
func TestMergedRequestRefusalBisected(t *testing.T) {
	c := newSettlementCase(t, 5, nil)
	if err := c.h.rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := c.h.rt.Stats()
	if st.Quarantined != 1 || st.Delivered != 7 || st.Records != 0 {
		t.Fatalf("stats %+v, want 1 quarantined, 7 delivered", st)
	}
	c.delivered(t)
	if got := c.h.coll.Requests(tracesPath); got > 7 || got < 3 {
		t.Errorf("%d requests, want the merged one and its bisection (3 to 7)", got)
	}
	// Seven good exports delivered, one record quarantined and none
	// left: the quarantined one is the refused export.
}

// TestMergedRequestTooLargeSplit: a 413 to a merged request splits it;
// the halves are delivered and nothing is quarantined for its size.
func TestMergedRequestTooLargeSplit(t *testing.T) {
	c := newSettlementCase(t, -1, func(coll *otlptest.Collector) {
		coll.Script(otlptest.Answer{Status: http.StatusRequestEntityTooLarge})
	})
	if err := c.h.rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := c.h.rt.Stats()
	if st.Quarantined != 0 || st.Delivered != 8 || st.Records != 0 {
		t.Fatalf("stats %+v, want all 8 delivered", st)
	}
	c.delivered(t)
	reqs := c.rec.requests()
	if len(reqs) != 3 || len(reqs[0].spans) != 16 || len(reqs[1].spans)+len(reqs[2].spans) != 16 {
		t.Errorf("requests %d (spans %v), want the merged one then its two halves", len(reqs), spanCounts(reqs))
	}
}

func spanCounts(reqs []sent) []int {
	var out []int
	for _, r := range reqs {
		out = append(out, len(r.spans))
	}
	return out
}

// TestMergedRequestRetryableAllBack: a 503 with Retry-After to a merged
// request sends every export in it back to the lane's wait, none
// quarantined; the Retry-After is obeyed, and then all are delivered
// once, together.
func TestMergedRequestRetryableAllBack(t *testing.T) {
	c := newSettlementCase(t, -1, func(coll *otlptest.Collector) {
		coll.Script(otlptest.Answer{Status: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"30"}}})
	})
	c.h.rt.delivery.wake()
	e := c.h.nextEvent("wait")
	if e.wait != 30*time.Second {
		t.Fatalf("wait %v, want the Retry-After of 30 s", e.wait)
	}
	st := c.h.rt.Stats()
	if st.Records != 8 || st.Retried != 8 || st.Delivered != 0 || st.Quarantined != 0 || c.h.coll.Requests(tracesPath) != 1 {
		t.Fatalf("after the 503: stats %+v, %d requests", st, c.h.coll.Requests(tracesPath))
	}
	c.h.clock.Advance(29 * time.Second)
	if got := c.h.coll.Requests(tracesPath); got != 1 {
		t.Fatalf("%d requests before the Retry-After ended", got)
	}
	c.h.clock.Advance(time.Second)
	if err := c.h.rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := c.h.rt.Stats(); st.Delivered != 8 || st.Records != 0 || st.Quarantined != 0 {
		t.Fatalf("after the wait: %+v", st)
	}
	c.delivered(t)
	// The trial carries one export; the rest follow merged.
	if got := c.h.coll.Requests(tracesPath); got != 3 {
		t.Errorf("%d requests, want the refused merged one, the trial and one merged", got)
	}
}

// TestMergedRequestWithoutCredentialsWaits: a merged request sent with no
// live request's credentials and refused with 401 is not bisected into
// the quarantine: its exports wait for credentials.
func TestMergedRequestWithoutCredentialsWaits(t *testing.T) {
	c := newSettlementCase(t, -1, func(coll *otlptest.Collector) {
		coll.RequireHeader("Authorization", "Bearer live")
	})
	c.h.rt.delivery.wake()
	e := c.h.nextEvent("wait")
	st := c.h.rt.Stats()
	if st.Quarantined != 0 || st.Records != 8 || st.Delivered != 0 || c.h.coll.BadCredentials() != 1 {
		t.Fatalf("stats %+v, %d refused requests (want 1): %+v", st, c.h.coll.BadCredentials(), e)
	}
	if d := destinationStats(t, st, c.h.coll.Endpoint(otlptest.Traces)); d.State != stateCredentials {
		t.Fatalf("destination %+v, want waiting for credentials", d)
	}
}

// TestPartialSuccessCounted: a 2xx answer to a merged request with a
// partial_success delivers every export in it, counts the rejected spans
// in Stats, logs them, and sends nothing again.
func TestPartialSuccessCounted(t *testing.T) {
	resp, err := proto.Marshal(&collectortrace.ExportTraceServiceResponse{
		PartialSuccess: &collectortrace.ExportTracePartialSuccess{RejectedSpans: 3, ErrorMessage: "3 spans too old"}})
	if err != nil {
		t.Fatal(err)
	}
	c := newSettlementCase(t, -1, func(coll *otlptest.Collector) { coll.Script(otlptest.Answer{Body: resp}) })
	if err := c.h.rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := c.h.rt.Stats()
	if st.PartialRejected != 3 || st.Delivered != 8 || st.Records != 0 || st.Retried != 0 {
		t.Fatalf("stats %+v, want 3 partially rejected and all 8 delivered", st)
	}
	if got := c.h.coll.Requests(tracesPath); got != 1 {
		t.Errorf("%d requests, want 1: a partial success is never retried", got)
	}
	if !c.h.logs.has(slog.LevelWarn, "partial_success") {
		t.Errorf("no warning of the partial success in %q", c.h.logs.lines())
	}
}

// TestWindowGrowsAndShrinks: seen from the collector, a healthy backlog
// starts with the initial window of 4 requests in flight and grows past
// it while they succeed; after 503s the destination waits, and once it
// answers again its requests in flight start from a halved window.
func TestWindowGrowsAndShrinks(t *testing.T) {
	coll := otlptest.StartCollector(t)
	dir := filepath.Join(t.TempDir(), "spool")
	exports, bodies := traceExports(600, 1)
	storeBacklog(t, dir, coll.URL(), exports, bodies)
	// Each answer takes 20 ms, so requests overlap and the window fills.
	coll.SetDefault(otlptest.Answer{Delay: 20 * time.Millisecond})
	rec := newRecorder(t)
	// Merging off: one export per request, so that there are many.
	h := newHarnessOn(t, coll, dir, WithTransport(rec), WithMaxRequestBytes(-1))
	h.rt.delivery.wake()
	waitData(t, coll.WaitSpans, 250)
	coll.SetDefault(otlptest.Answer{Status: http.StatusServiceUnavailable, Delay: 20 * time.Millisecond})
	e := h.nextEvent("wait")
	grown := rec.requests()
	peak := 0
	for i, s := range grown {
		if i < 4 && s.inFlight > 4 {
			t.Fatalf("request %d left with %d in flight, over the initial window of 4", i, s.inFlight)
		}
		peak = max(peak, s.inFlight)
	}
	if peak < 8 || peak > 32 {
		t.Fatalf("peak of %d requests in flight while the backlog was accepted, want it grown past 4 (at least 8) and at most 32", peak)
	}

	// Wait for the requests still answering 503, then recover.
	for {
		rec.mu.Lock()
		idle := rec.inFlight == 0
		rec.mu.Unlock()
		if idle {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := len(rec.requests())
	coll.SetDefault(otlptest.Answer{Delay: 20 * time.Millisecond})
	h.clock.Advance(e.wait)
	if err := h.rt.ForceFlush(ctxTimeout(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	after := rec.requests()[before:]
	if len(after) < 2 {
		t.Fatalf("%d requests after the recovery", len(after))
	}
	// The trial goes alone, then the halved window.
	if after[0].inFlight != 1 {
		t.Errorf("the trial left with %d in flight, want alone", after[0].inFlight)
	}
	start := 0
	for _, s := range after[1:min(len(after), 4)] {
		start = max(start, s.inFlight)
	}
	if start > peak/2+1 {
		t.Errorf("after the 503s, %d requests in flight at first; want the window halved from a peak of %d", start, peak)
	}
	if st := h.rt.Stats(); st.Records != 0 || st.Quarantined != 0 {
		t.Fatalf("stats %+v", st)
	}
	if coll.Spans() != 600 || coll.SpanDuplicates() != 0 {
		t.Fatalf("collector: %d spans, %d duplicates", coll.Spans(), coll.SpanDuplicates())
	}
	t.Logf("peak %d in flight; %d at first after recovery", peak, start)
}
