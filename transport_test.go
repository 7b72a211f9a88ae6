package otlpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// harness is a Transport on a fake clock in front of a scripted collector,
// with its log lines and sender decisions captured.
type harness struct {
	t      *testing.T
	coll   *otlptest.Collector
	clock  *clockwork.FakeClock
	rt     *Transport
	dir    string
	logs   *logCapture
	events chan senderEvent
}

func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	return newHarnessOn(t, otlptest.StartCollector(t), filepath.Join(t.TempDir(), "spool"), opts...)
}

// newHarnessOn is newHarness on a given collector and spool folder, for a
// process that finds what another left.
func newHarnessOn(t *testing.T, coll *otlptest.Collector, dir string, opts ...Option) *harness {
	t.Helper()
	h := &harness{
		t:      t,
		coll:   coll,
		clock:  clockwork.NewFakeClockAt(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)),
		dir:    dir,
		logs:   &logCapture{},
		events: make(chan senderEvent, 100),
	}
	base := []Option{
		WithDir(h.dir),
		withClock(h.clock),
		withJitter(func() float64 { return 0 }),
		withEvents(func(e senderEvent) { h.events <- e }),
		WithLogger(slog.New(h.logs)),
		// The collector needs no credentials: what an earlier process
		// left is sent at once.
		WithEndpointHeaders(coll.URL(), nil),
	}
	rt, err := New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.rt = rt
	t.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return h
}

// export posts n spans to the collector through the transport, as an OTLP
// exporter does.
func (h *harness) export(n int, header http.Header) (*http.Response, []otlptest.SpanKey, error) {
	body, keys := otlptest.TraceBody(n)
	req, _ := http.NewRequest(http.MethodPost, h.coll.Endpoint(otlptest.Traces), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := h.rt.Client().Do(req)
	return resp, keys, err
}

// nextEvent waits for the sender's next decision of the given kind.
func (h *harness) nextEvent(kind string) senderEvent {
	h.t.Helper()
	return waitEvent(h.t, h.events, kind)
}

// waitEvent takes events until one of the given kind, for at most 10 s.
func waitEvent(t *testing.T, events <-chan senderEvent, kind string) senderEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		select {
		case e := <-events:
			if e.kind == kind {
				return e
			}
		case <-ctx.Done():
			t.Fatalf("no %q event from the sender", kind)
		}
	}
}

func (h *harness) waitRequests(path string, n int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.coll.WaitRequests(ctx, path, n); err != nil {
		h.t.Fatal(err)
	}
}

// advanceWhenBlocked moves the fake clock once n timers wait on it.
func (h *harness) advanceWhenBlocked(n int, d time.Duration) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.clock.BlockUntilContext(ctx, n); err != nil {
		h.t.Fatalf("waiting for %d timers: %v", n, err)
	}
	h.clock.Advance(d)
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const tracesPath = "/v1/traces"

