package relay

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"sync"

	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/otlpretry/otlpretry/spool"
)

// A BodyError says why a request body is not an export the upstream could
// accept. The relay answers it with 400 and stores nothing.
type BodyError struct {
	// Format is what the body failed to be: "protobuf", "JSON", "gzip"
	// or "deflate".
	Format string
	// Offset is the byte of the (decompressed) body where the fault is,
	// or -1.
	Offset int
	Reason string
}

func (e *BodyError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("the body is not valid %s: at byte %d: %s", e.Format, e.Offset, e.Reason)
	}
	return fmt.Sprintf("the body is not valid %s: %s", e.Format, e.Reason)
}

// ErrInflatedTooLarge is returned by decodeBody for a compressed body that
// inflates past the cap; the relay answers 413.
var ErrInflatedTooLarge = errors.New("the body inflates past the size cap")

// checkBody reports whether body, as received with the given media type
// and Content-Encoding, is an OTLP export of signal that the upstream
// could decode: it decompresses within limit, then checks protobuf by a
// walk of its wire structure and JSON for syntax. It returns nil, a
// *BodyError, or ErrInflatedTooLarge.
func checkBody(signal spool.Signal, mediaType, encoding string, body []byte, limit int64) error {
	plain, release, err := decodeBody(encoding, body, limit)
	if err != nil {
		return err
	}
	defer release()
	if mediaType == "application/json" {
		return checkJSON(plain)
	}
	return checkProtobuf(signal, plain)
}

// CheckBody is checkBody for benchmarks outside the package, which weigh
// it against the relay process's CPU per export.
func CheckBody(signal spool.Signal, mediaType, encoding string, body []byte, limit int64) error {
	return checkBody(signal, mediaType, encoding, body, limit)
}

// decodeBody returns body decompressed per encoding ("" and "identity"
// for none, gzip, deflate), never more than limit bytes, and a function
// that returns the buffer for reuse once the caller is done with it.
func decodeBody(encoding string, body []byte, limit int64) ([]byte, func(), error) {
	var (
		zr     io.Reader
		format = encoding
	)
	switch encoding {
	case "", "identity":
		return body, func() {}, nil
	case "gzip":
		gr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if gr == nil {
			gr, err = gzip.NewReader(bytes.NewReader(body))
		} else {
			err = gr.Reset(bytes.NewReader(body))
		}
		if err != nil {
			return nil, nil, &BodyError{Format: format, Offset: -1, Reason: "Content-Encoding is gzip but " + gzipReason(err)}
		}
		defer gzipReaders.Put(gr)
		zr = gr
	case "deflate":
		// What the OTel Collector's receiver takes as deflate: the zlib
		// format (RFC 1950).
		r, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, nil, &BodyError{Format: format, Offset: -1, Reason: "Content-Encoding is deflate but the body is not zlib data (" + err.Error() + ")"}
		}
		defer r.Close()
		zr = r
	default:
		return nil, nil, &BodyError{Format: format, Offset: -1, Reason: "unsupported Content-Encoding"}
	}
	buf, _ := inflateBuffers.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	release := func() {
		if buf.Cap() <= maxPooledBuffer {
			inflateBuffers.Put(buf)
		}
	}
	n, err := buf.ReadFrom(io.LimitReader(zr, limit+1))
	switch {
	case err != nil:
		release()
		return nil, nil, &BodyError{Format: format, Offset: -1, Reason: "Content-Encoding is " + encoding + " but " + gzipReason(err)}
	case n > limit:
		release()
		return nil, nil, ErrInflatedTooLarge
	}
	return buf.Bytes(), release, nil
}

func gzipReason(err error) string {
	switch {
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, zlib.ErrHeader):
		return "the body is not compressed that way (bad header)"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the compressed body is truncated"
	default:
		return "the compressed body is damaged (" + err.Error() + ")"
	}
}

var (
	gzipReaders    sync.Pool // *gzip.Reader
	inflateBuffers sync.Pool // *bytes.Buffer
)

// maxPooledBuffer bounds the buffers kept for reuse, so that one large
// export does not pin its size in memory.
const maxPooledBuffer = 4 << 20

// checkJSON checks JSON syntax, and that the document is an object, as
// every Export*ServiceRequest is.
func checkJSON(b []byte) error {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return &BodyError{Format: "JSON", Offset: int(se.Offset), Reason: se.Error()}
		}
		return &BodyError{Format: "JSON", Offset: -1, Reason: "syntax error"}
	}
	for i, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return nil
		}
		return &BodyError{Format: "JSON", Offset: i, Reason: "an OTLP export is a JSON object"}
	}
	return nil
}

// checkProtobuf walks body's wire structure as an OTLP export of signal:
// every tag valid, every length within its message, every field the OTLP
// schema knows of the wire type the schema gives it, into every nested
// message the schema knows, down to protowire.DefaultRecursionLimit.
// Fields the schema does not know (a newer schema's) are only checked to
// be well-formed. Strings are not checked for UTF-8, nor values decoded.
func checkProtobuf(signal spool.Signal, body []byte) error {
	s := requestSchemas[signal]
	if s == nil {
		return nil
	}
	if err := s.walk(body, 0, 0); err != nil {
		err.Format = "protobuf (" + s.request + ")"
		return err
	}
	return nil
}

