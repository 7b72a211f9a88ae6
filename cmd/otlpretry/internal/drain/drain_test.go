package drain

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/spoolinfo"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

const token = "Bearer drain-token"

// receiver is the scripted collector behind a front on 127.0.0.1 that
// checks the headers of every request it gets before passing it on.
type receiver struct {
	col   *otlptest.Collector
	url   string
	mu    sync.Mutex // guards bad
	bad   []string
	count int
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{col: otlptest.StartCollector(t)}
	up, err := url.Parse(r.col.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(up)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	proxy.Transport = tr
	// Requests the drain gives up on are not worth a log line.
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.check(req)
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(front.Close)
	r.url = front.URL
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, b := range r.bad {
			t.Error(b)
		}
	})
	return r
}

// check records what is wrong with the headers of one request.
func (r *receiver) check(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	want := map[string]string{
		"Content-Type":  "application/x-protobuf",
		"Authorization": token,
		"User-Agent":    "otlpretry-drain",
		"X-Scope":       "tenant-1", // stored with the record
	}
	for k, v := range want {
		if got := req.Header.Values(k); len(got) != 1 || got[0] != v {
			r.bad = append(r.bad, fmt.Sprintf("request %d: %s %q, want %q", r.count, k, got, v))
		}
	}
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		r.bad = append(r.bad, fmt.Sprintf("request %d: %s %s, want POST /v1/traces", r.count, req.Method, req.URL.Path))
	}
}

func (r *receiver) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// fill stores n trace records addressed to base in a new spool folder and
// returns the folder and the records' sizes on disk.
func fill(t *testing.T, base string, n int) (string, []int64) {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.WithLogger(slog.New(slog.DiscardHandler)), spool.WithHeaderAllowList("X-Scope"))
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for range n {
		body, _ := otlptest.TraceBody(5)
		rec := &spool.Record{
			URL:         base + "/v1/traces",
			ContentType: "application/x-protobuf",
			Signal:      spool.SignalTraces,
			Header:      http.Header{"X-Scope": {"tenant-1"}},
			Body:        body,
		}
		if err := sp.Put(rec); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, rec.Size())
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, sizes
}

// run drains dir one record at a time, recording the waits asked for
// (without waiting them), every Progress and the warnings logged.
type run struct {
	cfg      Config
	mu       sync.Mutex
	waits    []time.Duration
	progress []Progress
	logs     []string
}

func newRun(t *testing.T, dir string) *run {
	r := &run{}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	r.cfg = Config{
		Dir:         dir,
		Headers:     http.Header{"Authorization": {token}},
		Concurrency: 1,
		// One record per request, so that each answer scripted is one
		// record's; the merged requests have tests of their own.
		MaxRequestBytes: -1,
		AttemptTimeout:  5 * time.Second,
		Transport:       tr,
		Logger:          slog.New(&captureHandler{r: r}),
		Sleep: func(_ context.Context, d time.Duration) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.waits = append(r.waits, d)
		},
		Progress: func(p Progress) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.progress = append(r.progress, p)
		},
	}
	return r
}

func (r *run) do(t *testing.T) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

