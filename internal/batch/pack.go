package batch

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/otlpretry/otlpretry/internal/wire"
	"github.com/otlpretry/otlpretry/spool"
)

// DefaultMaxBytes is the bound on a merged request's payload, before
// compression, when NewPacker is given zero: 1 MiB. See the package
// documentation for why.
const DefaultMaxBytes = 1 << 20

// A Packer merges stored exports into requests of at most a byte bound.
// It holds no state between calls and is safe for concurrent use.
type Packer struct {
	maxBytes int
}

// NewPacker returns a Packer whose merged payloads are at most maxBytes
// before compression. If maxBytes is zero or negative, DefaultMaxBytes is
// used.
func NewPacker(maxBytes int) *Packer {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Packer{maxBytes: maxBytes}
}

// MaxBytes returns the Packer's bound.
func (p *Packer) MaxBytes() int { return p.maxBytes }

// kind is how a record's payload merges with others of its kind.
type kind uint8

const (
	// opaque: the record is sent alone, as stored.
	opaque kind = iota
	// protobuf: an Export*ServiceRequest in the binary encoding; merged
	// payloads are concatenated.
	protobuf
	// jsonKind: an Export*ServiceRequest in OTLP/JSON; merged payloads
	// share one array.
	jsonKind
)

// codec is a Content-Encoding the Packer can undo and redo.
type codec uint8

const (
	identity codec = iota
	gzipCodec
	deflateCodec // the zlib format (RFC 1950), as HTTP's "deflate" is
	unknownCodec
)

func codecOf(encoding string) codec {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return identity
	case "gzip", "x-gzip":
		return gzipCodec
	case "deflate":
		return deflateCodec
	}
	return unknownCodec
}

// kindOf reads the media type of a Content-Type; parameters such as
// charset do not change how the body merges.
func kindOf(contentType string, signal spool.Signal) kind {
	if signal < spool.SignalTraces || signal > spool.SignalLogs {
		return opaque
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return opaque
	}
	switch mt {
	case "application/x-protobuf", "application/protobuf":
		return protobuf
	case "application/json":
		return jsonKind
	}
	return opaque
}

// jsonField is the name of an Export*ServiceRequest's one field in
// OTLP/JSON, lowerCamelCase as the OTLP specification writes it and
// snake_case as the protobuf JSON mapping also accepts.
var jsonField = [...]struct{ camel, snake, prefix string }{
	spool.SignalTraces:  {"resourceSpans", "resource_spans", `{"resourceSpans":[`},
	spool.SignalMetrics: {"resourceMetrics", "resource_metrics", `{"resourceMetrics":[`},
	spool.SignalLogs:    {"resourceLogs", "resource_logs", `{"resourceLogs":[`},
}

var (
	jsonSuffix = []byte("]}")
	jsonComma  = []byte(",")
)

// A Request is one HTTP request's worth of stored exports: records of one
// destination (URL and allow-listed headers), signal, Content-Type and
// Content-Encoding, oldest first, and the body that carries them all.
//
// A Request of one record carries that record's body exactly as stored.
// A merged Request's body aliases the records' bodies when no compression
// is involved: the records must stay unrecycled until the Request is
// settled.
type Request struct {
	p       *Packer
	records []*spool.Record
	// payloads holds each record's decoded payload (protobuf: the
	// message; JSON: the contents of its one array), for building the
	// halves of a split. It is nil for a record that is sent as stored.
	payloads [][]byte
	kind     kind
	codec    codec
	wire     [][]byte // the body on the wire, in pieces
	size     int64    // the sum of wire's lengths
}

// Records returns the exports the request carries, oldest first. The
// slice is the Request's own; do not modify it.
func (r *Request) Records() []*spool.Record { return r.records }

// Merged reports whether the body is built from more than one record.
func (r *Request) Merged() bool { return len(r.records) > 1 }

// URL, Signal, ContentType, ContentEncoding and Header address the
// request: the same for every record in it.
func (r *Request) URL() string             { return r.records[0].URL }
func (r *Request) Signal() spool.Signal    { return r.records[0].Signal }
func (r *Request) ContentType() string     { return r.records[0].ContentType }
func (r *Request) ContentEncoding() string { return r.records[0].ContentEncoding }
func (r *Request) Header() http.Header     { return r.records[0].Header }

// Len is the body's length on the wire, for Content-Length.
func (r *Request) Len() int64 { return r.size }

// Body returns a new reader of the body from its start; call it again for
// each attempt (http.Request.GetBody).
func (r *Request) Body() io.Reader {
	bufs := net.Buffers(slices.Clone(r.wire))
	return &bufs
}

// Bytes returns the body as one slice: the stored body itself for a
// single record, a copy otherwise.
func (r *Request) Bytes() []byte {
	if len(r.wire) == 1 {
		return r.wire[0]
	}
	out := make([]byte, 0, r.size)
	for _, b := range r.wire {
		out = append(out, b...)
	}
	return out
}

