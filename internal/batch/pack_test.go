package batch

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry/spool"
)

const (
	tracesURL = "http://127.0.0.1:4318/v1/traces"
	protoType = "application/x-protobuf"
	jsonType  = "application/json"
)

// traceBody is a protobuf traces export of spans named name#0, name#1...,
// padded by attribute-free span names to about size bytes when size > 0.
func traceBody(name string, spans, size int) []byte {
	req := &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{}},
	}}}
	pad := ""
	if size > 0 {
		pad = strings.Repeat("x", max(size/spans-40, 0))
	}
	for i := range spans {
		req.ResourceSpans[0].ScopeSpans[0].Spans = append(req.ResourceSpans[0].ScopeSpans[0].Spans, &tracepb.Span{
			TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8),
			Name: fmt.Sprintf("%s#%d%s", name, i, pad),
		})
	}
	b, err := proto.Marshal(req)
	if err != nil {
		panic(err)
	}
	return b
}

// spanNames decodes a protobuf traces body (compressed per encoding) and
// returns its span names up to the first '#'-suffix padding.
func spanNames(t testing.TB, body []byte, encoding string) []string {
	t.Helper()
	plain := unzip(t, body, encoding)
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(plain, &req); err != nil {
		t.Fatalf("merged body does not decode: %v", err)
	}
	var names []string
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				names = append(names, strings.TrimRight(sp.Name, "x"))
			}
		}
	}
	return names
}

func unzip(t testing.TB, body []byte, encoding string) []byte {
	t.Helper()
	var (
		r   io.Reader
		err error
	)
	switch encoding {
	case "gzip":
		var gr *gzip.Reader
		gr, err = gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			// One member only: a merged body must not rely on
			// decoders that read past the first.
			gr.Multistream(false)
			r = gr
		}
	case "deflate":
		r, err = zlib.NewReader(bytes.NewReader(body))
	default:
		return body
	}
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

