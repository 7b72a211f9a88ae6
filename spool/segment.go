package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
)

// A segment is a file of records appended one after another, each framed as
// described in codec.go. Records are stored in segments rather than one file
// each because a file per record costs a create and a rename to store it and
// a rename, an open and an unlink to deliver it: tens of microseconds of
// kernel time a record, which held the spool to half the speed of the disk
// and the drain to half the speed of the network. A segment costs one write
// a record to store it, one read and one small append to deliver it.
//
// A process appends to its own active segment in its owner folder and seals
// it at a size bound. Sealed segments nobody has started on are moved to
// pending/, where any process can claim one by renaming it into its own
// folder. What has been done with the records of a segment is appended to
// a sidecar file beside it (see sidecar below), so that no segment is ever
// rewritten and a process that takes a segment over knows which of its
// records were delivered already.
//
// Names:
//
//	<first:16 hex>-<uniq:16 hex>.seg                 active (being appended)
//	<first:16 hex>-<uniq:16 hex>-<records>-<bytes>.seg  sealed
//	<first:16 hex>-<uniq:16 hex>.ack                 its sidecar
//
// where first-uniq is the ID of the segment's first record (its key: it
// sorts segments in creation order), records the number of records it
// holds and bytes its valid length. An active segment of a process that
// died may end in a torn record; whoever adopts it scans it for its valid
// length, truncates it there, and seals it under its full name.
const (
	segmentExt = ".seg"
	sidecarExt = ".ack"
)

// segmentName names a sealed segment.
func segmentName(key ID, records int, size int64) string {
	return fmt.Sprintf("%s-%d-%d%s", key, records, size, segmentExt)
}

// activeName names a segment still being appended to.
func activeName(key ID) string { return key.String() + segmentExt }

func sidecarName(key ID) string { return key.String() + sidecarExt }

// segName is what a segment or sidecar file name says.
type segName struct {
	key     ID
	sealed  bool
	records int
	size    int64
	sidecar bool
}

// parseSegName reads a segment or sidecar name; ok is false for any other.
func parseSegName(name string) (n segName, ok bool) {
	base, isSeg := strings.CutSuffix(name, segmentExt)
	if !isSeg {
		var isAck bool
		if base, isAck = strings.CutSuffix(name, sidecarExt); !isAck {
			return n, false
		}
		n.sidecar = true
	}
	p0, rest, ok0 := strings.Cut(base, "-")
	p1, rest, ok1 := strings.Cut(rest, "-")
	if !ok0 || len(p0) != 16 || len(p1) != 16 {
		return n, false
	}
	created, err1 := strconv.ParseUint(p0, 16, 64)
	uniq, err2 := strconv.ParseUint(p1, 16, 64)
	if err1 != nil || err2 != nil {
		return n, false
	}
	n.key = ID{created: int64(created), uniq: uniq}
	if !ok1 {
		return n, true // active segment, or a sidecar
	}
	if n.sidecar {
		return n, false
	}
	p2, p3, ok2 := strings.Cut(rest, "-")
	if !ok2 || strings.Contains(p3, "-") {
		return n, false
	}
	records, err3 := strconv.Atoi(p2)
	size, err4 := strconv.ParseInt(p3, 10, 64)
	if err3 != nil || err4 != nil || records < 0 || size < 0 {
		return n, false
	}
	n.sealed, n.records, n.size = true, records, size
	return n, true
}

// The sidecar is a log of fixed 8-byte entries, each saying what happened
// to the record at an offset of the segment:
//
//	offset  uint32  where the record (or corrupt region) starts
//	op      uint8   opSettled or opReleased
//	check   3 bytes the low 24 bits of the CRC-32C of the first 5 bytes
//
// Entries name records by offset rather than by position, so that damage
// in the middle of a segment, which changes how many records a reader can
// make out, cannot make an entry point at another record. An entry that
// fails its check (torn by a power loss) is ignored: at worst a delivered
// record is sent again. Sidecars are never synced, for the same reason.
const (
	sidecarEntrySize = 8
	opSettled        = 1 // delivered, quarantined, expired or evicted
	opReleased       = 2 // a failed attempt: attempts+1
)

func sidecarEntry(off uint32, op byte) [sidecarEntrySize]byte {
	var e [sidecarEntrySize]byte
	binary.LittleEndian.PutUint32(e[:], off)
	e[4] = op
	c := crc32.Checksum(e[:5], castagnoli)
	e[5], e[6], e[7] = byte(c), byte(c>>8), byte(c>>16)
	return e
}

// sidecarState is what a sidecar says about a segment's records.
type sidecarState struct {
	settled  map[uint32]bool
	attempts map[uint32]int32
}

func readSidecar(data []byte) sidecarState {
	st := sidecarState{settled: map[uint32]bool{}, attempts: map[uint32]int32{}}
	for len(data) >= sidecarEntrySize {
		e := data[:sidecarEntrySize]
		data = data[sidecarEntrySize:]
		c := crc32.Checksum(e[:5], castagnoli)
		if e[5] != byte(c) || e[6] != byte(c>>8) || e[7] != byte(c>>16) {
			continue
		}
		off := binary.LittleEndian.Uint32(e)
		switch e[4] {
		case opSettled:
			st.settled[off] = true
		case opReleased:
			st.attempts[off]++
		}
	}
	return st
}

