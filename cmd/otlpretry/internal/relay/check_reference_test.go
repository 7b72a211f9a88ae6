package relay

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"google.golang.org/protobuf/encoding/protowire"
)

// refWalk is the check's protobuf walk written plainly with protowire, one
// call per tag, length and value, recursing into nested messages. The
// differential tests hold the fast walk to its verdicts, error offsets and
// reasons; the benchmarks weigh the fast walk against it.
func refWalk(m *msgSchema, b []byte, base, depth int) *BodyError {
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
				if err := refWalk(f.msg, v, base+off+n-len(v), depth+1); err != nil {
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

// refCheckProtobuf is checkProtobuf over refWalk.
func refCheckProtobuf(s *msgSchema, body []byte) error {
	if err := refWalk(s, body, 0, 0); err != nil {
		err.Format = "protobuf (" + s.request + ")"
		return err
	}
	return nil
}

// refInflateGzip is the plain way to inflate a gzip body within limit: a
// pooled gzip.Reader read into a pooled bytes.Buffer that grows as needed.
func refInflateGzip(body []byte, limit int64) ([]byte, func(), error) {
	gr, _ := refGzipReaders.Get().(*gzip.Reader)
	var err error
	if gr == nil {
		gr, err = gzip.NewReader(bytes.NewReader(body))
	} else {
		err = gr.Reset(bytes.NewReader(body))
	}
	if err != nil {
		return nil, nil, err
	}
	defer refGzipReaders.Put(gr)
	buf, _ := refBuffers.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	release := func() { refBuffers.Put(buf) }
	n, err := buf.ReadFrom(io.LimitReader(gr, limit+1))
	if err != nil || n > limit {
		release()
		return nil, nil, fmt.Errorf("inflate: %d bytes, %v", n, err)
	}
	return buf.Bytes(), release, nil
}

var (
	refGzipReaders sync.Pool // *gzip.Reader
	refBuffers     sync.Pool // *bytes.Buffer
)