func TestDirectSuccessPassesThrough(t *testing.T) {
	h := newHarness(t)
	resp, keys, err := h.export(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "" {
		t.Fatalf("status %d, spooled header %q", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
	}
	if got := h.coll.Spans(); got != len(keys) {
		t.Fatalf("collector has %d spans, want %d", got, len(keys))
	}
	st := h.rt.Stats()
	if st.Direct != 1 || st.Spooled != 0 || st.Records != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRejectedAnswerGoesBackUnchanged(t *testing.T) {
	h := newHarness(t)
	h.coll.Script(otlptest.Answer{Status: 400, Body: []byte("bad payload")})
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 400 || string(body) != "bad payload" {
		t.Fatalf("got %d %q, want the collector's 400 unchanged", resp.StatusCode, body)
	}
	st := h.rt.Stats()
	if st.Rejected != 1 || st.Spooled != 0 || st.Records != 0 || h.coll.Requests(tracesPath) != 1 {
		t.Fatalf("stats %+v, requests %d", st, h.coll.Requests(tracesPath))
	}
	if !h.logs.has(slog.LevelWarn, "refused an export") {
		t.Fatalf("no warning logged: %v", h.logs.lines())
	}
}

func TestImmediateRetryAfterOneSecond(t *testing.T) {
	h := newHarness(t, WithMaxHold(-1))
	h.coll.Script(otlptest.Answer{Status: 503})
	done := make(chan *http.Response)
	go func() {
		resp, _, err := h.export(2, nil)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	h.waitRequests(tracesPath, 1)
	h.advanceWhenBlocked(1, 999*time.Millisecond)
	// Still waiting: the retry is due at 1 s exactly.
	h.advanceWhenBlocked(1, time.Millisecond)
	resp := <-done
	readAll(t, resp)
	if resp.StatusCode != 200 || h.coll.Requests(tracesPath) != 2 || h.coll.Spans() != 2 {
		t.Fatalf("status %d, requests %d, spans %d", resp.StatusCode, h.coll.Requests(tracesPath), h.coll.Spans())
	}
	if st := h.rt.Stats(); st.Direct != 1 || st.Retried != 1 || st.Spooled != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestImmediateRetryHonoursShortRetryAfter(t *testing.T) {
	h := newHarness(t, WithMaxHold(-1))
	h.coll.Script(otlptest.Answer{Status: 429, Header: http.Header{"Retry-After": {"3"}}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, _, err := h.export(1, nil)
		if err == nil {
			resp.Body.Close()
		}
	}()
	h.waitRequests(tracesPath, 1)
	h.advanceWhenBlocked(1, 2*time.Second)
	if n := h.coll.Requests(tracesPath); n != 1 {
		t.Fatalf("retried after 2 s although the server asked for 3 s (%d requests)", n)
	}
	h.advanceWhenBlocked(1, time.Second)
	<-done
	if h.coll.Requests(tracesPath) != 2 || h.coll.Spans() != 1 {
		t.Fatalf("requests %d spans %d", h.coll.Requests(tracesPath), h.coll.Spans())
	}
}

func TestLongRetryAfterGoesStraightToSpool(t *testing.T) {
	h := newHarness(t)
	h.coll.SetDefault(otlptest.Answer{Status: 503, Header: http.Header{"Retry-After": {"30"}}})
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "1" {
		t.Fatalf("status %d spooled %q", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
	}
	st := h.rt.Stats()
	if st.Spooled != 1 || st.Records != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The sender's own attempt also got Retry-After 30: it waits that long.
	if e := h.nextEvent("wait"); e.wait != 30*time.Second {
		t.Fatalf("sender waits %v, want the server's 30s", e.wait)
	}
}

func TestHandOffAnswersWithEmptyResponseOfRequestEncoding(t *testing.T) {
	for _, tc := range []struct{ contentType, wantBody, wantType string }{
		{"application/x-protobuf", "", "application/x-protobuf"},
		{"application/json", "{}", "application/json"},
		{"application/json; charset=utf-8", "{}", "application/json"},
		{"Application/JSON", "{}", "application/json"},
	} {
		t.Run(tc.contentType, func(t *testing.T) {
			h := newHarness(t, WithImmediateRetryDelay(-1))
			h.coll.Stop()
			req, _ := http.NewRequest(http.MethodPost, h.coll.Endpoint(otlptest.Traces), strings.NewReader(`{"resourceSpans":[]}`))
			req.Header.Set("Content-Type", tc.contentType)
			resp, err := h.rt.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != 200 || string(body) != tc.wantBody || resp.Header.Get("Content-Type") != tc.wantType {
				t.Fatalf("got %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
			}
		})
	}
}

// TestOutageSpoolsThenDrains walks the whole path: two failed attempts, the
// hand-off, the circuit skipping the endpoint, backoff, and the drain.
func TestOutageSpoolsThenDrains(t *testing.T) {
	h := newHarness(t, WithMaxHold(-1))
	h.coll.SetDefault(otlptest.Answer{Status: 503})

	done := make(chan struct{})
	var keys []otlptest.SpanKey
	go func() {
		defer close(done)
		resp, k, err := h.export(5, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("first export: %v", err)
			return
		}
		resp.Body.Close()
		keys = append(keys, k...)
	}()
	h.waitRequests(tracesPath, 1)
	h.advanceWhenBlocked(1, time.Second) // the immediate retry
	<-done
	if st := h.rt.Stats(); st.Spooled != 1 || !st.CircuitOpen {
		t.Fatalf("after two failures: %+v", st)
	}
	// The sender tried at once, failed, and waits 1 s.
	if e := h.nextEvent("wait"); e.wait != time.Second || e.out != retry.ServerBusy {
		t.Fatalf("first backoff %+v", e)
	}
	before := h.coll.Requests(tracesPath)
	for range 10 {
		resp, k, err := h.export(5, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("export while the circuit is open: %v", err)
		}
		resp.Body.Close()
		keys = append(keys, k...)
	}
	if got := h.coll.Requests(tracesPath); got != before {
		t.Fatalf("the circuit is open but exports reached the endpoint: %d requests, want %d", got, before)
	}
	if st := h.rt.Stats(); st.Records != 11 {
		t.Fatalf("want 11 spooled exports, stats %+v", st)
	}
	// Still failing: the backoff doubles.
	h.clock.Advance(time.Second)
	if e := h.nextEvent("wait"); e.wait != 2*time.Second {
		t.Fatalf("second backoff %v, want 2s", e.wait)
	}
	h.coll.ResetDefault()
	h.clock.Advance(2 * time.Second)
	h.nextEvent("idle")
	st := h.rt.Stats()
	if st.Records != 0 || st.Delivered != 11 || st.CircuitOpen {
		t.Fatalf("after recovery: %+v", st)
	}
	if h.coll.Spans() != len(keys) || h.coll.SpanDuplicates() != 0 {
		t.Fatalf("collector has %d spans (%d duplicates), want %d", h.coll.Spans(), h.coll.SpanDuplicates(), len(keys))
	}
	// The circuit is closed: exports go direct again.
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Otlpretry-Spooled") != "" || h.rt.Stats().Direct != 1 {
		t.Fatalf("export after recovery was not direct: %+v", h.rt.Stats())
	}
	if !h.logs.has(slog.LevelInfo, "backlog delivered") {
		t.Fatalf("no drain message: %v", h.logs.lines())
	}
}

// TestHoldAnswersExporterWhileSlowAttemptSucceeds: the exporter is answered
// at the end of its hold; the attempt, still running, delivers the export
// and the stored copy is deleted, so nothing is sent twice.
func TestHoldAnswersExporterWhileSlowAttemptSucceeds(t *testing.T) {
	gate := &gatedTransport{next: http.DefaultTransport, arrived: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, WithTransport(gate))
	done := make(chan *http.Response)
	go func() {
		resp, _, err := h.export(3, nil)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	<-gate.arrived
	h.advanceWhenBlocked(1, DefaultMaxHold)
	resp := <-done
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "1" {
		t.Fatalf("exporter got %d, spooled %q", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
	}
	if st := h.rt.Stats(); st.Records != 1 || !st.CircuitOpen {
		t.Fatalf("while the attempt runs: %+v", st)
	}
	close(gate.release)
	if err := h.rt.waitDetached(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := h.rt.Stats()
	if st.Records != 0 || st.Direct != 1 || st.Spooled != 0 || st.CircuitOpen {
		t.Fatalf("after the attempt succeeded: %+v", st)
	}
	if h.coll.Spans() != 3 || h.coll.SpanDuplicates() != 0 || h.coll.Requests(tracesPath) != 1 {
		t.Fatalf("spans %d dups %d requests %d", h.coll.Spans(), h.coll.SpanDuplicates(), h.coll.Requests(tracesPath))
	}
	h.rt.spool.Flush()
	if countRecords(t, h.dir) != 0 {
		t.Fatal("the stored copy of a delivered export is still on disk")
	}
}

// gatedTransport holds its first request until release is closed, so a
// test decides when a slow endpoint answers.
type gatedTransport struct {
	next             http.RoundTripper
	arrived, release chan struct{}
	once             sync.Once
}

func (g *gatedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.arrived)
		<-g.release
	}
	return g.next.RoundTrip(req)
}

// TestHoldThenFailureLeavesExportToSender: the held export's attempt fails
// after the exporter was answered; its record goes to the background
// sender, which delivers it with the rest once the endpoint recovers.
func TestHoldThenFailureLeavesExportToSender(t *testing.T) {
	gate := &gatedTransport{next: http.DefaultTransport, arrived: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, WithTransport(gate), WithImmediateRetryDelay(-1))
	h.coll.SetDefault(otlptest.Answer{Status: 503})
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, _, err := h.export(2, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("export: %v", err)
			return
		}
		resp.Body.Close()
	}()
	<-gate.arrived
	h.advanceWhenBlocked(1, DefaultMaxHold)
	<-done
	// The circuit opened at the end of the hold: the next export is stored
	// at once.
	resp, _, err := h.export(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Otlpretry-Spooled") != "1" {
		t.Fatal("export after the hold expired went direct")
	}
	e := h.nextEvent("wait") // the sender failed on the second export
	close(gate.release)      // the held attempt now gets its 503
	if err := h.rt.waitDetached(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := h.rt.Stats(); st.Spooled != 2 || st.Records != 2 || st.Direct != 0 {
		t.Fatalf("after the held attempt failed: %+v", st)
	}
	h.coll.ResetDefault()
	h.clock.Advance(e.wait)
	h.nextEvent("idle")
	if st := h.rt.Stats(); st.Records != 0 || st.Delivered != 2 || h.coll.Spans() != 4 || h.coll.SpanDuplicates() != 0 {
		t.Fatalf("after recovery: %+v, spans %d dups %d", st, h.coll.Spans(), h.coll.SpanDuplicates())
	}
}

// TestForceFlushHurriesTheImmediateRetry: an export answered at the end of
// its hold, whose immediate retry is still waiting out its delay, is
// retried at once by ForceFlush: a flush does not sit out the delay (the
// fake clock never moves here).
func TestForceFlushHurriesTheImmediateRetry(t *testing.T) {
	h := newHarness(t)
	h.coll.Stop()
	done := make(chan *http.Response, 1)
	var keys []otlptest.SpanKey
	go func() {
		resp, k, err := h.export(3, nil)
		if err != nil {
			t.Errorf("export: %v", err)
		}
		keys = k
		done <- resp
	}()
	h.advanceWhenBlocked(2, DefaultMaxHold) // the hold and the retry delay
	resp := <-done
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "1" {
		t.Fatalf("exporter got %d, spooled %q", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
	}
	if err := h.coll.Start(); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("ForceFlush waited for the retry delay: %v", err)
	}
	if st := h.rt.Stats(); st.Records != 0 || st.Direct != 1 || st.Delivered != 0 {
		t.Fatalf("after ForceFlush: %+v", st)
	}
	if h.coll.Spans() != len(keys) || h.coll.SpanDuplicates() != 0 {
		t.Fatalf("collector has %d spans (%d duplicates), want %d", h.coll.Spans(), h.coll.SpanDuplicates(), len(keys))
	}
}

func TestBackoffDoublesToCapWithRetryAfterObeyed(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1), WithBackoff(time.Second, 8*time.Second))
	h.coll.SetDefault(otlptest.Answer{Status: 500})
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var got []time.Duration
	for i := range 5 {
		e := h.nextEvent("wait")
		got = append(got, e.wait)
		if i == 4 {
			// Before the clock ends the wait: the trial it lets go must
			// meet the new answer, not race with it.
			h.coll.SetDefault(otlptest.Answer{Status: 429, Header: http.Header{"Retry-After": {"42"}}})
		}
		h.clock.Advance(e.wait)
	}
	want := []time.Duration{1, 2, 4, 8, 8}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("waits %v, want %v seconds", got, want)
		}
	}
	if e := h.nextEvent("wait"); e.wait != 42*time.Second {
		t.Fatalf("wait %v, want the server's Retry-After 42s", e.wait)
	}
}

func TestBackoffJitterStaysUnderCap(t *testing.T) {
	for _, j := range []float64{0, 0.25, 0.999} {
		b := backoff{initial: time.Second, max: 128 * time.Second, jitter: func() float64 { return j }}
		for i := range 12 {
			w := b.next()
			if w > 128*time.Second || w < 500*time.Millisecond {
				t.Fatalf("jitter %v, step %d: wait %v outside [0.5s, 128s]", j, i, w)
			}
		}
		if b.current != 128*time.Second {
			t.Fatalf("step did not reach the cap: %v", b.current)
		}
	}
}

// TestUnreachableEndpointIsProbed: with the backoff at its cap, delivery
// still resumes within a probe interval of the endpoint's return.
func TestUnreachableEndpointIsProbed(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1), WithBackoff(128*time.Second, 128*time.Second))
	h.coll.Stop()
	resp, keys, err := h.export(4, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if e := h.nextEvent("wait"); e.wait != 128*time.Second || e.out != retry.Unreachable {
		t.Fatalf("backoff %+v", e)
	}
	h.clock.Advance(DefaultProbeInterval)
	if e := h.nextEvent("probe"); e.reachable {
		t.Fatal("probe of a stopped collector succeeded")
	}
	h.restartAndProbe(keys)
	if elapsed := h.clock.Since(h.rt.created); elapsed > 3*DefaultProbeInterval {
		t.Fatalf("delivered after %v of fake time, want within the probe interval", elapsed)
	}
}

// restartAndProbe starts the stopped collector, lets the next probe go
// and waits until it has ended the wait, the sender is idle and every
// span of keys has arrived.
func (h *harness) restartAndProbe(keys []otlptest.SpanKey) {
	h.t.Helper()
	if err := h.coll.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.clock.Advance(DefaultProbeInterval)
	if e := h.nextEvent("probe"); !e.reachable {
		h.t.Fatal("probe of a running collector failed")
	}
	h.nextEvent("idle")
	if h.coll.Spans() != len(keys) {
		h.t.Fatalf("collector has %d spans, want %d", h.coll.Spans(), len(keys))
	}
}

// TestAcceptedProbeIsTheTrial: when a destination that did not answer at
// all takes a probe, the probe was the trial: the whole backlog goes at
// once in one merged request, not one record first and the rest a round
// trip later.
func TestAcceptedProbeIsTheTrial(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1), WithBackoff(time.Minute, time.Minute))
	h.coll.Stop()
	var keys []otlptest.SpanKey
	for range 3 {
		resp, k, err := h.export(2, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		keys = append(keys, k...)
	}
	if e := h.nextEvent("wait"); e.out != retry.Unreachable {
		t.Fatalf("wait %+v", e)
	}
	if st := h.rt.Stats(); st.Records != 3 {
		t.Fatalf("%d records stored, want 3", st.Records)
	}
	h.restartAndProbe(keys)
	// The probe, then one merged request of the three records.
	if n := h.coll.Requests(tracesPath); n != 2 {
		t.Fatalf("%d requests after the outage, want the probe and one merged request", n)
	}
}

func TestBusyServerIsNotProbed(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1))
	h.coll.SetDefault(otlptest.Answer{Status: 503})
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h.nextEvent("wait")
	n := h.coll.Requests(tracesPath)
	h.clock.Advance(500 * time.Millisecond)
	h.clock.Advance(400 * time.Millisecond)
	select {
	case e := <-h.events:
		t.Fatalf("unexpected sender event %+v before the backoff ended", e)
	default:
	}
	if got := h.coll.Requests(tracesPath); got != n {
		t.Fatalf("%d requests during the backoff of a busy server, want none", got-n)
	}
}

