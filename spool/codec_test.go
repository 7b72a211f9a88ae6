package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func codecRecords() map[string]*Record {
	many := http.Header{}
	for i := range maxHeaders {
		many.Add("X-H"+strconv.Itoa(i%5), strconv.Itoa(i))
	}
	return map[string]*Record{
		"empty": {Created: time.Unix(0, 0)},
		"traces": {
			URL: "https://collector.example:4318/v1/traces", ContentType: "application/x-protobuf",
			Signal: SignalTraces, Created: time.Unix(1700000000, 123456789), Body: []byte("\x0a\x00payload"),
		},
		"gzip json with headers": {
			URL: "http://[::1]:4318/v1/logs", ContentType: "application/json", ContentEncoding: "gzip",
			Signal: SignalLogs, Created: time.Unix(1, 1),
			Header: http.Header{"X-Tenant": {"a", "b"}, "X-Scope-Orgid": {""}, "A": {"first"}},
			Body:   bytes.Repeat([]byte{0, 0xff, 0x1f, 0x8b}, 1000),
		},
		"before 1970, unknown signal": {URL: "/v1/x", Signal: 255, Created: time.Unix(-1e9, 5), Body: []byte{0}},
		"unicode":                     {URL: "https://例え.jp/v1/metrics", ContentType: "ü", Signal: SignalMetrics, Created: time.Unix(2, 0), Body: []byte("ß")},
		"large body":                  {Created: time.Unix(3, 0), Body: body(7, 200<<10)},
		"max headers":                 {Created: time.Unix(4, 0), Header: many, Body: []byte("h")},
		"max meta": {Created: time.Unix(5, 0), Body: []byte("m"),
			// 3 bytes of length, 2 empty strings, a header count.
			URL: strings.Repeat("u", maxMetaSize-3-2-1)},
	}
}

func recordsEqual(a, b *Record) bool {
	return a.URL == b.URL && a.ContentType == b.ContentType && a.ContentEncoding == b.ContentEncoding &&
		a.Signal == b.Signal && a.Created.UnixNano() == b.Created.UnixNano() &&
		bytes.Equal(a.Body, b.Body) && headersEqual(a.Header, b.Header)
}

func headersEqual(a, b http.Header) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestCodecRoundTrip(t *testing.T) {
	for name, r := range codecRecords() {
		t.Run(name, func(t *testing.T) {
			data, err := encodeRecord(r)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if len(data) != encodedSize(r) || int64(len(data)) != r.Size() {
				t.Errorf("encoded %d bytes; encodedSize %d, Size %d", len(data), encodedSize(r), r.Size())
			}
			// The documented layout.
			if string(data[:4]) != "OTRS" || data[4] != 2 || data[5] != byte(r.Signal) ||
				int64(binary.LittleEndian.Uint64(data[8:])) != r.Created.UnixNano() ||
				int(binary.LittleEndian.Uint32(data[20:])) != len(r.Body) ||
				binary.LittleEndian.Uint64(data[24:]) != r.ID.uniq {
				t.Errorf("header % x does not follow the documented layout", data[:headerSize])
			}
			metaLen := int(binary.LittleEndian.Uint32(data[16:]))
			metaEnd := headerSize + metaLen
			if crc32.Checksum(data[:metaEnd], castagnoli) != binary.LittleEndian.Uint32(data[metaEnd:]) {
				t.Error("meta checksum is not CRC-32C of header and meta")
			}
			if !bytes.Equal(data[metaEnd+4:len(data)-4], r.Body) {
				t.Error("body is not stored byte for byte")
			}
			if crc32.Checksum(r.Body, castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
				t.Error("body checksum is not CRC-32C of the body")
			}

			got, err := decodeRecord(data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !recordsEqual(got, r) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
			}
			// The meta alone decodes from a prefix.
			m, bodyLen, err := decodeMeta(data[:metaEnd+4])
			if err != nil || bodyLen != len(r.Body) || m.URL != r.URL || m.metaEnd != metaEnd+4 {
				t.Errorf("decodeMeta of the prefix: %v, %d", err, bodyLen)
			}
			// Every strict prefix and every single flipped byte is refused.
			for n := 0; n < len(data); n += 1 + len(data)/200 {
				if _, err := decodeRecord(data[:n]); !errors.Is(err, errCorrupt) {
					t.Fatalf("prefix of %d bytes: %v", n, err)
				}
			}
			for i := 0; i < len(data); i += 1 + len(data)/300 {
				bad := bytes.Clone(data)
				bad[i] ^= 0x01
				if _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
					t.Fatalf("flipped byte %d of %d: %v", i, len(data), err)
				}
			}
		})
	}
}

