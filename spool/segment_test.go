package spool

import (
	"bytes"
	"testing"
)

// FuzzScanSegment: whatever a segment file holds, the scanner never panics
// and accounts for every byte exactly once, in order: records that check
// out, and damaged regions between them.
func FuzzScanSegment(f *testing.F) {
	var seg []byte
	for seq := 1; seq <= 3; seq++ {
		r := rec(seq, 50*seq)
		r.ID = ID{created: int64(seq), uniq: uint64(seq)}
		data, err := encodeRecord(r)
		if err != nil {
			f.Fatal(err)
		}
		seg = append(seg, data...)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	damaged := bytes.Clone(seg)
	damaged[40] ^= 1
	f.Add(damaged)
	f.Add([]byte("OTRSOTRSOTRS"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		next := int64(0)
		err := scanSegment(bytes.NewReader(data), int64(len(data)), true, func(sc scanned) {
			if sc.off != next || sc.size <= 0 || sc.off+sc.size > int64(len(data)) {
				t.Fatalf("region [%d, +%d) after %d in %d bytes", sc.off, sc.size, next, len(data))
			}
			if sc.err == nil {
				r, err := decodeRecord(data[sc.off : sc.off+sc.size])
				if err != nil || r.ID != sc.meta.ID {
					t.Fatalf("region at %d passed the scan, fails decoding: %v", sc.off, err)
				}
			}
			next = sc.off + sc.size
		})
		if err != nil {
			t.Fatal(err)
		}
		if next != int64(len(data)) {
			t.Fatalf("scanned %d of %d bytes", next, len(data))
		}
		readSidecar(data) // must not panic either
	})
}

func TestSegmentNames(t *testing.T) {
	key := ID{created: 0x0123456789abcdef, uniq: 0xfedcba9876543210}
	for _, c := range []struct {
		name string
		want segName
	}{
		{segmentName(key, 12, 3456), segName{key: key, sealed: true, records: 12, size: 3456}},
		{activeName(key), segName{key: key}},
		{sidecarName(key), segName{key: key, sidecar: true}},
	} {
		if got, ok := parseSegName(c.name); !ok || got != c.want {
			t.Errorf("parseSegName(%q) = %+v, %v; want %+v", c.name, got, ok, c.want)
		}
	}
	for _, bad := range []string{"", ".seg", "notes.txt", "0123456789abcdef-fedcba9876543210-1-2.ack",
		"0123456789abcdef-fedcba9876543210-1.seg", "0123456789abcdef-fedcba9876543210--1-2.seg",
		"0123456789abcde-fedcba9876543210.seg", "0123456789abcdeg-fedcba9876543210.seg",
		"0123456789abcdef-fedcba9876543210-1-2-3.seg", "0123456789abcdef-fedcba9876543210-x-2.seg"} {
		if _, ok := parseSegName(bad); ok {
			t.Errorf("parseSegName(%q) accepted it", bad)
		}
	}
}

// FuzzParseSegName: any file name is either refused or parsed into a name
// that formats back to exactly itself, so that the file a parsed name
// refers to is always found again under the name the spool gives it.
func FuzzParseSegName(f *testing.F) {
	key := ID{created: 0x0123456789abcdef, uniq: 0xfedcba9876543210}
	for _, seed := range []string{
		segmentName(key, 12, 34567), activeName(key), sidecarName(key),
		segmentName(ID{}, 0, 0), activeName(ID{created: -1, uniq: 1<<64 - 1}),
		"", ".seg", ".ack", "notes.txt", "0123456789abcdef-fedcba9876543210-1-2-3.seg",
		"0123456789abcdef-fedcba9876543210-1-2.ack", "0123456789abcdef-fedcba987654321.seg",
		"0123456789abcdef-fedcba9876543210-+1-02.seg", "0123456789ABCDEF-fedcba9876543210.ack",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		n, ok := parseSegName(name)
		if !ok {
			return
		}
		var back string
		switch {
		case n.sidecar:
			if n.sealed {
				t.Fatalf("%q: a sidecar parsed as sealed", name)
			}
			back = sidecarName(n.key)
		case n.sealed:
			if n.records < 0 || n.size < 0 {
				t.Fatalf("%q: %d records, %d bytes", name, n.records, n.size)
			}
			back = segmentName(n.key, n.records, n.size)
		default:
			back = activeName(n.key)
		}
		if back != name {
			t.Fatalf("%q parsed as %+v, which formats as %q", name, n, back)
		}
	})
}