func TestRefusedSpooledExportIsQuarantined(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1))
	h.coll.Script(otlptest.Answer{Status: 503}, otlptest.Answer{Status: 400, Body: []byte("schema error")})
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The direct path's 503 sets the sender's backoff, as its own would.
	h.clock.Advance(h.nextEvent("wait").wait)
	h.nextEvent("idle")
	st := h.rt.Stats()
	if st.Quarantined != 1 || st.Records != 0 || st.Delivered != 0 {
		t.Fatalf("stats %+v", st)
	}
	whys, _ := filepath.Glob(filepath.Join(h.dir, "quarantine", "*.why"))
	if len(whys) != 1 {
		t.Fatalf("want one .why file, got %v", whys)
	}
	why, _ := os.ReadFile(whys[0])
	if !strings.Contains(string(why), "HTTP 400: schema error") {
		t.Fatalf("reason %q", why)
	}
}

func TestForceFlush(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1))
	if err := h.rt.ForceFlush(context.Background()); err != nil {
		t.Fatalf("empty spool: %v", err)
	}
	h.coll.SetDefault(otlptest.Answer{Status: 503})
	for range 3 {
		resp, _, err := h.export(2, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	h.nextEvent("wait")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := h.rt.ForceFlush(ctx)
	if err == nil || !strings.Contains(err.Error(), "3 export(s)") || !errors.Is(err, context.Canceled) {
		t.Fatalf("ForceFlush with the endpoint down: %v", err)
	}
	// The endpoint is back: ForceFlush cuts the backoff short.
	h.coll.ResetDefault()
	if err := h.rt.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h.coll.Spans() != 6 || h.rt.Stats().Records != 0 {
		t.Fatalf("spans %d, stats %+v", h.coll.Spans(), h.rt.Stats())
	}
}

// TestShutdownKeepsBacklogAndNextProcessSendsIt also checks that the
// credentials never reach the disk and that the next transport sends the
// adopted exports with the headers of its own live request.
func TestShutdownKeepsBacklogAndNextProcessSendsIt(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1))
	h.coll.Stop()
	secret := "Bearer s3cr3t-t0ken"
	for range 4 {
		resp, _, err := h.export(3, http.Header{"Authorization": {secret}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := h.rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := countRecords(t, h.dir); got != 4 {
		t.Fatalf("%d records on disk after Shutdown, want 4", got)
	}
	assertNotOnDisk(t, h.dir, "s3cr3t")

	if err := h.coll.Start(); err != nil {
		t.Fatal(err)
	}
	rt2, err := New(WithDir(h.dir), WithLogger(slog.New(h.logs)))
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Shutdown(context.Background())
	if st := rt2.Stats(); st.Records != 4 {
		t.Fatalf("new transport sees %d records, want 4", st.Records)
	}
	// A live request supplies the credentials for the adopted ones.
	body, _ := otlptest.TraceBody(1)
	req, _ := http.NewRequest(http.MethodPost, h.coll.Endpoint(otlptest.Traces), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Authorization", secret)
	resp, err := rt2.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := rt2.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if h.coll.Spans() != 13 {
		t.Fatalf("collector has %d spans, want 13", h.coll.Spans())
	}
	if got := h.coll.LastHeader(tracesPath).Get("Authorization"); got != secret {
		t.Fatalf("adopted exports sent with Authorization %q", got)
	}
}

func TestSpoolFullDropsWithError(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1), WithMaxBytes(8<<10))
	h.coll.Stop()
	var dropped int
	for range 20 {
		resp, _, err := h.export(10, nil)
		if err != nil {
			if !strings.Contains(err.Error(), "dropping an export") || !errors.Is(err, spool.ErrFull) {
				t.Fatalf("error %v", err)
			}
			dropped++
			continue
		}
		resp.Body.Close()
	}
	st := h.rt.Stats()
	if dropped == 0 || st.Dropped.Full != uint64(dropped) || int(st.Spooled)+dropped != 20 {
		t.Fatalf("dropped %d, stats %+v", dropped, st)
	}
	if n := h.logs.count(slog.LevelError, "dropping an export"); n != 1 {
		t.Fatalf("%d drop errors logged, want 1 per interval: %v", n, h.logs.lines())
	}
	if n := h.logs.count(slog.LevelWarn, "Currently retrying"); n != 1 {
		t.Fatalf("%d retry warnings logged, want 1 per interval", n)
	}
	h.clock.Advance(time.Minute)
	resp, _, err := h.export(10, nil)
	if err == nil {
		resp.Body.Close()
	}
	if n := h.logs.count(slog.LevelError, "dropping an export"); n != 2 {
		t.Fatalf("%d drop errors after the interval, want 2", n)
	}
}

func TestOtherRequestsPassThrough(t *testing.T) {
	h := newHarness(t)
	resp, err := h.rt.Client().Get(h.coll.URL() + "/v1/traces")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 || h.rt.Stats().Direct != 0 {
		t.Fatalf("GET was handled as an export: %d %+v", resp.StatusCode, h.rt.Stats())
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func countRecords(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := spool.Walk(dir, func(_ spool.StoredRecord, err error) error {
		if err != nil {
			t.Errorf("damaged spool: %v", err)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func assertNotOnDisk(t *testing.T, dir, secret string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the secret", path)
		}
		if strings.Contains(path, secret) {
			t.Errorf("a file name holds the secret: %s", path)
		}
		return nil
	})
}

// logCapture is a slog.Handler that keeps every record.
type logCapture struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
	return nil
}
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCapture) WithGroup(string) slog.Handler      { return l }

func (l *logCapture) count(level slog.Level, substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

func (l *logCapture) has(level slog.Level, substr string) bool { return l.count(level, substr) > 0 }

func (l *logCapture) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		out = append(out, r.Level.String()+" "+r.Message)
	}
	return out
}

// TestBusyServerProbedDuringLongWaits: during a backoff wait longer than the
// busy-probe interval, an empty export checks the server; its acceptance
// ends the wait, while a 503 to the probe does not.
func TestBusyServerProbedDuringLongWaits(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1), WithBackoff(64*time.Second, 64*time.Second), WithBusyProbe(10*time.Second))
	h.coll.SetDefault(otlptest.Answer{Status: 503})
	resp, keys, err := h.export(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if e := h.nextEvent("wait"); e.wait != 64*time.Second {
		t.Fatalf("wait %v", e.wait)
	}
	// A second export, stored at once while the circuit is open.
	resp, more, err := h.export(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	keys = append(keys, more...)
	h.clock.Advance(10 * time.Second)
	if e := h.nextEvent("probe"); e.reachable {
		t.Fatal("a 503 to the probe ended the wait")
	}
	h.coll.ResetDefault()
	before := h.coll.Requests(tracesPath)
	h.clock.Advance(10 * time.Second)
	if e := h.nextEvent("probe"); !e.reachable {
		t.Fatal("an accepted probe did not end the wait")
	}
	h.nextEvent("idle")
	if h.coll.Spans() != len(keys) {
		t.Fatalf("spans %d, want %d", h.coll.Spans(), len(keys))
	}
	// A busy server that takes an empty export may still refuse data: the
	// probe is followed by a trial of one record before the backlog.
	if n := h.coll.Requests(tracesPath) - before; n != 3 {
		t.Fatalf("%d requests after the accepted probe, want the probe, the trial and the rest", n)
	}
}

// TestForceFlushNamesExportsWaitingForCredentials: exports left by an
// earlier process for a destination this one has no headers for (no live
// request, nothing configured) are not sent; ForceFlush does not wait for
// them and says, by destination, that they wait for credentials. With
// empty headers configured for it (it needs none), they are sent at once.
func TestForceFlushNamesExportsWaitingForCredentials(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1))
	h.coll.Stop()
	resp, keys, err := h.export(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := h.rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.coll.Start(); err != nil {
		t.Fatal(err)
	}
	rt2, err := New(WithDir(h.dir), WithLogger(slog.New(h.logs)))
	if err != nil {
		t.Fatal(err)
	}
	err = rt2.ForceFlush(ctxTimeout(t, 10*time.Second))
	dest := h.coll.Endpoint(otlptest.Traces)
	if !errors.Is(err, ErrNotDelivered) || !strings.Contains(err.Error(), dest+": waiting for credentials") {
		t.Fatalf("ForceFlush: %v, want %s waiting for credentials", err, dest)
	}
	st := rt2.Stats()
	if len(st.Destinations) != 1 || st.Destinations[0].URL != dest || st.Destinations[0].State != "waiting for credentials" ||
		st.Destinations[0].CircuitOpen || st.Records != 1 || h.coll.Requests(tracesPath) != 0 {
		t.Fatalf("stats %+v, requests %d", st, h.coll.Requests(tracesPath))
	}
	if err := rt2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	rt3, err := New(WithDir(h.dir), WithLogger(slog.New(h.logs)), WithEndpointHeaders(h.coll.URL(), http.Header{}))
	if err != nil {
		t.Fatal(err)
	}
	defer rt3.Shutdown(context.Background())
	if err := rt3.ForceFlush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if h.coll.Spans() != len(keys) {
		t.Fatalf("spans %d, want %d", h.coll.Spans(), len(keys))
	}
}