type captureHandler struct{ r *run }

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += fmt.Sprintf(" %s=%q", a.Key, a.Value.String())
		return true
	})
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	h.r.logs = append(h.r.logs, line)
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// inspect reports what dir holds afterwards.
func inspect(t *testing.T, dir string) *spoolinfo.Report {
	t.Helper()
	rep, err := spoolinfo.Inspect(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func sum(sizes []int64) int64 {
	var n int64
	for _, s := range sizes {
		n += s
	}
	return n
}

func TestDrainDeliversEverything(t *testing.T) {
	recv := startReceiver(t)
	dir, sizes := fill(t, recv.url, 6)
	r := newRun(t, dir)
	r.cfg.Concurrency = 3
	res := r.do(t)
	want := Progress{TotalRecords: 6, TotalBytes: sum(sizes), SentRecords: 6, SentBytes: sum(sizes)}
	if res.Progress != want || res.Left != 0 || res.Stopped != "" || res.NotSent() != 0 {
		t.Fatalf("result %+v, want %+v and nothing left", res, want)
	}
	if got := recv.col.Spans(); got != 30 {
		t.Errorf("collector has %d spans, want 30", got)
	}
	if got := recv.requests(); got != 6 {
		t.Errorf("%d requests, want 6", got)
	}
	if rep := inspect(t, dir); rep.Total.Records != 0 || rep.Quarantined.Records != 0 {
		t.Errorf("spool after the drain: %+v", rep)
	}
}

func TestDrainToAnotherEndpoint(t *testing.T) {
	recv := startReceiver(t)
	dir, _ := fill(t, "http://"+closedPort(t), 3)
	r := newRun(t, dir)
	u, _ := url.Parse(recv.url)
	r.cfg.Endpoint = u
	if res := r.do(t); res.SentRecords != 3 || res.Left != 0 {
		t.Fatalf("result %+v, want 3 sent", res)
	}
	if got := recv.requests(); got != 3 {
		t.Errorf("%d requests at the given endpoint, want 3", got)
	}
}

// closedPort is an address on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDrainConnectionRefused(t *testing.T) {
	addr := closedPort(t)
	dir, sizes := fill(t, "http://"+addr, 4)
	r := newRun(t, dir)
	r.cfg.Retries = 2
	res := r.do(t)
	if res.SentRecords != 0 || res.Rejected != 0 || res.Failed != 1 || res.Left != 4 || res.LeftBytes != sum(sizes) {
		t.Fatalf("result %+v, want nothing sent, 1 failed, 4 left", res)
	}
	wantStop := "the endpoint http://" + addr + "/v1/traces is failing: connection refused"
	if res.Stopped != wantStop {
		t.Errorf("stopped %q, want %q", res.Stopped, wantStop)
	}
	// No answer: the backoff, 1 s then 2 s.
	if want := []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(r.waits, want) {
		t.Errorf("waits %v, want %v", r.waits, want)
	}
	rep := inspect(t, dir)
	if rep.Total.Records != 4 || rep.Waiting.Records != 4 || rep.Attempted != 1 || rep.Quarantined.Records != 0 {
		t.Errorf("spool after the drain: %+v, want 4 waiting, 1 attempted", rep)
	}
}

func TestDrainObeysRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		retryAfter string
		max        time.Duration
		want       time.Duration
	}{
		{"seconds", "7", 0, 7 * time.Second},
		{"date", now.Add(25 * time.Second).Format(http.TimeFormat), 0, 25 * time.Second},
		{"capped by MaxRetryAfter", "120", 0, 30 * time.Second},
		{"a longer cap", "120", time.Hour, 120 * time.Second},
		{"garbage: the backoff", "soon", 0, time.Second},
		{"date in the past: the backoff", now.Add(-time.Minute).Format(http.TimeFormat), 0, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recv := startReceiver(t)
			dir, sizes := fill(t, recv.url, 3)
			recv.col.Script(otlptest.Answer{Status: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {tc.retryAfter}}})
			r := newRun(t, dir)
			r.cfg.Retries = 1
			r.cfg.MaxRetryAfter = tc.max
			r.cfg.Now = func() time.Time { return now }
			res := r.do(t)
			if res.SentRecords != 3 || res.SentBytes != sum(sizes) || res.Left != 0 || res.Failed != 0 {
				t.Fatalf("result %+v, want all 3 sent", res)
			}
			if want := []time.Duration{tc.want}; !slices.Equal(r.waits, want) {
				t.Errorf("waits %v, want %v", r.waits, want)
			}
			if got := recv.requests(); got != 4 {
				t.Errorf("%d requests, want 4 (one retried)", got)
			}
			if got := recv.col.Spans(); got != 15 {
				t.Errorf("collector has %d spans, want 15", got)
			}
		})
	}
}

func TestDrainQuarantinesRefused(t *testing.T) {
	recv := startReceiver(t)
	dir, sizes := fill(t, recv.url, 5)
	recv.col.Script(
		otlptest.Answer{},
		otlptest.Answer{Status: http.StatusBadRequest, Body: []byte("  bad data\n")},
		otlptest.Answer{Status: http.StatusNotFound, Body: []byte("no such path")},
	)
	r := newRun(t, dir)
	r.cfg.Retries = 3
	res := r.do(t)
	delivered := sizes[0] + sizes[3] + sizes[4]
	if res.SentRecords != 3 || res.SentBytes != delivered || res.Rejected != 2 || res.Failed != 0 || res.Left != 0 || res.Stopped != "" {
		t.Fatalf("result %+v, want 3 sent (%d bytes), 2 refused", res, delivered)
	}
	if res.NotSent() != 2 {
		t.Errorf("NotSent %d, want 2", res.NotSent())
	}
	if len(r.waits) != 0 {
		t.Errorf("waited %v before a refusal: refusals are not retried", r.waits)
	}
	if got := recv.requests(); got != 5 {
		t.Errorf("%d requests, want 5", got)
	}
	for _, want := range []string{`answer="HTTP 400: bad data"`, `answer="HTTP 404: no such path"`} {
		if !slices.ContainsFunc(r.logs, func(l string) bool { return strings.Contains(l, "quarantined") && strings.Contains(l, want) }) {
			t.Errorf("no quarantine warning with %s in %q", want, r.logs)
		}
	}
	if rep := inspect(t, dir); rep.Total.Records != 0 || rep.Quarantined.Records != 2 {
		t.Errorf("spool after the drain: %+v, want 2 quarantined", rep)
	}
}

