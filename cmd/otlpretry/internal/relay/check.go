package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"

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
	switch encoding {
	case "", "identity":
		return body, func() {}, nil
	case "gzip":
		zr, _ := gzipReaders.Get().(*gzipReader)
		if zr == nil {
			zr = new(gzipReader)
		}
		defer zr.release()
		zr.src.Reset(body)
		if err := zr.Reset(&zr.src); err != nil {
			return nil, nil, &BodyError{Format: encoding, Offset: -1, Reason: "Content-Encoding is gzip but " + gzipReason(err)}
		}
		// Multi-member bodies (concatenated gzip files) are valid gzip, as
		// the Collector's receiver takes them: the reader goes on to the
		// next member, and the buffer grows past the hint if need be.
		return inflate(zr, encoding, gzipSizeHint(body), limit)
	case "deflate":
		// What the OTel Collector's receiver takes as deflate: the zlib
		// format (RFC 1950).
		zr, _ := zlibReaders.Get().(*zlibReader)
		if zr == nil {
			zr = new(zlibReader)
		}
		zr.src.Reset(body)
		var err error
		if zr.r == nil {
			zr.r, err = zlib.NewReader(&zr.src)
		} else {
			err = zr.r.(zlib.Resetter).Reset(&zr.src, nil)
		}
		if err != nil {
			return nil, nil, &BodyError{Format: encoding, Offset: -1, Reason: "Content-Encoding is deflate but the body is not zlib data (" + err.Error() + ")"}
		}
		defer zr.release()
		// zlib has no size field: a guess, the buffer grows if need be.
		return inflate(zr.r, encoding, 4*int64(len(body)), limit)
	default:
		return nil, nil, &BodyError{Format: encoding, Offset: -1, Reason: "unsupported Content-Encoding"}
	}
}

// inflate reads zr to its end into a pooled buffer, at first of hint
// bytes (or what the pooled buffer holds), growing as needed up to
// limit+1: a body that reaches limit+1 bytes is ErrInflatedTooLarge.
func inflate(zr io.Reader, encoding string, hint, limit int64) ([]byte, func(), error) {
	bp, _ := inflateBuffers.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	release := func() {
		if cap(*bp) <= maxPooledBuffer {
			inflateBuffers.Put(bp)
		}
	}
	hint = min(hint, limit) + 1 // +1: room to see the end without growing
	if int64(cap(*bp)) < hint {
		*bp = make([]byte, hint)
	}
	buf := (*bp)[:min(int64(cap(*bp)), limit+1)]
	n := 0
	for {
		if n == len(buf) {
			if int64(n) > limit {
				release()
				return nil, nil, ErrInflatedTooLarge
			}
			buf = slices.Grow(buf[:n], int(min(int64(2*n), limit+1))-n)
			*bp = buf
			buf = buf[:min(int64(cap(buf)), limit+1)]
		}
		m, err := zr.Read(buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			release()
			return nil, nil, &BodyError{Format: encoding, Offset: -1, Reason: "Content-Encoding is " + encoding + " but " + gzipReason(err)}
		}
	}
	if int64(n) > limit {
		release()
		return nil, nil, ErrInflatedTooLarge
	}
	return buf[:n], release, nil
}