// TestUnstorableExportIsCountedAsDropped: a body that cannot be read again
// for the spool never reaches it, so the transport counts the drop itself.
func TestUnstorableExportIsCountedAsDropped(t *testing.T) {
	h := newHarness(t, WithImmediateRetryDelay(-1), WithMaxHold(-1))
	h.coll.Stop()
	req, _ := http.NewRequest(http.MethodPost, h.coll.Endpoint(otlptest.Traces), strings.NewReader("x"))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("buffer gone") }
	_, err := h.rt.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "dropping an export") {
		t.Fatalf("got %v, want a dropped export", err)
	}
	if st := h.rt.Stats(); st.Dropped.TooLarge != 1 || st.Dropped.Total() != 1 || st.Records != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestProbeInterval: an unreachable endpoint is probed every probe
// interval, but one whose name does not resolve at most once a second, so
// that a long DNS outage does not become ten queries a second.
func TestProbeInterval(t *testing.T) {
	cfg := &config{probeInterval: DefaultProbeInterval, busyProbeInterval: DefaultBusyProbeInterval}
	dnsErr := fmt.Errorf("Post: %w", &net.DNSError{Err: "no such host", Name: "collector.example", IsNotFound: true})
	cases := []struct {
		name string
		r    result
		wait time.Duration
		want time.Duration
	}{
		{"refused", result{out: retry.Unreachable, nameLookup: isNameLookup(errors.New("connect: connection refused"))}, time.Minute, DefaultProbeInterval},
		{"name does not resolve", result{out: retry.Unreachable, nameLookup: isNameLookup(dnsErr)}, time.Minute, time.Second},
		{"busy, long wait", result{out: retry.ServerBusy}, time.Minute, DefaultBusyProbeInterval},
		{"busy, short wait", result{out: retry.ServerBusy}, 2 * time.Second, 0},
		{"busy with Retry-After", result{out: retry.ServerBusy, retryAfter: time.Minute}, time.Minute, 0},
	}
	for _, tc := range cases {
		if got := probeEvery(cfg, tc.r, tc.wait); got != tc.want {
			t.Errorf("%s: probe every %v, want %v", tc.name, got, tc.want)
		}
	}
	cfg.probeInterval = 0
	if got := probeEvery(cfg, cases[1].r, time.Minute); got != 0 {
		t.Errorf("probes off, name does not resolve: probe every %v, want 0", got)
	}
}