func zip(t testing.TB, plain []byte, encoding string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch encoding {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	default:
		return plain
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func record(url string, signal spool.Signal, contentType, encoding string, body []byte) *spool.Record {
	return &spool.Record{URL: url, Signal: signal, ContentType: contentType, ContentEncoding: encoding, Body: body}
}

// traceRecords returns n protobuf trace records whose spans are named
// r0#0, r1#0, ..., each body about size bytes.
func traceRecords(t testing.TB, n, size int, encoding string) []*spool.Record {
	recs := make([]*spool.Record, n)
	for i := range recs {
		body := traceBody(fmt.Sprintf("r%d", i), 1, size)
		if encoding != "" {
			body = zip(t, body, encoding)
		}
		recs[i] = record(tracesURL, spool.SignalTraces, protoType, encoding, body)
	}
	return recs
}

func expectNames(from, to int) []string {
	var names []string
	for i := from; i < to; i++ {
		names = append(names, fmt.Sprintf("r%d#0", i))
	}
	return names
}

func TestPackProtobufBound(t *testing.T) {
	recs := traceRecords(t, 10, 1000, "")
	size := len(recs[0].Body)
	p := NewPacker(3*size + size/2) // room for three, not four
	reqs := p.Pack(recs)
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4 (3+3+3+1)", len(reqs))
	}
	next := 0
	for i, r := range reqs {
		want := min(3, 10-next)
		if len(r.Records()) != want {
			t.Fatalf("request %d carries %d records, want %d", i, len(r.Records()), want)
		}
		if r.Len() > int64(p.MaxBytes()) {
			t.Errorf("request %d is %d bytes, over the bound %d", i, r.Len(), p.MaxBytes())
		}
		if got := int64(len(r.Bytes())); got != r.Len() {
			t.Errorf("request %d: Len %d, body %d bytes", i, r.Len(), got)
		}
		body, _ := io.ReadAll(r.Body())
		if !bytes.Equal(body, r.Bytes()) {
			t.Errorf("request %d: Body and Bytes differ", i)
		}
		if got := spanNames(t, body, ""); !slices.Equal(got, expectNames(next, next+want)) {
			t.Errorf("request %d spans %v, want %v", i, got, expectNames(next, next+want))
		}
		next += want
	}
}

func TestPackMergedProtobufAliasesStoredBodies(t *testing.T) {
	recs := traceRecords(t, 5, 500, "")
	reqs := NewPacker(0).Pack(recs)
	if len(reqs) != 1 || !reqs[0].Merged() {
		t.Fatalf("want one merged request, got %d", len(reqs))
	}
	for i, piece := range reqs[0].wire {
		if &piece[0] != &recs[i].Body[0] {
			t.Errorf("piece %d is a copy, not the stored body", i)
		}
	}
}

func TestPackKeepsApart(t *testing.T) {
	other := "http://127.0.0.1:4318/v1/other"
	body := func(i int) []byte { return traceBody(fmt.Sprintf("r%d", i), 1, 0) }
	var recs []*spool.Record
	kinds := []func(i int) *spool.Record{
		func(i int) *spool.Record { return record(tracesURL, spool.SignalTraces, protoType, "", body(i)) },
		func(i int) *spool.Record { return record(other, spool.SignalTraces, protoType, "", body(i)) },
		func(i int) *spool.Record { return record(tracesURL, spool.SignalMetrics, protoType, "", body(i)) },
		func(i int) *spool.Record {
			return record(tracesURL, spool.SignalTraces, "application/protobuf", "", body(i))
		},
		func(i int) *spool.Record {
			return record(tracesURL, spool.SignalTraces, protoType, "gzip", zip(t, body(i), "gzip"))
		},
		func(i int) *spool.Record {
			r := record(tracesURL, spool.SignalTraces, protoType, "", body(i))
			r.Header = http.Header{"X-Tenant": {"a"}}
			return r
		},
		func(i int) *spool.Record {
			r := record(tracesURL, spool.SignalTraces, protoType, "", body(i))
			r.Header = http.Header{"X-Tenant": {"b"}}
			return r
		},
	}
	for i := range 5 * len(kinds) {
		recs = append(recs, kinds[i%len(kinds)](i))
	}
	reqs := NewPacker(0).Pack(recs)
	if len(reqs) != len(kinds) {
		t.Fatalf("%d requests, want one per kind: %d", len(reqs), len(kinds))
	}
	seen := map[*spool.Record]int{}
	lastOldest := -1
	for i, r := range reqs {
		first := r.Records()[0]
		oldest := slices.Index(recs, first)
		if oldest < lastOldest {
			t.Errorf("request %d starts at record %d, before the previous request's %d", i, oldest, lastOldest)
		}
		lastOldest = oldest
		prev := -1
		for _, rec := range r.Records() {
			seen[rec]++
			if keyOf(rec) != keyOf(first) {
				t.Errorf("request %d mixes %+v with %+v", i, keyOf(rec), keyOf(first))
			}
			at := slices.Index(recs, rec)
			if at < prev {
				t.Errorf("request %d: record %d after record %d", i, at, prev)
			}
			prev = at
		}
		if r.URL() != first.URL || r.Signal() != first.Signal || r.ContentType() != first.ContentType ||
			r.ContentEncoding() != first.ContentEncoding || !equalHeader(r.Header(), first.Header) {
			t.Errorf("request %d is addressed unlike its records", i)
		}
	}
	for _, rec := range recs {
		if seen[rec] != 1 {
			t.Errorf("a record is in %d requests, want 1", seen[rec])
		}
	}
}

func equalHeader(a, b http.Header) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func TestPackOverBoundGoesAlone(t *testing.T) {
	small := traceRecords(t, 4, 200, "")
	big := record(tracesURL, spool.SignalTraces, protoType, "", traceBody("big", 1, 5000))
	recs := []*spool.Record{small[0], small[1], big, small[2], small[3]}
	reqs := NewPacker(2000).Pack(recs)
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2: the small ones together, the big one alone", len(reqs))
	}
	if got := reqs[0].Records(); !slices.Equal(got, small) {
		t.Errorf("first request carries %d records, want the 4 small ones", len(got))
	}
	alone := reqs[1]
	if len(alone.Records()) != 1 || alone.Records()[0] != big {
		t.Fatal("second request is not the big record alone")
	}
	if b := alone.Bytes(); &b[0] != &big.Body[0] || len(b) != len(big.Body) {
		t.Error("a record alone is not sent as stored")
	}
}

func TestPackEmpty(t *testing.T) {
	if reqs := NewPacker(0).Pack(nil); len(reqs) != 0 {
		t.Fatalf("Pack(nil) = %d requests", len(reqs))
	}
}

func TestPackCompressed(t *testing.T) {
	for _, enc := range []string{"gzip", "deflate"} {
		t.Run(enc, func(t *testing.T) {
			recs := traceRecords(t, 20, 2000, enc)
			plainSize := len(unzip(t, recs[0].Body, enc))
			p := NewPacker(8*plainSize + 100)
			reqs := p.Pack(recs)
			if len(reqs) != 3 {
				t.Fatalf("%d requests, want 3 (8+8+4)", len(reqs))
			}
			next := 0
			for i, r := range reqs {
				n := len(r.Records())
				plain := unzip(t, r.Bytes(), enc) // one member: see unzip
				if len(plain) > p.MaxBytes() {
					t.Errorf("request %d inflates to %d bytes, over the bound %d", i, len(plain), p.MaxBytes())
				}
				if got := spanNames(t, r.Bytes(), enc); !slices.Equal(got, expectNames(next, next+n)) {
					t.Errorf("request %d spans %v, want %v", i, got, expectNames(next, next+n))
				}
				next += n
			}
			if next != 20 {
				t.Fatalf("%d records packed, want 20", next)
			}
		})
	}
}

