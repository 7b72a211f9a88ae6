package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// mergeExports and mergeItems shape the backlog of each case: exports
// stored, items (spans, data points, log records) in each.
const (
	mergeExports = 60
	mergeItems   = 20
)

// mergeBound is the Packer's bound in these tests: small enough that the
// backlog of a case takes several merged requests.
const mergeBound = 32 << 10

// TestMergedBacklogOnCollector stores a backlog of exports of each signal,
// in protobuf and JSON, plain and gzip, in a real spool; claims it, packs
// it with batch.Packer and settles each request with batch.Settle against
// the OpenTelemetry Collector's OTLP/HTTP receiver, behind the latency
// proxy. One stored export of each case is one the receiver refuses. Every
// other span, data point and log record must be received exactly once,
// the refused export alone quarantined, the spool left empty, and the
// receiver must have seen fewer requests than exports: the merging.
func TestMergedBacklogOnCollector(t *testing.T) {
	t.Parallel()
	for _, sig := range []spool.Signal{spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs} {
		for _, format := range []string{"protobuf", "json"} {
			for _, enc := range []string{"", "gzip"} {
				name := fmt.Sprintf("%s/%s", sig, map[string]string{"protobuf": "proto", "json": "json"}[format])
				if enc != "" {
					name += "+" + enc
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					runMergedBacklog(t, name, sig, format, enc)
				})
			}
		}
	}
}

