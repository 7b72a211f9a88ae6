package e2e

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// backlogExports is how many exports of each signal and encoding the
// backlog holds.
const backlogExports = 40

// TestTransportDrainsMergedBacklog: a backlog that an earlier process left
// (protobuf, gzip-compressed protobuf and JSON exports of traces, metrics
// and logs, interleaved) is drained by a Transport, merging on by default,
// through the latency proxy (25 ms each way) to the Collector's OTLP/HTTP
// receiver. Every span, data point and log record is received exactly
// once (duplicates are counted and reported), nothing is quarantined or
// left, and the receiver sees far fewer requests than exports.
func TestTransportDrainsMergedBacklog(t *testing.T) {
	t.Parallel()
	r := scenario(t, "merge/transport-backlog")
	s := startSink(t)
	var received atomic.Int64 // requests that reached the receiver
	upstream, _ := url.Parse(s.url)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		received.Add(1)
		httputil.NewSingleHostReverseProxy(upstream).ServeHTTP(w, req)
	}))
	t.Cleanup(front.Close)
	proxy := otlptest.StartProxy(t, front.URL)
	if err := proxy.SetMode(otlptest.Latency(25 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.WithLogger(otlptest.Logger(t, "spool")))
	if err != nil {
		t.Fatal(err)
	}
	type kind struct {
		sig      spool.Signal
		format   string
		encoding string
	}
	var kinds []kind
	for _, sig := range []spool.Signal{spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs} {
		kinds = append(kinds, kind{sig, "protobuf", ""}, kind{sig, "protobuf", "gzip"}, kind{sig, "json", ""})
	}
	paths := map[spool.Signal]string{spool.SignalTraces: "/v1/traces", spool.SignalMetrics: "/v1/metrics", spool.SignalLogs: "/v1/logs"}
	types := map[string]string{"protobuf": "application/x-protobuf", "json": "application/json"}
	nonce := rand.Uint64()
	var spans []otlptest.SpanKey
	exports := 0
	for i := range backlogExports {
		for k, kd := range kinds {
			// Distinct items in every export: its own index.
			body, keys := exportBody(t, kd.sig, kd.format, nonce, i*len(kinds)+k)
			spans = append(spans, keys...)
			if kd.encoding == "gzip" {
				body = gzipBody(t, body)
			}
			rec := &spool.Record{URL: proxy.URL() + paths[kd.sig], Signal: kd.sig, ContentType: types[kd.format],
				ContentEncoding: kd.encoding, Body: body}
			if err := sp.Put(rec); err != nil {
				t.Fatal(err)
			}
			exports++
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	// The receiver needs no credentials: what was left is sent at once.
	rt := newTransport(t, "transport", dir, otlpretry.WithEndpointHeaders(proxy.URL(), nil))
	ctx, cancel := context.WithTimeout(context.Background(), flushLimit)
	defer cancel()
	if err := rt.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)

	st := rt.Stats()
	if st.Records != 0 || st.Delivered != uint64(exports) || st.Quarantined != 0 {
		t.Errorf("stats: %d left, %d delivered, %d quarantined; want 0, %d, 0", st.Records, st.Delivered, st.Quarantined, exports)
	}
	want := backlogExports * 3 * mergeItems // of each signal
	spansGot, spanDups := s.spanCounts()
	points, pointDups := s.pointCounts()
	logs, logDups := s.recordCounts()
	for _, c := range []struct {
		what      string
		got, dups int
	}{{"spans", spansGot, spanDups}, {"data points", points, pointDups}, {"log records", logs, logDups}} {
		if c.got != want {
			t.Errorf("receiver: %d distinct %s (%d duplicates), want %d", c.got, c.what, c.dups, want)
		}
	}
	if n := s.missing(spans); n != 0 {
		t.Errorf("%d stored spans never reached the receiver under their IDs", n)
	}
	requests := received.Load()
	if requests >= int64(exports)/10 {
		t.Errorf("the receiver saw %d requests for %d exports: not merged", requests, exports)
	}
	r.set(func(r *row) {
		r.counted = true
		r.produced = 3 * want
		r.acked = int(st.Delivered) * mergeItems
		r.received = spansGot + points + logs
		r.lost = 3*want - min(spansGot+points+logs, 3*want)
		r.dups = spanDups + pointDups + logDups
		r.backlog = exports
	})
	t.Logf("%d exports in %d requests through 50 ms round trips, drained in %v", exports, requests, took.Round(time.Millisecond))
}