// gzipSizeHint is the size that gzip body's last member says it inflates
// to (its trailer's ISIZE, the size modulo 2^32), bounded by what deflate
// can produce from body at most (1032 bytes a byte), so that a trailer
// that lies does not make a small body hold a large buffer.
func gzipSizeHint(body []byte) int64 {
	const minGzip = 18 // header, empty deflate data, trailer
	if len(body) < minGzip {
		return 0
	}
	isize := binary.LittleEndian.Uint32(body[len(body)-4:])
	return int64(min(uint64(isize), 1032*uint64(len(body))))
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

// A gzipReader is a gzip reader with the bytes.Reader it reads from, kept
// together in a pool so that neither is allocated per body.
type gzipReader struct {
	src bytes.Reader
	gzip.Reader
}

// release returns z to its pool, holding no body.
func (z *gzipReader) release() {
	z.src.Reset(nil)
	gzipReaders.Put(z)
}

// A zlibReader is the same for deflate bodies; r is nil until the first
// body that has a zlib header.
type zlibReader struct {
	src bytes.Reader
	r   io.ReadCloser
}

// release returns z to its pool, holding no body.
func (z *zlibReader) release() {
	z.src.Reset(nil)
	zlibReaders.Put(z)
}

var (
	gzipReaders    sync.Pool // *gzipReader
	zlibReaders    sync.Pool // *zlibReader
	inflateBuffers sync.Pool // *[]byte
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
	if err := s.walk(body); err != nil {
		err.Format = "protobuf (" + s.request + ")"
		return err
	}
	return nil
}

// msgSchema is what the walk needs of a message type: for each field
// number, its wire type and, for a message field, the nested type; and
// the same compiled into one step per tag.
type msgSchema struct {
	name    string // the request's name for a top-level schema, else the message's
	request string // for a top-level schema: "ExportTraceServiceRequest", ...
	fields  []fieldSchema
	// steps holds, for each tag value below 256 (field number << 3 | wire
	// type: the one- and two-byte tags, field numbers 1 to 31), how the
	// walk checks that field when nothing about it is unusual. stepSlow
	// sends a tag to the field-by-field path: tags it must refuse (field
	// 0, a known field of the wrong wire type, wire types 6 and 7) and
	// the rare ones (groups).
	steps [256]step
}

type step struct {
	op  stepOp
	msg *msgSchema // for stepMsg
}

type stepOp uint8

const (
	stepSlow          stepOp = iota
	stepVarint               // a varint
	stepFixed32              // 4 bytes
	stepFixed64              // 8 bytes
	stepBytes                // a length and that many bytes, not looked into
	stepMsg                  // a length and a message of type step.msg
	stepPackedVarint         // a length and that many bytes of whole varints
	stepPackedFixed32        // a length that is a multiple of 4
	stepPackedFixed64        // a length that is a multiple of 8
)

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

// A frame is a message the walk has entered and will come back to: its
// schema and the offset where it ends.
type frame struct {
	m   *msgSchema
	end int
}

// walk checks body as message m. It goes through the body once, in
// order, keeping the messages it is inside on a stack rather than
// recursing: the common field (a tag of one or two bytes that steps
// knows, a one- or two-byte length, a one-byte varint) costs a table
// look-up and a few compares. Anything else goes to m.slowField, which
// checks that one field with protowire and says what is wrong with it.
// Either way, the same bytes pass and fail as a field-by-field walk with
// protowire, with the same error.
func (m *msgSchema) walk(body []byte) *BodyError {
	var (
		backing [32]frame
		stack   = backing[:0]
		pos     = 0
		end     = len(body)
	)
	for {
		if pos >= end {
			if len(stack) == 0 {
				return nil
			}
			top := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			m, end = top.m, top.end
			continue
		}
		at := pos
		t := uint(body[pos])
		if t < 0x80 {
			pos++
		} else if pos+1 < end && body[pos+1] < 0x80 {
			t = t&0x7f | uint(body[pos+1])<<7
			pos += 2
		} else {
			t = 0 // stepSlow: a long tag, or a truncated one
		}
		if t >= uint(len(m.steps)) {
			t = 0
		}
		st := &m.steps[t]
	fast:
		switch st.op {
		case stepVarint:
			if pos < end && body[pos] < 0x80 {
				pos++
				continue
			}
			if _, n := protowire.ConsumeVarint(body[pos:end]); n > 0 {
				pos += n
				continue
			}
		case stepFixed32:
			if end-pos >= 4 {
				pos += 4
				continue
			}
		case stepFixed64:
			if end-pos >= 8 {
				pos += 8
				continue
			}
		case stepBytes, stepMsg, stepPackedVarint, stepPackedFixed32, stepPackedFixed64:
			var l int
			if pos < end && body[pos] < 0x80 {
				l = int(body[pos])
				pos++
			} else if pos+1 < end && body[pos+1] < 0x80 {
				l = int(body[pos]&0x7f) | int(body[pos+1])<<7
				pos += 2
			} else if v, n := protowire.ConsumeVarint(body[pos:end]); n > 0 && v <= uint64(end-pos-n) {
				l = int(v)
				pos += n
			} else {
				break fast
			}
			if l > end-pos {
				break fast
			}
			switch st.op {
			case stepBytes:
			case stepMsg:
				if len(stack)+1 > protowire.DefaultRecursionLimit {
					return &BodyError{Offset: pos, Reason: "messages nested too deep"}
				}
				stack = append(stack, frame{m, end})
				m, end = st.msg, pos+l
				continue
			case stepPackedVarint:
				if !packedVarintsOK(body[pos : pos+l]) {
					break fast
				}
			case stepPackedFixed32:
				if l%4 != 0 {
					break fast
				}
			case stepPackedFixed64:
				if l%8 != 0 {
					break fast
				}
			}
			pos += l
			continue
		}
		// The slow path, from the tag again.
		start, next, sub, err := m.slowField(body[:end], at)
		if err != nil {
			return err
		}
		if sub != nil {
			if len(stack)+1 > protowire.DefaultRecursionLimit {
				return &BodyError{Offset: start, Reason: "messages nested too deep"}
			}
			stack = append(stack, frame{m, end})
			m, pos, end = sub, start, next
			continue
		}
		pos = next
	}
}

// slowField checks the one field of message m at b[at:], b ending where
// m does, with protowire. It returns the offset of the next field; for a
// message field, also the nested message's schema and the offset where
// its content starts, for the caller to walk.
func (m *msgSchema) slowField(b []byte, at int) (start, next int, sub *msgSchema, err *BodyError) {
	num, typ, n := protowire.ConsumeTag(b[at:])
	if n < 0 {
		return 0, 0, nil, &BodyError{Offset: at, Reason: "invalid field tag in " + m.name + " (" + protowire.ParseError(n).Error() + ")"}
	}
	off := at + n
	f := m.field(num)
	if f.known && typ != f.wire && !(f.packable && typ == protowire.BytesType) {
		return 0, 0, nil, &BodyError{Offset: at, Reason: fmt.Sprintf("field %s of %s has wire type %d, want %d", f.name, m.name, typ, f.wire)}
	}
	if typ == protowire.BytesType {
		v, n := protowire.ConsumeBytes(b[off:])
		if n < 0 {
			return 0, 0, nil, &BodyError{Offset: at, Reason: "field " + fieldName(f, num) + " of " + m.name + ": " + lengthReason(n)}
		}
		switch {
		case f.msg != nil:
			return off + n - len(v), off + n, f.msg, nil
		case f.packable && !packedOK(f.wire, v):
			return 0, 0, nil, &BodyError{Offset: at, Reason: "field " + f.name + " of " + m.name + ": packed values that do not fill it"}
		}
		return 0, off + n, nil, nil
	}
	n = protowire.ConsumeFieldValue(num, typ, b[off:])
	if n < 0 {
		return 0, 0, nil, &BodyError{Offset: at, Reason: "field " + fieldName(f, num) + " of " + m.name + ": " + protowire.ParseError(n).Error()}
	}
	return 0, off + n, nil, nil
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
	return packedVarintsOK(b)
}

// packedVarintsOK reports whether b is a whole number of varints as
// protowire.ConsumeVarint takes them: at most 10 bytes each, the 10th
// no more than 1.
func packedVarintsOK(b []byte) bool {
	run := 0 // bytes of the current varint so far
	for _, c := range b {
		if c < 0x80 {
			if run == 9 && c > 1 {
				return false
			}
			run = 0
			continue
		}
		run++
		if run == 10 {
			return false
		}
	}
	return run == 0
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
	s.compileSteps()
	return s
}

// compileSteps fills m.steps from m.fields.
func (m *msgSchema) compileSteps() {
	for t := range m.steps {
		num, typ := protowire.Number(t>>3), protowire.Type(t&7)
		if num == 0 {
			continue
		}
		f := m.field(num)
		if f.known && typ != f.wire && !(f.packable && typ == protowire.BytesType) {
			continue
		}
		st := &m.steps[t]
		switch typ {
		case protowire.VarintType:
			st.op = stepVarint
		case protowire.Fixed32Type:
			st.op = stepFixed32
		case protowire.Fixed64Type:
			st.op = stepFixed64
		case protowire.BytesType:
			switch {
			case f.msg != nil:
				st.op, st.msg = stepMsg, f.msg
			case !f.packable:
				st.op = stepBytes
			case f.wire == protowire.Fixed32Type:
				st.op = stepPackedFixed32
			case f.wire == protowire.Fixed64Type:
				st.op = stepPackedFixed64
			default:
				st.op = stepPackedVarint
			}
		}
	}
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