// key is what records must share to go in one request.
type key struct {
	url, contentType, encoding, header string
	signal                             spool.Signal
}

func keyOf(rec *spool.Record) key {
	k := key{url: rec.URL, contentType: rec.ContentType, encoding: rec.ContentEncoding, signal: rec.Signal}
	if len(rec.Header) > 0 {
		var sb strings.Builder
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for n := range rec.Header {
				if !yield(n) {
					return
				}
			}
		}) {
			for _, v := range rec.Header[name] {
				sb.WriteString(name)
				sb.WriteByte(0)
				sb.WriteString(v)
				sb.WriteByte(0)
			}
		}
		k.header = sb.String()
	}
	return k
}

// Pack groups records into requests. records are one destination's stored
// exports, oldest first (Pack also keeps apart records of different URLs
// or allow-listed headers). Only records of the same URL, headers, signal,
// Content-Type and Content-Encoding share a request; within a request they
// keep their order, and the requests come in the order of their oldest
// record. A request's payload stays within the bound before compression;
// a record that alone exceeds it, or whose body cannot be merged (see the
// package documentation), is a request of its own, sent as stored.
func (p *Packer) Pack(records []*spool.Record) []*Request {
	var (
		out  []*Request
		open = map[key]*builder{}
	)
	for _, rec := range records {
		k, c := kindOf(rec.ContentType, rec.Signal), codecOf(rec.ContentEncoding)
		var (
			payload []byte
			size    int
			ok      = k != opaque && c != unknownCodec
		)
		if ok {
			payload, size, ok = p.prepare(rec, k, c)
		}
		if !ok {
			out = append(out, p.single(rec))
			continue
		}
		rk := keyOf(rec)
		b := open[rk]
		if b != nil && !b.fits(size) {
			b = nil
		}
		if b == nil {
			b = &builder{req: &Request{p: p, kind: k, codec: c}}
			b.size = b.overhead(rec.Signal)
			open[rk] = b
			out = append(out, b.req)
		}
		b.add(rec, payload, size)
	}
	for _, r := range out {
		if r.wire == nil {
			p.finish(r)
		}
	}
	return out
}

// builder accumulates one request.
type builder struct {
	req   *Request
	size  int // the merged payload's size so far, framing included
	items int // JSON: the records with a non-empty array so far
}

// overhead is the framing a merged payload has before any record.
func (b *builder) overhead(signal spool.Signal) int {
	if b.req.kind == jsonKind {
		return len(jsonField[signal].prefix) + len(jsonSuffix)
	}
	return 0
}

// extra is what adding a payload of size n costs.
func (b *builder) extra(n int) int {
	if b.req.kind == jsonKind && n > 0 && b.items > 0 {
		return n + len(jsonComma)
	}
	return n
}

func (b *builder) fits(n int) bool { return b.size+b.extra(n) <= b.req.p.maxBytes }

func (b *builder) add(rec *spool.Record, payload []byte, n int) {
	b.size += b.extra(n)
	if n > 0 {
		b.items++
	}
	b.req.records = append(b.req.records, rec)
	b.req.payloads = append(b.req.payloads, payload)
}

// single is a request of one record, sent as stored.
func (p *Packer) single(rec *spool.Record) *Request {
	return &Request{p: p, records: []*spool.Record{rec}, wire: [][]byte{rec.Body}, size: int64(len(rec.Body))}
}

// prepare decodes a record's payload and checks that it can be merged:
// it returns the payload (protobuf: the message; JSON: its array's
// contents) and the bytes it adds to a merged payload alone (JSON: with
// its framing), or false if the record must go alone.
func (p *Packer) prepare(rec *spool.Record, k kind, c codec) ([]byte, int, bool) {
	plain := rec.Body
	if c != identity {
		var err error
		if plain, err = decode(c, rec.Body, p.maxBytes); err != nil {
			return nil, 0, false
		}
	}
	switch k {
	case protobuf:
		if len(plain) > p.maxBytes || !wholeFields(plain) {
			return nil, 0, false
		}
		return plain, len(plain), true
	case jsonKind:
		inner, ok := jsonArray(plain, rec.Signal)
		if !ok || len(jsonField[rec.Signal].prefix)+len(inner)+len(jsonSuffix) > p.maxBytes {
			return nil, 0, false
		}
		return inner, len(inner), true
	}
	return nil, 0, false
}

// wholeFields reports whether b is a sequence of complete protobuf fields.
// A stored message cut inside a field would, concatenated, swallow the
// start of the next export and change both; such a record goes alone and
// the endpoint judges it.
func wholeFields(b []byte) bool { return wire.Fields(b, nil) }