// scanned is one framed region of a segment found by scanSegment: a record
// whose header, meta and body all check out (meta set), or a corrupt region
// (err set) that starts at off and runs up to the next record the scanner
// could make out, or to the end.
type scanned struct {
	off, size int64
	meta      *decodedMeta
	bodyLen   int
	err       error
}

// scanWindow is how much of a segment the scanner reads at a time.
const scanWindow = 1 << 20

// scanSegment walks the records of a segment of the given length, calling
// fn for each region in order; checkBodies also verifies body checksums
// (loading does, adoption only needs the framing). It never panics and
// never allocates more than a window, whatever the file holds. A record
// that runs past the end is reported as a corrupt region reaching the end:
// a torn write. The returned error is from reading only.
func scanSegment(r io.ReaderAt, length int64, checkBodies bool, fn func(scanned)) error {
	w := &window{r: r, length: length}
	off := int64(0)
	for off < length {
		sc, err := w.record(off, checkBodies)
		if err != nil {
			return err
		}
		if sc.err != nil && sc.size == 0 {
			// The framing is lost: everything up to the next record the
			// scanner can trust is one corrupt region.
			next, err := w.resync(off + 1)
			if err != nil {
				return err
			}
			sc.size = next - off
		}
		fn(sc)
		off += sc.size
	}
	return nil
}

// window reads a segment sequentially through a buffer.
type window struct {
	r      io.ReaderAt
	length int64
	buf    []byte
	start  int64 // file offset of buf[0]
}

// at returns n bytes at off (n <= scanWindow), or fewer when the segment
// ends first.
func (w *window) at(off int64, n int) ([]byte, error) {
	if off >= w.start && off+int64(n) <= w.start+int64(len(w.buf)) {
		return w.buf[off-w.start : off-w.start+int64(n)], nil
	}
	if w.buf == nil || cap(w.buf) < scanWindow {
		w.buf = make([]byte, scanWindow)
	}
	want := min(int64(scanWindow), w.length-off)
	if want < 0 {
		want = 0
	}
	got, err := w.r.ReadAt(w.buf[:want], off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	w.buf, w.start = w.buf[:got], off
	return w.buf[:min(n, got)], nil
}

// rest returns what the window holds from off on, refilling it when off is
// outside or near its end, so that a search moves through a file reading
// each part about once.
func (w *window) rest(off int64) ([]byte, error) {
	end := w.start + int64(len(w.buf))
	if off >= w.start && (end-off >= 4096 || end == w.length) && off <= end {
		return w.buf[off-w.start:], nil
	}
	return w.at(off, scanWindow)
}

// record reads the record at off; a region that is not a whole, valid
// record comes back with err set (its size still to be decided).
func (w *window) record(off int64, checkBodies bool) (scanned, error) {
	sc := scanned{off: off}
	head, err := w.at(off, headerSize+maxMetaSize+crcSize)
	if err != nil {
		return sc, err
	}
	d, bodyLen, derr := decodeMeta(head)
	if derr != nil {
		sc.err = derr
		return sc, nil
	}
	total := int64(d.metaEnd) + int64(bodyLen) + crcSize
	if off+total > w.length {
		sc.err = corruptf("record of %d bytes at offset %d runs past the end (%d): torn", total, off, w.length)
		return sc, nil
	}
	if checkBodies {
		crc := uint32(0)
		pos, left := off+int64(d.metaEnd), bodyLen
		for left > 0 {
			chunk, err := w.at(pos, min(left, scanWindow))
			if err != nil {
				return sc, err
			}
			if len(chunk) == 0 {
				sc.err = corruptf("short read in body")
				return sc, nil
			}
			crc = crc32.Update(crc, castagnoli, chunk)
			pos += int64(len(chunk))
			left -= len(chunk)
		}
		trailer, err := w.at(pos, crcSize)
		if err != nil {
			return sc, err
		}
		if len(trailer) < crcSize || binary.LittleEndian.Uint32(trailer) != crc {
			sc.err = corruptf("body checksum mismatch in record at offset %d", off)
			sc.size = total
			return sc, nil
		}
	}
	sc.meta, sc.bodyLen, sc.size = d, bodyLen, total
	return sc, nil
}

// resync returns the offset of the first record at or after from whose
// header and meta check out and which fits in the segment, or the length.
func (w *window) resync(from int64) (int64, error) {
	magic := []byte(recordMagic)
	for from < w.length {
		chunk, err := w.rest(from)
		if err != nil {
			return 0, err
		}
		if len(chunk) == 0 {
			return w.length, nil // the file is shorter than it should be
		}
		i := bytes.Index(chunk, magic)
		if i < 0 {
			// The magic may straddle the window's end.
			from += int64(max(1, len(chunk)-len(magic)+1))
			continue
		}
		cand := from + int64(i)
		sc, err := w.record(cand, false)
		if err != nil {
			return 0, err
		}
		if sc.err == nil {
			return cand, nil
		}
		from = cand + 1
	}
	return w.length, nil
}