// msgSchema is what the walk needs of a message type: for each field
// number, its wire type and, for a message field, the nested type.
type msgSchema struct {
	name    string // the request's name for a top-level schema, else the message's
	request string // for a top-level schema: "ExportTraceServiceRequest", ...
	fields  []fieldSchema
}

type fieldSchema struct {
	known    bool
	name     string
	wire     protowire.Type
	packable bool // a repeated scalar: packed (bytes) or not
	msg      *msgSchema
}

// unknownField is the schema of a field number a message does not define.
var unknownField = &fieldSchema{}

func (m *msgSchema) field(num protowire.Number) *fieldSchema {
	if num >= 0 && int(num) < len(m.fields) {
		return &m.fields[num]
	}
	return unknownField
}

// walk checks b as message m; base is b's offset in the whole body, for
// the error.
func (m *msgSchema) walk(b []byte, base, depth int) *BodyError {
	if depth > protowire.DefaultRecursionLimit {
		return &BodyError{Offset: base, Reason: "messages nested too deep"}
	}
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return &BodyError{Offset: base + off, Reason: "invalid field tag in " + m.name + " (" + protowire.ParseError(n).Error() + ")"}
		}
		at := off
		off += n
		f := m.field(num)
		if f.known && typ != f.wire && !(f.packable && typ == protowire.BytesType) {
			return &BodyError{Offset: base + at, Reason: fmt.Sprintf("field %s of %s has wire type %d, want %d", f.name, m.name, typ, f.wire)}
		}
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b[off:])
			if n < 0 {
				return &BodyError{Offset: base + at, Reason: "field " + fieldName(f, num) + " of " + m.name + ": " + lengthReason(n)}
			}
			switch {
			case f.msg != nil:
				if err := f.msg.walk(v, base+off+n-len(v), depth+1); err != nil {
					return err
				}
			case f.packable && !packedOK(f.wire, v):
				return &BodyError{Offset: base + at, Reason: "field " + f.name + " of " + m.name + ": packed values that do not fill it"}
			}
			off += n
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b[off:])
		if n < 0 {
			return &BodyError{Offset: base + at, Reason: "field " + fieldName(f, num) + " of " + m.name + ": " + protowire.ParseError(n).Error()}
		}
		off += n
	}
	return nil
}

// packedOK reports whether b is a whole number of packed values of wire
// type typ.
func packedOK(typ protowire.Type, b []byte) bool {
	switch typ {
	case protowire.Fixed32Type:
		return len(b)%4 == 0
	case protowire.Fixed64Type:
		return len(b)%8 == 0
	}
	for len(b) > 0 {
		_, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func fieldName(f *fieldSchema, num protowire.Number) string {
	if f.known {
		return f.name
	}
	return fmt.Sprint(num)
}

func lengthReason(n int) string {
	if errors.Is(protowire.ParseError(n), io.ErrUnexpectedEOF) {
		return "its length runs past the end of the message"
	}
	return protowire.ParseError(n).Error()
}

// requestSchemas are the Export*ServiceRequest schemas by signal. Each
// request has the wire format of the signal's *Data message (field 1,
// the repeated resource_*), whose descriptors come without the gRPC
// service's dependencies.
var requestSchemas = map[spool.Signal]*msgSchema{
	spool.SignalTraces:  compileRequest("ExportTraceServiceRequest", (&tracepb.TracesData{}).ProtoReflect().Descriptor()),
	spool.SignalMetrics: compileRequest("ExportMetricsServiceRequest", (&metricspb.MetricsData{}).ProtoReflect().Descriptor()),
	spool.SignalLogs:    compileRequest("ExportLogsServiceRequest", (&logspb.LogsData{}).ProtoReflect().Descriptor()),
}

func compileRequest(name string, md protoreflect.MessageDescriptor) *msgSchema {
	top := *compile(md, map[protoreflect.FullName]*msgSchema{})
	top.name, top.request = name, name
	return &top
}

// compile builds m's schema from its descriptor; seen breaks the cycles
// of recursive types (AnyValue holds ArrayValue holds AnyValue).
func compile(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*msgSchema) *msgSchema {
	if s, ok := seen[md.FullName()]; ok {
		return s
	}
	s := &msgSchema{name: string(md.Name())}
	seen[md.FullName()] = s
	fds := md.Fields()
	maxNum := 0
	for i := range fds.Len() {
		maxNum = max(maxNum, int(fds.Get(i).Number()))
	}
	s.fields = make([]fieldSchema, maxNum+1)
	for i := range fds.Len() {
		fd := fds.Get(i)
		f := fieldSchema{known: true, name: string(fd.Name()), wire: wireType(fd.Kind())}
		switch fd.Kind() {
		case protoreflect.MessageKind:
			f.msg = compile(fd.Message(), seen)
		case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.GroupKind:
		default:
			f.packable = fd.IsList()
		}
		s.fields[fd.Number()] = f
	}
	return s
}

func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.BoolKind, protoreflect.EnumKind,
		protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return protowire.VarintType
	case protoreflect.Sfixed32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Sfixed64Kind, protoreflect.Fixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	default: // string, bytes, message
		return protowire.BytesType
	}
}