func runMergedBacklog(t *testing.T, name string, sig spool.Signal, format, enc string) {
	r := scenario(t, "merge/"+name)
	logger := otlptest.Logger(t, "spool")
	s := startSink(t)
	var received atomic.Int64 // requests that reached the receiver
	upstream, _ := url.Parse(s.url)
	counter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		httputil.NewSingleHostReverseProxy(upstream).ServeHTTP(w, r)
	}))
	t.Cleanup(counter.Close)
	proxy := otlptest.StartProxy(t, counter.URL)
	if err := proxy.SetMode(otlptest.Latency(5 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}

	sp, err := spool.Open(t.TempDir(), spool.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })

	path := map[spool.Signal]string{spool.SignalTraces: "/v1/traces", spool.SignalMetrics: "/v1/metrics", spool.SignalLogs: "/v1/logs"}[sig]
	contentType := map[string]string{"protobuf": "application/x-protobuf", "json": "application/json"}[format]
	bad := mergeExports / 3
	nonce := rand.Uint64()
	var spans []otlptest.SpanKey // traces: every span stored in a good export
	for i := range mergeExports {
		body, keys := exportBody(t, sig, format, nonce, i)
		if i == bad {
			body = refusedBody(format, sig)
		} else {
			spans = append(spans, keys...)
		}
		if enc == "gzip" {
			body = gzipBody(t, body)
		}
		rec := &spool.Record{URL: proxy.URL() + path, Signal: sig, ContentType: contentType, ContentEncoding: enc, Body: body}
		if err := sp.Put(rec); err != nil {
			t.Fatal(err)
		}
	}

	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	send := func(ctx context.Context, r *batch.Request) batch.Answer {
		return post(ctx, client, r)
	}
	packer := batch.NewPacker(mergeBound)
	var (
		requests, sends int
		verdicts        = map[batch.Verdict]int{}
	)
	for {
		recs, err := sp.Claim(mergeExports)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, req := range packer.Pack(recs) {
			requests++
			res := batch.Settle(context.Background(), req, send)
			sends += res.Sends
			for _, o := range res.Records {
				verdicts[o.Verdict]++
				switch o.Verdict {
				case batch.Delivered:
					err = sp.Ack(o.Record.ID)
				case batch.Quarantine:
					err = sp.Quarantine(o.Record.ID, o.Reason)
				default:
					t.Fatalf("record %s: %v (%s) from the healthy receiver", o.Record.ID, o.Verdict, o.Reason)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for _, rec := range req.Records() {
				sp.Recycle(rec)
			}
		}
	}

	if verdicts[batch.Delivered] != mergeExports-1 || verdicts[batch.Quarantine] != 1 {
		t.Errorf("verdicts %v, want %d delivered and 1 quarantined", verdicts, mergeExports-1)
	}
	st := sp.Stats()
	if st.Records != 0 || st.Quarantined != 1 {
		t.Errorf("spool holds %d records and %d quarantined, want 0 and 1", st.Records, st.Quarantined)
	}
	want := (mergeExports - 1) * mergeItems
	var distinct, dups int
	switch sig {
	case spool.SignalTraces:
		distinct, dups = s.spanCounts()
	case spool.SignalMetrics:
		distinct, dups = s.pointCounts()
	case spool.SignalLogs:
		distinct, dups = s.recordCounts()
	}
	if distinct != want || dups != 0 {
		t.Errorf("receiver counted %d distinct items and %d duplicates, want %d and 0", distinct, dups, want)
	}
	if sig == spool.SignalTraces {
		if n := s.missing(spans); n != 0 {
			t.Errorf("%d of the stored spans never reached the receiver under their IDs", n)
		}
	}
	r.set(func(r *row) {
		r.counted = true
		r.produced = mergeExports * mergeItems
		r.acked = verdicts[batch.Delivered] * mergeItems
		r.received = distinct
		r.lost = want - min(distinct, want)
		r.dups = dups
		r.backlog = mergeExports
	})
	if got := received.Load(); got != int64(sends) {
		t.Errorf("the receiver saw %d requests, the sender sent %d", got, sends)
	}
	if requests >= mergeExports/2 {
		t.Errorf("%d requests for %d exports: not merged", requests, mergeExports)
	}
	t.Logf("%d exports in %d merged requests, %d sends with the bisection to the refused one", mergeExports, requests, sends)
}

// post sends a request as a sender does and reports the answer.
func post(ctx context.Context, client *http.Client, r *batch.Request) batch.Answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL(), r.Body())
	if err != nil {
		return batch.Answer{Outcome: retry.Rejected, Reason: err.Error()}
	}
	req.ContentLength = r.Len()
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(r.Body()), nil }
	req.Header.Set("Content-Type", r.ContentType())
	if e := r.ContentEncoding(); e != "" {
		req.Header.Set("Content-Encoding", e)
	}
	resp, err := client.Do(req)
	out, wait := retry.Evaluate(ctx, resp, err, time.Now)
	a := batch.Answer{Outcome: out, Wait: wait, Reason: retry.Cause(resp, err)}
	if resp != nil {
		a.Status = resp.StatusCode
		if out == retry.Rejected {
			a.Reason = retry.Refusal(resp)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return a
}

// exportBody builds export i of a backlog: mergeItems items of signal,
// distinct from every other export's under the sink's counting, and for
// traces the IDs of its spans.
func exportBody(t *testing.T, sig spool.Signal, format string, nonce uint64, i int) ([]byte, []otlptest.SpanKey) {
	t.Helper()
	now := pcommon.NewTimestampFromTime(time.Now())
	var (
		b    []byte
		err  error
		keys []otlptest.SpanKey
	)
	switch sig {
	case spool.SignalTraces:
		td := ptrace.NewTraces()
		spans := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
		for k := range mergeItems {
			sp := spans.AppendEmpty()
			var tid [16]byte
			binary.BigEndian.PutUint64(tid[:8], nonce)
			binary.BigEndian.PutUint64(tid[8:], uint64(i*mergeItems+k))
			sid := [8]byte{1, 2, 3, 4, 5, 6, 7, byte(k + 1)}
			sp.SetTraceID(tid)
			sp.SetSpanID(sid)
			keys = append(keys, otlptest.SpanKey{TraceID: tid, SpanID: sid})
			sp.SetName(fmt.Sprintf("merge-%d-%d", i, k))
			sp.SetStartTimestamp(now)
			sp.SetEndTimestamp(now)
		}
		if format == "json" {
			b, err = (&ptrace.JSONMarshaler{}).MarshalTraces(td)
		} else {
			b, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		}
	case spool.SignalMetrics:
		md := pmetric.NewMetrics()
		m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		m.SetName(fmt.Sprintf("merge.%x.%d", nonce, i))
		points := m.SetEmptyGauge().DataPoints()
		for k := range mergeItems {
			dp := points.AppendEmpty()
			dp.SetTimestamp(now)
			dp.SetIntValue(int64(k))
			dp.Attributes().PutInt("k", int64(k))
		}
		if format == "json" {
			b, err = (&pmetric.JSONMarshaler{}).MarshalMetrics(md)
		} else {
			b, err = (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
		}
	case spool.SignalLogs:
		ld := plog.NewLogs()
		lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
		for k := range mergeItems {
			lr := lrs.AppendEmpty()
			lr.SetTimestamp(now)
			lr.Body().SetStr(fmt.Sprintf("merge %x #%d.%d", nonce, i, k))
		}
		if format == "json" {
			b, err = (&plog.JSONMarshaler{}).MarshalLogs(ld)
		} else {
			b, err = (&plog.ProtoMarshaler{}).MarshalLogs(ld)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return b, keys
}

// refusedBody is an export the receiver refuses with 400 but that merges
// like any other: for protobuf, whole fields at the top, whose field 1
// does not decode as a resource; for JSON, a resource that is a number.
func refusedBody(format string, sig spool.Signal) []byte {
	if format == "json" {
		field := map[spool.Signal]string{spool.SignalTraces: "resourceSpans", spool.SignalMetrics: "resourceMetrics", spool.SignalLogs: "resourceLogs"}[sig]
		return []byte(`{"` + field + `":[{"resource":42}]}`)
	}
	return []byte{0x0a, 0x02, 0xff, 0xff}
}

func gzipBody(t *testing.T, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
