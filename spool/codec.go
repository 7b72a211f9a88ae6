package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"net/http"
	"slices"
	"time"
)

// A record file is laid out as:
//
//	header   32 bytes: magic "OTRS", version, signal, 2 reserved bytes,
//	         created (int64 unix ns), meta length, body length (uint32
//	         each), uniq (uint64: with created, the record's ID)
//	meta     URL, Content-Type, Content-Encoding and allow-listed headers,
//	         each string as uvarint length + bytes
//	metaCRC  CRC-32C of header and meta
//	body     the request body, byte for byte
//	bodyCRC  CRC-32C of body
//
// Two checksums rather than one so that the meta can be read and trusted
// (for status listings) without reading a body of many megabytes. All
// integers are little-endian. Attempts are kept in the segment's sidecar,
// not here, so that a stored record is never rewritten.
const (
	recordMagic   = "OTRS"
	recordVersion = 2
	headerSize    = 32
	crcSize       = 4
	// maxMetaSize bounds what a decoder allocates for the meta block, so a
	// hostile or corrupt length cannot make it allocate gigabytes.
	maxMetaSize = 64 << 10
	// MaxBodySize bounds a single record's body. OTLP receivers commonly
	// refuse far smaller requests, so a larger one is not worth keeping.
	MaxBodySize = 256 << 20
	maxHeaders  = 64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodedSize(r *Record) int {
	return headerSize + metaSize(r) + crcSize + len(r.Body) + crcSize
}

func metaSize(r *Record) int {
	n := strSize(r.URL) + strSize(r.ContentType) + strSize(r.ContentEncoding)
	n += uvarintSize(uint64(headerCount(r.Header)))
	for k, vs := range r.Header {
		for _, v := range vs {
			n += strSize(k) + strSize(v)
		}
	}
	return n
}

func headerCount(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}

func strSize(s string) int { return uvarintSize(uint64(len(s))) + len(s) }

func uvarintSize(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// encodeHead returns everything that precedes the body, and the trailer that
// follows it, so that a large body is written from the caller's slice and
// never copied.
func encodeHead(r *Record) (head []byte, trailer [crcSize]byte, err error) {
	ms := metaSize(r)
	if ms > maxMetaSize {
		return nil, trailer, fmt.Errorf("record meta is %d bytes, over the %d byte limit", ms, maxMetaSize)
	}
	if headerCount(r.Header) > maxHeaders {
		return nil, trailer, fmt.Errorf("record has %d headers, over the limit of %d", headerCount(r.Header), maxHeaders)
	}
	if len(r.Body) > MaxBodySize {
		return nil, trailer, fmt.Errorf("record body is %d bytes, over the %d byte limit", len(r.Body), MaxBodySize)
	}
	head = make([]byte, headerSize, headerSize+ms+crcSize)
	copy(head, recordMagic)
	head[4] = recordVersion
	head[5] = byte(r.Signal)
	binary.LittleEndian.PutUint64(head[8:], uint64(r.Created.UnixNano()))
	binary.LittleEndian.PutUint32(head[16:], uint32(ms))
	binary.LittleEndian.PutUint32(head[20:], uint32(len(r.Body)))
	binary.LittleEndian.PutUint64(head[24:], r.ID.uniq)
	head = appendStr(head, r.URL)
	head = appendStr(head, r.ContentType)
	head = appendStr(head, r.ContentEncoding)
	head = binary.AppendUvarint(head, uint64(headerCount(r.Header)))
	for _, k := range slices.Sorted(maps.Keys(r.Header)) {
		for _, v := range r.Header[k] {
			head = appendStr(head, k)
			head = appendStr(head, v)
		}
	}
	head = binary.LittleEndian.AppendUint32(head, crc32.Checksum(head, castagnoli))
	binary.LittleEndian.PutUint32(trailer[:], crc32.Checksum(r.Body, castagnoli))
	return head, trailer, nil
}

// encodeRecord returns the whole file; used by tests and small records.
func encodeRecord(r *Record) ([]byte, error) {
	head, trailer, err := encodeHead(r)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(head)+len(r.Body)+crcSize)
	out = append(out, head...)
	out = append(out, r.Body...)
	return append(out, trailer[:]...), nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// errCorrupt is wrapped by every decoding failure.
var errCorrupt = errors.New("corrupt record")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
}

// decodeRecord parses a whole record file. It never panics and never
// allocates more than the input's size, whatever the input holds. Body
// aliases data.
func decodeRecord(data []byte) (*Record, error) {
	r, bodyLen, err := decodeMeta(data)
	if err != nil {
		return nil, err
	}
	start := r.metaEnd
	if want := start + bodyLen + crcSize; len(data) != want {
		return nil, corruptf("file is %d bytes, header says %d", len(data), want)
	}
	body := data[start : start+bodyLen]
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(data[start+bodyLen:]); got != want {
		return nil, corruptf("body checksum %08x, want %08x", got, want)
	}
	r.Body = body
	return &r.Record, nil
}

type decodedMeta struct {
	Record
	metaEnd int // offset of the body
}

// decodeMeta parses and verifies the header and meta block; data may be
// only a prefix of the file, as long as it covers them.
func decodeMeta(data []byte) (*decodedMeta, int, error) {
	if len(data) < headerSize {
		return nil, 0, corruptf("%d bytes, shorter than a record header", len(data))
	}
	if string(data[:4]) != recordMagic {
		return nil, 0, corruptf("bad magic %q", data[:4])
	}
	if data[4] != recordVersion {
		return nil, 0, corruptf("unknown version %d", data[4])
	}
	metaLen := int(binary.LittleEndian.Uint32(data[16:]))
	bodyLen := int(binary.LittleEndian.Uint32(data[20:]))
	if metaLen > maxMetaSize {
		return nil, 0, corruptf("meta length %d over the limit", metaLen)
	}
	if bodyLen > MaxBodySize {
		return nil, 0, corruptf("body length %d over the limit", bodyLen)
	}
	metaEnd := headerSize + metaLen
	if len(data) < metaEnd+crcSize {
		return nil, 0, corruptf("truncated in meta")
	}
	if got, want := crc32.Checksum(data[:metaEnd], castagnoli), binary.LittleEndian.Uint32(data[metaEnd:]); got != want {
		return nil, 0, corruptf("meta checksum %08x, want %08x", got, want)
	}
	d := &decodedMeta{metaEnd: metaEnd + crcSize}
	d.Signal = Signal(data[5])
	created := int64(binary.LittleEndian.Uint64(data[8:]))
	d.Created = time.Unix(0, created)
	d.ID = ID{created: created, uniq: binary.LittleEndian.Uint64(data[24:])}
	m := metaReader{b: data[headerSize:metaEnd]}
	d.URL = m.str()
	d.ContentType = m.str()
	d.ContentEncoding = m.str()
	n := m.uvarint()
	if n > maxHeaders {
		return nil, 0, corruptf("%d headers over the limit", n)
	}
	for i := uint64(0); i < n && m.err == nil; i++ {
		k, v := m.str(), m.str()
		if d.Header == nil {
			d.Header = make(http.Header)
		}
		d.Header[k] = append(d.Header[k], v)
	}
	if m.err != nil {
		return nil, 0, m.err
	}
	if len(m.b) != 0 {
		return nil, 0, corruptf("%d stray bytes after meta", len(m.b))
	}
	return d, bodyLen, nil
}

type metaReader struct {
	b   []byte
	err error
}

func (m *metaReader) uvarint() uint64 {
	if m.err != nil {
		return 0
	}
	v, n := binary.Uvarint(m.b)
	if n <= 0 {
		m.err = corruptf("bad length in meta")
		return 0
	}
	m.b = m.b[n:]
	return v
}

func (m *metaReader) str() string {
	n := m.uvarint()
	if m.err != nil {
		return ""
	}
	if n > uint64(len(m.b)) {
		m.err = corruptf("string of %d bytes overruns meta", n)
		return ""
	}
	s := string(m.b[:n])
	m.b = m.b[n:]
	return s
}