func TestPackCompressionBombGoesAlone(t *testing.T) {
	bomb := zip(t, make([]byte, 1<<20), "gzip") // zeros: not even protobuf
	recs := []*spool.Record{
		record(tracesURL, spool.SignalTraces, protoType, "gzip", zip(t, traceBody("a", 1, 0), "gzip")),
		record(tracesURL, spool.SignalTraces, protoType, "gzip", bomb),
		record(tracesURL, spool.SignalTraces, protoType, "gzip", zip(t, traceBody("b", 1, 0), "gzip")),
	}
	reqs := NewPacker(64 << 10).Pack(recs)
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if got := spanNames(t, reqs[0].Bytes(), "gzip"); !slices.Equal(got, []string{"a#0", "b#0"}) {
		t.Errorf("merged spans %v", got)
	}
	if !bytes.Equal(reqs[1].Bytes(), bomb) {
		t.Error("the bomb is not sent alone, as stored")
	}
}

func TestPackUnmergeableGoAlone(t *testing.T) {
	good := func(i int) *spool.Record {
		return record(tracesURL, spool.SignalTraces, protoType, "", traceBody(fmt.Sprintf("r%d", i), 1, 0))
	}
	whole := traceBody("cut", 3, 0)
	for _, tc := range []struct {
		name string
		rec  *spool.Record
	}{
		{"protobuf cut inside a field", record(tracesURL, spool.SignalTraces, protoType, "", whole[:len(whole)-3])},
		{"damaged gzip", record(tracesURL, spool.SignalTraces, protoType, "gzip", []byte("not gzip at all"))},
		{"unknown encoding", record(tracesURL, spool.SignalTraces, protoType, "zstd", traceBody("z", 1, 0))},
		{"unknown media type", record(tracesURL, spool.SignalTraces, "text/plain", "", traceBody("t", 1, 0))},
		{"unreadable media type", record(tracesURL, spool.SignalTraces, "application/", "", traceBody("t", 1, 0))},
		{"unknown signal", record(tracesURL, spool.SignalUnknown, protoType, "", traceBody("u", 1, 0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			odd := tc.rec
			// Two of the odd kind: they do not merge with each other either.
			odd2 := &spool.Record{URL: odd.URL, Signal: odd.Signal, ContentType: odd.ContentType, ContentEncoding: odd.ContentEncoding, Body: odd.Body}
			recs := []*spool.Record{good(0), odd, good(1), odd2, good(2)}
			reqs := NewPacker(0).Pack(recs)
			if len(reqs) != 3 {
				t.Fatalf("%d requests, want 3 (the good ones merged, each odd one alone)", len(reqs))
			}
			if got := reqs[0].Records(); !slices.Equal(got, []*spool.Record{recs[0], recs[2], recs[4]}) {
				t.Errorf("the good records are not merged in order")
			}
			for i, r := range reqs[1:] {
				if r.Merged() || !bytes.Equal(r.Bytes(), odd.Body) {
					t.Errorf("odd record %d is not alone as stored", i)
				}
			}
		})
	}
}

// jsonSpan is one resourceSpans element in OTLP/JSON, with hex IDs.
func jsonSpan(name string) string {
	return `{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"t"}}]},"scopeSpans":[{"scope":{},"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"1112131415161718","name":"` +
		name + `","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}`
}

func TestPackJSON(t *testing.T) {
	bodies := []string{
		`{"resourceSpans":[` + jsonSpan("a") + `]}`,
		" {\n \"resource_spans\" : [ " + jsonSpan("b") + " , " + jsonSpan("c") + " ] }\n",
		`{"resourceSpans":[]}`,
		`{"resourceSpans":null}`,
		`{}`,
		`{"resourceSpans":[` + jsonSpan("d") + `]}`,
	}
	for _, enc := range []string{"", "gzip"} {
		t.Run("encoding="+enc, func(t *testing.T) {
			var recs []*spool.Record
			for _, b := range bodies {
				recs = append(recs, record(tracesURL, spool.SignalTraces, jsonType+"; charset=utf-8", enc, zip(t, []byte(b), enc)))
			}
			reqs := NewPacker(0).Pack(recs)
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			merged := unzip(t, reqs[0].Bytes(), enc)
			var doc struct {
				ResourceSpans []json.RawMessage `json:"resourceSpans"`
			}
			if err := json.Unmarshal(merged, &doc); err != nil {
				t.Fatalf("merged JSON does not decode: %v\n%s", err, merged)
			}
			want := []string{jsonSpan("a"), jsonSpan("b"), jsonSpan("c"), jsonSpan("d")}
			if len(doc.ResourceSpans) != len(want) {
				t.Fatalf("%d elements, want %d:\n%s", len(doc.ResourceSpans), len(want), merged)
			}
			for i, el := range doc.ResourceSpans {
				if string(el) != want[i] {
					t.Errorf("element %d changed:\n got %s\nwant %s", i, el, want[i])
				}
			}
			if got, limit := len(merged), reqs[0].p.MaxBytes(); got > limit {
				t.Errorf("merged %d bytes over %d", got, limit)
			}
		})
	}
}

func TestPackJSONBound(t *testing.T) {
	body := []byte(`{"resourceSpans":[` + jsonSpan("a") + `]}`)
	var recs []*spool.Record
	for range 7 {
		recs = append(recs, record(tracesURL, spool.SignalTraces, jsonType, "", body))
	}
	el := len(jsonSpan("a"))
	// Exactly three elements: the prefix, three elements, two commas, the suffix.
	limit := len(`{"resourceSpans":[`) + 3*el + 2 + len("]}")
	reqs := NewPacker(limit).Pack(recs)
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (3+3+1)", len(reqs))
	}
	if got := reqs[0].Len(); got != int64(limit) {
		t.Errorf("a full request is %d bytes, want exactly the bound %d", got, limit)
	}
	if !bytes.Equal(reqs[2].Bytes(), body) {
		t.Errorf("the last record alone is not sent as stored")
	}
}