// jsonArray returns the contents, between the brackets, of the one array
// of an OTLP/JSON export of signal, trimmed of white space; false if the
// body is not a JSON object holding that field alone (under either of its
// names) as an array or null.
func jsonArray(body []byte, signal spool.Signal) ([]byte, bool) {
	names := jsonField[signal]
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var (
		inner []byte
		seen  bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := tok.(string)
		if seen || (name != names.camel && name != names.snake) {
			return nil, false
		}
		seen = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		raw = bytes.TrimSpace(raw)
		switch {
		case string(raw) == "null":
		case len(raw) >= 2 && raw[0] == '[':
			inner = bytes.TrimSpace(raw[1 : len(raw)-1])
		default:
			return nil, false
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false // something after the object
	}
	return inner, true
}

// finish builds a request's body from its records.
func (p *Packer) finish(r *Request) {
	if len(r.records) == 1 {
		// Sent as stored and never split: the decoded payload is not needed.
		r.payloads = nil
		r.wire = [][]byte{r.records[0].Body}
		r.size = int64(len(r.records[0].Body))
		return
	}
	var plain [][]byte
	switch r.kind {
	case protobuf:
		plain = r.payloads
	case jsonKind:
		plain = make([][]byte, 0, 2*len(r.payloads)+1)
		plain = append(plain, []byte(jsonField[r.records[0].Signal].prefix))
		first := true
		for _, pl := range r.payloads {
			if len(pl) == 0 {
				continue
			}
			if !first {
				plain = append(plain, jsonComma)
			}
			first = false
			plain = append(plain, pl)
		}
		plain = append(plain, jsonSuffix)
	}
	if r.codec == identity {
		r.wire = plain
	} else {
		r.wire = [][]byte{encode(r.codec, plain)}
	}
	r.size = 0
	for _, b := range r.wire {
		r.size += int64(len(b))
	}
}

// split returns the two halves of a merged request, older first, each
// with its own body.
func (r *Request) split() (*Request, *Request) {
	mid := len(r.records) / 2
	half := func(lo, hi int) *Request {
		h := &Request{p: r.p, kind: r.kind, codec: r.codec,
			records:  r.records[lo:hi:hi],
			payloads: r.payloads[lo:hi:hi]}
		r.p.finish(h)
		return h
	}
	return half(0, mid), half(mid, len(r.records))
}

var (
	gzipReaders sync.Pool // *gzip.Reader
	gzipWriters sync.Pool // *gzip.Writer
	zlibWriters sync.Pool // *zlib.Writer
)

// errTooLarge: a compressed body inflates past the bound.
var errTooLarge = errors.New("batch: the body inflates past the bound")

// decode undoes a Content-Encoding, reading at most limit bytes of
// output: a body that inflates further goes alone, as stored.
func decode(c codec, body []byte, limit int) ([]byte, error) {
	var (
		zr   io.Reader
		hint int
	)
	switch c {
	case gzipCodec:
		gr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if gr == nil {
			gr, err = gzip.NewReader(bytes.NewReader(body))
		} else {
			err = gr.Reset(bytes.NewReader(body))
		}
		if err != nil {
			return nil, err
		}
		defer gzipReaders.Put(gr)
		zr = gr
		// The trailer's ISIZE is the inflated size modulo 2^32 of the last
		// member: a hint for the buffer, never trusted as a bound.
		if len(body) >= 4 {
			hint = int(binary.LittleEndian.Uint32(body[len(body)-4:]))
		}
	case deflateCodec:
		r, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer r.Close()
		zr = r
	default:
		return body, nil
	}
	if hint <= 0 || hint > limit {
		hint = min(4*len(body), limit)
	}
	buf := bytes.NewBuffer(make([]byte, 0, hint+1))
	n, err := buf.ReadFrom(io.LimitReader(zr, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(limit) {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

// encode redoes a Content-Encoding over the pieces of a payload, at the
// fastest level: a merged request is built on the drain's path, where
// CPU time delays delivery, and the link, not the ratio, is what the
// backlog waits for.
func encode(c codec, plain [][]byte) []byte {
	n := 0
	for _, b := range plain {
		n += len(b)
	}
	var out bytes.Buffer
	out.Grow(n/3 + 64)
	switch c {
	case gzipCodec:
		zw, _ := gzipWriters.Get().(*gzip.Writer)
		if zw == nil {
			zw, _ = gzip.NewWriterLevel(&out, gzip.BestSpeed) // the level is valid
		} else {
			zw.Reset(&out)
		}
		writeAll(zw, plain)
		gzipWriters.Put(zw)
	case deflateCodec:
		zw, _ := zlibWriters.Get().(*zlib.Writer)
		if zw == nil {
			zw, _ = zlib.NewWriterLevel(&out, zlib.BestSpeed) // the level is valid
		} else {
			zw.Reset(&out)
		}
		writeAll(zw, plain)
		zlibWriters.Put(zw)
	}
	return out.Bytes()
}

// writeAll compresses into a bytes.Buffer, which never fails to write.
func writeAll(w io.WriteCloser, plain [][]byte) {
	for _, b := range plain {
		_, _ = w.Write(b)
	}
	_ = w.Close()
}