// After Retries retries of one record the drain stops: the records not
// tried stay in the spool as they were.
func TestDrainStopsAfterRepeatedFailures(t *testing.T) {
	recv := startReceiver(t)
	dir, sizes := fill(t, recv.url, 5)
	recv.col.Script(otlptest.Answer{}) // the first record goes through
	recv.col.SetDefault(otlptest.Answer{Status: http.StatusBadGateway})
	r := newRun(t, dir)
	r.cfg.Retries = 2
	res := r.do(t)
	if res.SentRecords != 1 || res.SentBytes != sizes[0] || res.Failed != 1 || res.Rejected != 0 || res.Left != 4 || res.LeftBytes != sum(sizes[1:]) {
		t.Fatalf("result %+v, want 1 sent, 1 failed, 4 left", res)
	}
	if want := "the endpoint " + recv.url + "/v1/traces is failing: HTTP 502 Bad Gateway"; res.Stopped != want {
		t.Errorf("stopped %q, want %q", res.Stopped, want)
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(r.waits, want) {
		t.Errorf("waits %v, want %v", r.waits, want)
	}
	// One delivery, then the failing record tried 1+2 times; nothing after.
	if got := recv.requests(); got != 4 {
		t.Errorf("%d requests, want 4", got)
	}
	rep := inspect(t, dir)
	if rep.Total.Records != 4 || rep.Waiting.Records != 4 || rep.Attempted != 1 {
		t.Errorf("spool after the drain: %+v, want 4 waiting, 1 of them attempted", rep)
	}
}

// Progress counts as sent only what the endpoint accepted, and its counts
// only grow.
func TestDrainProgressCountsOnlyDelivered(t *testing.T) {
	recv := startReceiver(t)
	dir, sizes := fill(t, recv.url, 6)
	recv.col.Script(
		otlptest.Answer{},
		otlptest.Answer{Status: http.StatusBadRequest},
		otlptest.Answer{Status: http.StatusServiceUnavailable},
		otlptest.Answer{},
		otlptest.Answer{Status: http.StatusServiceUnavailable},
	)
	recv.col.SetDefault(otlptest.Answer{Status: http.StatusServiceUnavailable})
	r := newRun(t, dir)
	r.cfg.Retries = 1
	res := r.do(t)
	// Record 1 delivered, 2 refused, 3 delivered at its retry, 4 fails
	// twice and stops the drain; 5 and 6 are not tried.
	want := Progress{TotalRecords: 6, TotalBytes: sum(sizes), SentRecords: 2, SentBytes: sizes[0] + sizes[2], Rejected: 1, Failed: 1}
	if res.Progress != want || res.Left != 3 {
		t.Fatalf("result %+v, want %+v and 3 left", res, want)
	}
	if got := recv.col.Spans(); got != 5*res.SentRecords {
		t.Errorf("collector has %d spans, want %d", got, 5*res.SentRecords)
	}
	if len(r.progress) == 0 || r.progress[0] != (Progress{TotalRecords: 6, TotalBytes: sum(sizes)}) {
		t.Fatalf("first progress %+v, want the totals and nothing sent", r.progress)
	}
	for i := 1; i < len(r.progress); i++ {
		p, q := r.progress[i-1], r.progress[i]
		if q.SentRecords < p.SentRecords || q.SentBytes < p.SentBytes || q.Rejected < p.Rejected || q.Failed < p.Failed {
			t.Errorf("progress went back: %+v then %+v", p, q)
		}
	}
	if last := r.progress[len(r.progress)-1]; last != want {
		t.Errorf("last progress %+v, want %+v", last, want)
	}
}

// A per-attempt timeout is the endpoint's failure, named as such.
func TestDrainAttemptTimeout(t *testing.T) {
	recv := startReceiver(t)
	dir, _ := fill(t, recv.url, 2)
	recv.col.SetDefault(otlptest.Answer{Hang: true})
	r := newRun(t, dir)
	r.cfg.AttemptTimeout = 50 * time.Millisecond
	res := r.do(t)
	if res.SentRecords != 0 || res.Failed != 1 || res.Left != 2 {
		t.Fatalf("result %+v, want 1 failed, 2 left", res)
	}
	if !strings.HasSuffix(res.Stopped, "is failing: timeout") {
		t.Errorf("stopped %q, want the timeout named", res.Stopped)
	}
}

// The drain's own context ending is not the endpoint's failure.
func TestDrainInterrupted(t *testing.T) {
	recv := startReceiver(t)
	dir, _ := fill(t, recv.url, 3)
	recv.col.SetDefault(otlptest.Answer{Hang: true})
	r := newRun(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Interrupt once the first request is being held.
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		_ = recv.col.WaitRequests(wctx, "/v1/traces", 1)
		cancel()
	}()
	res, err := Run(ctx, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stopped != "interrupted" || res.SentRecords != 0 || res.Left != 3 {
		t.Fatalf("result %+v, want interrupted with 3 left", res)
	}
}

func TestDrainNotASpool(t *testing.T) {
	if _, err := Run(context.Background(), Config{Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not a spool folder") {
		t.Fatalf("err %v, want not a spool folder", err)
	}
}