// fakeDeadline is an exporter's context whose deadline is on the
// harness's fake clock: the transport reads it, the real clock never ends
// it.
type fakeDeadline struct {
	context.Context
	deadline time.Time
}

func (c fakeDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

// exportCtx is export with the exporter's context.
func (h *harness) exportCtx(ctx context.Context, n int) (*http.Response, error) {
	body, _ := otlptest.TraceBody(n)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.coll.Endpoint(otlptest.Traces), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	return h.rt.Client().Do(req)
}

// exportAsync is exportCtx on another goroutine: the exporter's answer
// arrives on the channel, and an error fails the test.
func (h *harness) exportAsync(ctx context.Context, n int) <-chan *http.Response {
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := h.exportCtx(ctx, n)
		if err != nil {
			h.t.Error(err)
		}
		done <- resp
	}()
	return done
}

// TestRetrySkippedPastExporterDeadline: while the exporter waits, the
// immediate retry is skipped when the exporter's deadline would pass
// before it is sent, with the attempts on the exporter's goroutine (no
// hold) as on a worker (held, the exporter not yet answered): the export
// is stored and the exporter answered at once, not at the end of the hold.
func TestRetrySkippedPastExporterDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"held", nil},
		{"no hold", []Option{WithMaxHold(-1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.opts...)
			h.coll.Script(otlptest.Answer{Status: 503})
			// The retry would be sent 1 s after the first attempt fails;
			// the exporter gives up after 800 ms.
			ctx := fakeDeadline{context.Background(), h.clock.Now().Add(800 * time.Millisecond)}
			done := h.exportAsync(ctx, 2)
			var resp *http.Response
			select {
			case resp = <-done:
			case <-time.After(5 * time.Second):
				h.clock.Advance(DefaultMaxHold) // let the exporter go
				<-done
				t.Fatal("the exporter waited for an immediate retry due after its deadline")
			}
			readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("Otlpretry-Spooled") != "1" {
				t.Fatalf("exporter got %d, spooled %q", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
			}
			if st := h.rt.Stats(); st.Spooled != 1 || st.Direct != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestHandedOffExportRetriesPastExporterDeadline: once a held export has
// been stored and the exporter answered at the end of the hold, the
// exporter's deadline no longer matters (nothing waits on it, and the
// attempts run on the transport's context): the immediate retry is made as
// for any export, and delivers it.
func TestHandedOffExportRetriesPastExporterDeadline(t *testing.T) {
	gate := &gatedTransport{next: http.DefaultTransport, arrived: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, WithTransport(gate))
	h.coll.Script(otlptest.Answer{Status: 503})
	ctx := fakeDeadline{context.Background(), h.clock.Now().Add(800 * time.Millisecond)}
	done := h.exportAsync(ctx, 2)
	<-gate.arrived
	h.advanceWhenBlocked(1, DefaultMaxHold) // the hold ends: stored, the exporter answered
	resp := <-done
	readAll(t, resp)
	if resp.Header.Get("Otlpretry-Spooled") != "1" {
		t.Fatal("the exporter was not answered at the end of the hold")
	}
	// The first attempt now fails, 300 ms before the exporter's deadline;
	// the retry is due 1 s later.
	close(gate.release)
	h.advanceWhenBlocked(1, time.Second)
	if err := h.rt.waitDetached(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := h.rt.Stats(); st.Direct != 1 || st.Retried != 1 || st.Records != 0 || st.Spooled != 0 {
		t.Fatalf("stats %+v", st)
	}
	if h.coll.Requests(tracesPath) != 2 || h.coll.Spans() != 2 {
		t.Fatalf("requests %d, spans %d", h.coll.Requests(tracesPath), h.coll.Spans())
	}
}

// TestDirectFailureRetryAfterHoldsTheSender: when the direct path's last
// answer carries a Retry-After, the sender waits that long before sending
// the handed-off export, as it would after a failure of its own; it does
// not send it again at once.
func TestDirectFailureRetryAfterHoldsTheSender(t *testing.T) {
	h := newHarness(t, WithMaxHold(-1))
	busy := otlptest.Answer{Status: 503, Header: http.Header{"Retry-After": {"3"}}}
	h.coll.Script(busy, busy) // the first attempt and the immediate retry
	done := make(chan error, 1)
	go func() {
		resp, _, err := h.export(2, nil)
		if err == nil {
			readAll(t, resp)
			if resp.Header.Get("Otlpretry-Spooled") != "1" {
				err = fmt.Errorf("status %d, not stored", resp.StatusCode)
			}
		}
		done <- err
	}()
	h.waitRequests(tracesPath, 1)
	h.advanceWhenBlocked(1, 3*time.Second) // the immediate retry waits the server's 3 s
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e := h.nextEvent("wait"); e.wait != 3*time.Second {
		t.Fatalf("sender waits %v, want the retry's Retry-After 3s", e.wait)
	}
	if n := h.coll.Requests(tracesPath); n != 2 {
		t.Fatalf("%d requests before the wait ended, want 2 (the sender must not send at once)", n)
	}
	h.clock.Advance(3 * time.Second)
	h.nextEvent("idle")
	if st := h.rt.Stats(); st.Delivered != 1 || st.Records != 0 || h.coll.Spans() != 2 || h.coll.Requests(tracesPath) != 3 {
		t.Fatalf("after the wait: %+v, spans %d, requests %d", st, h.coll.Spans(), h.coll.Requests(tracesPath))
	}
}

// TestHeldFailureRetryAfterHoldsTheSender: the same for an export answered
// at the end of its hold whose attempt then fails with a Retry-After.
func TestHeldFailureRetryAfterHoldsTheSender(t *testing.T) {
	gate := &gatedTransport{next: http.DefaultTransport, arrived: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, WithTransport(gate), WithImmediateRetryDelay(-1))
	h.coll.Script(otlptest.Answer{Status: 503, Header: http.Header{"Retry-After": {"3"}}})
	done := make(chan error, 1)
	go func() {
		resp, _, err := h.export(2, nil)
		if err == nil {
			readAll(t, resp)
		}
		done <- err
	}()
	<-gate.arrived
	h.advanceWhenBlocked(1, DefaultMaxHold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(gate.release) // the held attempt now gets its 503 with Retry-After 3
	if err := h.rt.waitDetached(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if e := h.nextEvent("wait"); e.wait != 3*time.Second {
		t.Fatalf("sender waits %v, want the held attempt's Retry-After 3s", e.wait)
	}
	if n := h.coll.Requests(tracesPath); n != 1 {
		t.Fatalf("%d requests before the wait ended, want 1", n)
	}
	h.clock.Advance(3 * time.Second)
	h.nextEvent("idle")
	if st := h.rt.Stats(); st.Delivered != 1 || st.Records != 0 || h.coll.Spans() != 2 || h.coll.SpanDuplicates() != 0 {
		t.Fatalf("after the wait: %+v, spans %d dups %d", st, h.coll.Spans(), h.coll.SpanDuplicates())
	}
}