func TestPackJSONUnmergeableGoAlone(t *testing.T) {
	for _, body := range []string{
		`{"resourceSpans":[` + jsonSpan("a") + `],"extra":1}`,
		`{"resourceSpans":[],"resource_spans":[]}`,
		`{"resourceMetrics":[]}`,
		`{"resourceSpans":{}}`,
		`{"resourceSpans":[]} trailing`,
		`[]`,
		`{"resourceSpans":[`,
		``,
	} {
		t.Run(body, func(t *testing.T) {
			good := record(tracesURL, spool.SignalTraces, jsonType, "", []byte(`{"resourceSpans":[`+jsonSpan("g")+`]}`))
			odd := record(tracesURL, spool.SignalTraces, jsonType, "", []byte(body))
			reqs := NewPacker(0).Pack([]*spool.Record{good, odd, good})
			if len(reqs) != 2 || len(reqs[0].Records()) != 2 || reqs[1].Records()[0] != odd {
				t.Fatalf("want the good ones merged and %q alone", body)
			}
		})
	}
}

func TestSplitHalvesRebuildBodies(t *testing.T) {
	for _, enc := range []string{"", "gzip"} {
		recs := traceRecords(t, 5, 100, enc)
		r := NewPacker(0).Pack(recs)[0]
		older, newer := r.split()
		if got := spanNames(t, older.Bytes(), enc); !slices.Equal(got, expectNames(0, 2)) {
			t.Errorf("%q: older half %v", enc, got)
		}
		if got := spanNames(t, newer.Bytes(), enc); !slices.Equal(got, expectNames(2, 5)) {
			t.Errorf("%q: newer half %v", enc, got)
		}
		a, b := older.split()
		if !bytes.Equal(a.Bytes(), recs[0].Body) || !bytes.Equal(b.Bytes(), recs[1].Body) {
			t.Errorf("%q: a half of one record is not the stored body", enc)
		}
	}
}

// FuzzPack: whatever a stored body holds, Pack does not panic, every record
// is in exactly one request, and the good records around it still arrive
// whole.
func FuzzPack(f *testing.F) {
	f.Add([]byte(`{"resourceSpans":[]}`), uint8(1), uint8(0))
	f.Add(traceBody("s", 2, 0), uint8(0), uint8(1))
	f.Add([]byte{0x0a, 0xff, 0xff}, uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, body []byte, ct, enc uint8) {
		types := []string{protoType, jsonType}
		encs := []string{"", "gzip", "deflate"}
		c, e := types[int(ct)%len(types)], encs[int(enc)%len(encs)]
		good := func(name string) *spool.Record {
			if c == jsonType {
				return record(tracesURL, spool.SignalTraces, c, e, zip(t, []byte(`{"resourceSpans":[`+jsonSpan(name)+`]}`), e))
			}
			return record(tracesURL, spool.SignalTraces, c, e, zip(t, traceBody(name, 1, 0), e))
		}
		recs := []*spool.Record{good("a"), record(tracesURL, spool.SignalTraces, c, e, body), good("b")}
		reqs := NewPacker(4096).Pack(recs)
		n := 0
		for _, r := range reqs {
			n += len(r.Records())
			if r.Merged() && int64(len(unzip(t, r.Bytes(), e))) > 4096 {
				t.Fatalf("a merged request inflates past the bound")
			}
		}
		if n != len(recs) {
			t.Fatalf("%d records in requests, want %d", n, len(recs))
		}
	})
}
