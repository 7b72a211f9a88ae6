package drain

import (
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// fillBodies stores one trace record per body, addressed to base, in a new
// spool folder.
func fillBodies(t *testing.T, base string, bodies [][]byte) string {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.WithLogger(slog.New(slog.DiscardHandler)), spool.WithHeaderAllowList("X-Scope"))
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range bodies {
		rec := &spool.Record{URL: base + "/v1/traces", ContentType: "application/x-protobuf", Signal: spool.SignalTraces,
			Header: http.Header{"X-Scope": {"tenant-1"}}, Body: body}
		if err := sp.Put(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// traceBodies makes n exports of 5 spans each.
func traceBodies(n int) [][]byte {
	var out [][]byte
	for range n {
		b, _ := otlptest.TraceBody(5)
		out = append(out, b)
	}
	return out
}

// mergedRun is newRun with merging on, as the command runs.
func mergedRun(t *testing.T, dir string) *run {
	r := newRun(t, dir)
	r.cfg.MaxRequestBytes = 0
	return r
}

// The drain merges a backlog into requests: 40 small exports in one.
func TestDrainMerges(t *testing.T) {
	recv := startReceiver(t)
	dir := fillBodies(t, recv.url, traceBodies(40))
	res := mergedRun(t, dir).do(t)
	if res.SentRecords != 40 || res.Left != 0 || res.Rejected != 0 || res.Stopped != "" {
		t.Fatalf("result %+v, want all 40 sent", res)
	}
	if got := recv.col.Spans(); got != 200 || recv.col.SpanDuplicates() != 0 {
		t.Errorf("collector has %d spans (%d duplicates), want 200", got, recv.col.SpanDuplicates())
	}
	if got := recv.requests(); got != 1 {
		t.Errorf("%d requests, want 1 merged", got)
	}
}

// A merged request the endpoint refuses is split until the one export it
// refuses is found: that one alone is quarantined, the others delivered
// once.
func TestDrainMergedRefusalBisected(t *testing.T) {
	recv := startReceiver(t)
	bodies := traceBodies(8)
	bodies[2] = []byte{0x0a, 0x02, 0xff, 0xff} // whole fields, but no ResourceSpans
	dir := fillBodies(t, recv.url, bodies)
	r := mergedRun(t, dir)
	res := r.do(t)
	if res.SentRecords != 7 || res.Rejected != 1 || res.Left != 0 || res.Failed != 0 || res.Stopped != "" {
		t.Fatalf("result %+v, want 7 sent and 1 refused", res)
	}
	if got := recv.col.Spans(); got != 35 || recv.col.SpanDuplicates() != 0 {
		t.Errorf("collector has %d spans (%d duplicates), want 35", got, recv.col.SpanDuplicates())
	}
	if got := recv.requests(); got < 3 || got > 7 {
		t.Errorf("%d requests, want the merged one and its bisection (3 to 7)", got)
	}
	if rep := inspect(t, dir); rep.Total.Records != 0 || rep.Quarantined.Records != 1 {
		t.Errorf("spool after the drain: %+v, want 1 quarantined", rep)
	}
}

// A retryable answer to a merged request sends every record in it back;
// after the wait they go again, together, and each arrives once.
func TestDrainMergedRetried(t *testing.T) {
	recv := startReceiver(t)
	dir := fillBodies(t, recv.url, traceBodies(10))
	recv.col.Script(otlptest.Answer{Status: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"3"}}})
	r := mergedRun(t, dir)
	r.cfg.Retries = 1
	res := r.do(t)
	if res.SentRecords != 10 || res.Failed != 0 || res.Left != 0 {
		t.Fatalf("result %+v, want all 10 sent", res)
	}
	if want := []time.Duration{3 * time.Second}; !slices.Equal(r.waits, want) {
		t.Errorf("waits %v, want %v", r.waits, want)
	}
	if got := recv.requests(); got != 2 {
		t.Errorf("%d requests, want 2 (the merged one, retried)", got)
	}
	if got := recv.col.Spans(); got != 50 || recv.col.SpanDuplicates() != 0 {
		t.Errorf("collector has %d spans (%d duplicates), want 50", got, recv.col.SpanDuplicates())
	}
}

// A 413 to a merged request splits it; nothing is quarantined for size.
func TestDrainMergedTooLargeSplit(t *testing.T) {
	recv := startReceiver(t)
	dir := fillBodies(t, recv.url, traceBodies(6))
	recv.col.Script(otlptest.Answer{Status: http.StatusRequestEntityTooLarge})
	res := mergedRun(t, dir).do(t)
	if res.SentRecords != 6 || res.Rejected != 0 || res.Left != 0 {
		t.Fatalf("result %+v, want all 6 sent", res)
	}
	if got := recv.requests(); got != 3 {
		t.Errorf("%d requests, want 3 (the merged one and its halves)", got)
	}
}