func TestEncodeLimits(t *testing.T) {
	many := http.Header{}
	for i := range maxHeaders + 1 {
		many.Add("X", strconv.Itoa(i))
	}
	cases := map[string]*Record{
		"meta one byte over": {URL: strings.Repeat("u", maxMetaSize-3-2-1+1)},
		"too many headers":   {Header: many},
		"body too large":     {Body: make([]byte, MaxBodySize+1)},
	}
	for name, r := range cases {
		if _, err := encodeRecord(r); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

// rawRecord frames meta and body with valid lengths and checksums, so that
// a decoder must look inside to refuse it.
func rawRecord(meta, body []byte) []byte {
	head := make([]byte, headerSize)
	copy(head, recordMagic)
	head[4] = recordVersion
	binary.LittleEndian.PutUint32(head[16:], uint32(len(meta)))
	binary.LittleEndian.PutUint32(head[20:], uint32(len(body)))
	out := append(head, meta...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(body, castagnoli))
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := encodeRecord(codecRecords()["traces"])
	withHeader := func(f func(h []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	setLen := func(off int, v uint32) []byte {
		return withHeader(func(h []byte) { binary.LittleEndian.PutUint32(h[off:], v) })
	}
	cases := map[string][]byte{
		"nothing":               nil,
		"short header":          good[:headerSize-1],
		"bad magic":             withHeader(func(h []byte) { h[0] = 'X' }),
		"bad version":           withHeader(func(h []byte) { h[4] = 3 }),
		"meta length too large": setLen(16, maxMetaSize+1),
		"body length too large": setLen(20, MaxBodySize+1),
		"huge meta length":      setLen(16, 0xffffffff),
		"huge body length":      setLen(20, 0xffffffff),
		"truncated in meta":     good[:headerSize+10],
		"meta checksum":         withHeader(func(h []byte) { h[headerSize+1] ^= 1 }),
		"body checksum":         withHeader(func(h []byte) { h[len(h)-5] ^= 1 }),
		"extra byte":            append(bytes.Clone(good), 0),
		"stray bytes in meta":   rawRecord([]byte{0, 0, 0, 0, 7}, []byte("b")),
		"string overruns meta":  rawRecord([]byte{9, 'a'}, nil),
		"bad uvarint":           rawRecord([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, nil),
		"empty meta":            rawRecord(nil, nil),
		"too many headers":      rawRecord([]byte{0, 0, 0, maxHeaders + 1}, nil),
		"header count lies":     rawRecord([]byte{0, 0, 0, 2, 1, 'k', 1, 'v'}, nil),
	}
	for name, data := range cases {
		r, err := decodeRecord(data)
		if !errors.Is(err, errCorrupt) || r != nil {
			t.Errorf("%s: decodeRecord = %v, %v; want a corruption error", name, r, err)
		}
	}
	// The framing helper itself makes valid records; the decoder keeps a
	// header name as stored, not canonicalized.
	//lint:ignore SA1008 the stored name "k" is looked up as it is
	if r, err := decodeRecord(rawRecord([]byte{0, 0, 0, 1, 1, 'k', 1, 'v'}, []byte("b"))); err != nil || r.Header.Get("k") != "" || r.Header["k"][0] != "v" {
		t.Errorf("rawRecord: %v %v", r, err)
	}
}

// FuzzDecodeRecord: decoding never panics, refuses with a corruption error,
// and whatever it accepts encodes back to bytes that decode to the same
// record.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range codecRecords() {
		if len(r.Body) > 256 || len(r.URL) > 256 {
			continue // large seeds make minimizing slow
		}
		data, err := encodeRecord(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	f.Add([]byte{})
	f.Add(rawRecord([]byte{0, 0, 0, 2, 1, 'b', 1, '1', 1, 'a', 1, '2'}, []byte("x")))
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		r, err := decodeRecord(data)
		if !bytes.Equal(data, orig) {
			t.Fatal("decodeRecord changed its input")
		}
		if err != nil {
			if r != nil || !errors.Is(err, errCorrupt) {
				t.Fatalf("decodeRecord = %v, %v; want nil and a corruption error", r, err)
			}
			return
		}
		if len(r.Body) > len(data) {
			t.Fatalf("body of %d bytes from %d", len(r.Body), len(data))
		}
		again, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("re-encoding a decoded record: %v", err)
		}
		if len(again) != encodedSize(r) {
			t.Fatalf("re-encoded %d bytes, encodedSize says %d", len(again), encodedSize(r))
		}
		r2, err := decodeRecord(again)
		if err != nil {
			t.Fatalf("decoding the re-encoded record: %v", err)
		}
		if !recordsEqual(r, r2) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
		// Canonical from then on.
		if third, _ := encodeRecord(r2); !bytes.Equal(third, again) {
			t.Fatal("encoding is not stable")
		}
	})
}

// TestFuzzCorpus keeps the checked-in seeds meaningful: valid-* decode,
// broken-* do not.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRecord")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var valid, broken int
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(strings.TrimSpace(string(raw)), "\n", 2)
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a go test fuzz v1 file", e.Name())
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		_, err = decodeRecord([]byte(s))
		switch {
		case strings.HasPrefix(e.Name(), "valid-"):
			valid++
			if err != nil {
				t.Errorf("%s: %v", e.Name(), err)
			}
		case strings.HasPrefix(e.Name(), "broken-"):
			broken++
			if err == nil {
				t.Errorf("%s decodes", e.Name())
			}
		}
	}
	if valid < 3 || broken < 3 {
		t.Errorf("%d valid and %d broken seeds, want at least 3 of each", valid, broken)
	}
}
