package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// scan brings the index in line with the folder: it adopts what dead
// processes left, then takes in every segment waiting in pending/ that is
// not known yet, and forgets those other processes have taken. Only names
// and sidecars are read here; records are checked when their segment is
// loaded to be sent from.
func (s *Spool) scan() error {
	s.adoptOrphans()
	fsys := s.cfg.fs

	segs := map[ID]segName{}
	sidecars := map[ID]bool{}
	var bad []string
	err := eachDirName(fsys, s.pending, func(name string) {
		n, ok := parseSegName(name)
		switch {
		case ok && n.sidecar:
			sidecars[n.key] = true
		case ok && n.sealed:
			segs[n.key] = n
		case strings.HasPrefix(name, "."):
		default:
			bad = append(bad, name)
		}
	})
	if err != nil {
		return diskError("open", s.pending, err)
	}
	for _, name := range bad {
		s.quarantineFile(filepath.Join(s.pending, name), name, errors.New("not a segment file name"))
		s.mu.Lock()
		s.counts.Dropped.Corrupt++
		s.mu.Unlock()
	}

	// What is new is read outside the lock: sidecars may take a moment.
	s.mu.Lock()
	var fresh []segName
	for key, n := range segs {
		if _, known := s.byKey[key]; !known {
			fresh = append(fresh, n)
		}
	}
	s.mu.Unlock()
	found := make([]*segment, 0, len(fresh))
	for _, n := range fresh {
		seg := &segment{key: n.key, dir: s.pending, name: segmentName(n.key, n.records, n.size), records: n.records, bytes: n.size}
		if sidecars[n.key] {
			path := filepath.Join(s.pending, sidecarName(n.key))
			if data, err := fsys.ReadFile(path); err == nil {
				st := readSidecar(data)
				seg.settled = min(len(st.settled), n.records)
				seg.ackBytes = int64(len(data))
			}
		}
		if seg.settled >= seg.records {
			// Fully delivered; its deletion was cut short.
			s.deleteFiles(seg)
			continue
		}
		seg.live = seg.bytes
		if seg.settled > 0 {
			seg.live, seg.oldest = s.measure(seg)
		}
		found = append(found, seg)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastScan = s.cfg.now()
	for _, seg := range found {
		if _, known := s.byKey[seg.key]; !known {
			s.insertLocked(seg)
			s.diskBytes += seg.bytes + seg.ackBytes
		}
	}
	for _, seg := range slices.Clone(s.segs) {
		if seg.slots == nil && !seg.busy && seg.dir == s.pending {
			if _, there := segs[seg.key]; !there {
				s.forgetLocked(seg) // another process has taken it
			}
		}
	}
	for key := range sidecars {
		if _, there := segs[key]; !there {
			s.removeOrphanSidecar(filepath.Join(s.pending, sidecarName(key)))
		}
	}
	return nil
}

// measure adds up the records of a segment in pending/ that its sidecar
// does not say are settled, and finds the oldest of them, reading their
// framing only. Only segments left part sent are read so; each process
// leaves at most a few. If it cannot be read, the bytes are estimated in
// proportion to the records.
func (s *Spool) measure(seg *segment) (live int64, oldest ID) {
	estimate := seg.bytes * int64(seg.records-seg.settled) / int64(max(seg.records, 1))
	data, err := s.cfg.fs.ReadFile(filepath.Join(s.pending, sidecarName(seg.key)))
	if err != nil {
		return estimate, ID{}
	}
	side := readSidecar(data)
	f, err := s.cfg.fs.OpenFile(filepath.Join(s.pending, seg.name), os.O_RDONLY, 0)
	if err != nil {
		return estimate, ID{}
	}
	defer f.Close()
	size, err := segmentFileSize(f)
	if err != nil {
		return estimate, ID{}
	}
	err = scanSegment(f, min(size, seg.bytes), false, func(sc scanned) {
		if side.settled[uint32(sc.off)] {
			return
		}
		live += sc.size
		if sc.meta != nil && (oldest == ID{} || sc.meta.ID.less(oldest)) {
			oldest = sc.meta.ID
		}
	})
	if err != nil {
		return estimate, ID{}
	}
	return live, oldest
}

// removeOrphanSidecar deletes a sidecar whose segment is gone, unless it is
// recent: a process moving a segment into pending/ moves its sidecar first.
func (s *Spool) removeOrphanSidecar(path string) {
	if fi, err := s.cfg.fs.Stat(path); err == nil && s.cfg.now().Sub(fi.ModTime()) > staleLockAge {
		_ = s.cfg.fs.Remove(path)
	}
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
