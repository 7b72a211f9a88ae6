package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Claim hands out up to max of the oldest waiting records, each to be
// settled later with Ack, Release or Quarantine. It returns no records and
// no error when nothing is waiting. Records that turn out corrupt are
// quarantined and records past the maximum age dropped, both counted,
// neither returned.
func (s *Spool) Claim(max int) ([]*Record, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	// Registered before the rescan, so that Close waits for it too.
	s.ops.Add(1)
	defer s.ops.Done()
	if !s.waitingLocked() && s.cfg.rescanInterval >= 0 && s.cfg.now().Sub(s.lastScan) >= s.cfg.rescanInterval {
		s.mu.Unlock()
		if err := s.scan(); err != nil {
			s.cfg.logger.Warn("spool: rescan failed", "dir", s.dir, "err", err)
		}
	} else {
		s.mu.Unlock()
	}

	var out []*Record
	var firstErr error
	// Records that turn out expired or corrupt are not handed out, so pick
	// again until max are or none is left: an empty result must mean that
	// nothing is waiting.
	for len(out) < max && firstErr == nil {
		s.mu.Lock()
		picked, load := s.pickLocked(max - len(out))
		s.mu.Unlock()
		if load != nil {
			firstErr = s.load(load)
			continue
		}
		if len(picked) == 0 {
			break
		}
		for _, p := range picked {
			if rec := s.read(p); rec != nil {
				out = append(out, rec)
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, firstErr
}

// waitingLocked tells whether any record may be waiting to be claimed.
func (s *Spool) waitingLocked() bool {
	for _, seg := range s.segs {
		if !seg.gone && seg.records-seg.settled > seg.claimedN {
			return true
		}
	}
	return false
}

// pickLocked claims up to n waiting slots, oldest first. When the oldest
// records are in a segment not loaded yet, it returns that segment (marked
// busy) for the caller to load first.
func (s *Spool) pickLocked(n int) (picked []slotRef, load *segment) {
	for _, seg := range s.segs {
		if seg.busy || seg.gone || seg.records-seg.settled <= seg.claimedN {
			continue
		}
		if seg.slots == nil {
			if len(picked) > 0 {
				return picked, nil
			}
			seg.busy = true
			return nil, seg
		}
		for i := seg.next; i < len(seg.slots) && len(picked) < n; i++ {
			sl := &seg.slots[i]
			if sl.state != slotWaiting {
				if i == seg.next {
					seg.next++
				}
				continue
			}
			sl.state = slotClaimed
			seg.claimedN++
			seg.refs++
			s.claimed[sl.id] = slotRef{seg, i}
			picked = append(picked, slotRef{seg, i})
			if i == seg.next {
				seg.next++
			}
		}
		if len(picked) == n {
			break
		}
	}
	return picked, nil
}

// read reads a claimed slot. It returns nil when the record was set aside
// (corrupt) or dropped (expired) instead.
func (s *Spool) read(p slotRef) *Record {
	defer s.unref(p.seg)
	s.mu.Lock()
	sl := p.seg.slots[p.i]
	f := p.seg.f
	s.mu.Unlock()
	if s.cfg.maxAge > 0 && s.cfg.now().Sub(sl.id.Created()) > s.cfg.maxAge {
		s.settleSlot(p, func(c *Stats) { c.Dropped.Expired++ })
		return nil
	}
	bp := getReadBuf(int(sl.size))
	buf := *bp
	n, err := f.ReadAt(buf, int64(sl.off))
	var rec *Record
	if err == nil || (err == io.EOF && n == len(buf)) {
		rec, err = decodeRecord(buf)
	}
	if err == nil && rec.ID != sl.id {
		err = corruptf("record ID %s, the index says %s", rec.ID, sl.id)
	}
	if err != nil {
		path := filepath.Join(p.seg.dir, p.seg.name)
		s.quarantineData(buf[:n], fmt.Sprintf("%s-%d.corrupt", p.seg.key, sl.off),
			&CorruptionError{Path: path, Offset: int64(sl.off), Err: err})
		s.settleSlot(p, func(c *Stats) { c.Dropped.Corrupt++ })
		putReadBuf(bp)
		return nil
	}
	rec.Attempts = int(sl.attempts)
	rec.buf = bp
	return rec
}

// load claims seg from pending/ into this process's folder and reads its
// index: every record's place and ID, from headers verified against their
// checksums, and what the sidecar says was done. Damaged regions are quarantined and
// counted. It returns nil when another process took the segment first.
func (s *Spool) load(seg *segment) error {
	fsys := s.cfg.fs
	src, dst := filepath.Join(s.pending, seg.name), filepath.Join(s.mine, seg.name)
	if err := fsys.Rename(src, dst); err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if errors.Is(err, fs.ErrNotExist) {
			seg.busy = false
			s.forgetLocked(seg) // its files are another process's now
			return nil
		}
		seg.busy = false
		return diskError("claim", src, err)
	}
	s.mu.Lock()
	written := s.takeWrittenLocked(seg)
	s.mu.Unlock()
	var side sidecarState
	ackBytes := int64(0)
	ackDst := filepath.Join(s.mine, sidecarName(seg.key))
	if err := fsys.Rename(filepath.Join(s.pending, sidecarName(seg.key)), ackDst); err == nil {
		if data, err := fsys.ReadFile(ackDst); err == nil {
			side, ackBytes = readSidecar(data), int64(len(data))
		}
	}
	f, err := fsys.OpenFile(dst, os.O_RDWR, 0)
	if errors.Is(err, syscall.EISDIR) {
		// Not a file at all: set aside. Any other failure to open is the
		// disk's, and the segment is handed back below.
		s.quarantineFile(dst, seg.name, &CorruptionError{Path: dst, Err: err})
		s.mu.Lock()
		seg.busy = false
		s.forgetLocked(seg)
		s.counts.Dropped.Corrupt++
		s.mu.Unlock()
		return nil
	}
	var length int64
	if err == nil {
		length, err = segmentFileSize(f)
		if err == nil && length > seg.bytes {
			// Past the length the name gives is nothing that was
			// acknowledged: a write cut short by a failing disk.
			err = f.Truncate(seg.bytes)
		}
		length = min(length, seg.bytes)
	}
	var slots []slot
	var corrupt []scanned
	if err == nil && writtenFits(written, seg.records, length) {
		// As this process wrote it: the offsets are known, and each
		// record is verified whole when it is read to be sent. Only what
		// the sidecar says was done since is new.
		slots = written
		for i := range slots {
			sl := &slots[i]
			sl.state, sl.attempts = slotWaiting, side.attempts[sl.off]
			if side.settled[sl.off] {
				sl.state = slotSettled
			}
		}
	} else if err == nil {
		// Framing only: each body's checksum is verified when the record
		// is read to be sent, which reads it anyway.
		err = scanSegment(f, length, false, func(sc scanned) {
			sl := slot{off: uint32(sc.off), size: uint32(sc.size)}
			switch {
			case sc.err != nil:
				sl.state = slotSettled
				if !side.settled[sl.off] {
					corrupt = append(corrupt, sc)
				}
			case side.settled[sl.off]:
				sl.id, sl.state = sc.meta.ID, slotSettled
			default:
				sl.id, sl.attempts = sc.meta.ID, side.attempts[sl.off]
			}
			slots = append(slots, sl)
		})
	}
	if err != nil {
		if f != nil {
			_ = f.Close()
		}
		// Handed back to pending/, sidecar first, for a later claim here
		// or elsewhere. If even that fails it stays in this process's
		// folder, which Close then keeps for the next process to adopt.
		_ = fsys.Rename(ackDst, filepath.Join(s.pending, sidecarName(seg.key)))
		back := fsys.Rename(dst, src)
		s.mu.Lock()
		seg.busy = false
		if back != nil {
			s.keepMine = true
			s.forgetLocked(seg) // its files stay; only the index lets go
		}
		s.mu.Unlock()
		return diskError("claim", dst, err)
	}

	s.mu.Lock()
	// Records the name promised and the scan could not make out, as when
	// the file was cut short, are lost: counted, like the damaged regions.
	if missing := seg.records - len(slots); missing > 0 {
		s.counts.Dropped.Corrupt += uint64(missing)
	}
	s.diskBytes += ackBytes - seg.ackBytes + length - seg.bytes
	seg.dir, seg.f, seg.slots, seg.ackBytes, seg.bytes = s.mine, f, slots, ackBytes, length
	seg.records, seg.settled, seg.live, seg.next, seg.firstLive = len(slots), 0, 0, 0, 0
	for _, sl := range slots {
		if sl.state == slotSettled {
			seg.settled++
		} else {
			seg.live += int64(sl.size)
		}
	}
	seg.refs++ // for the quarantining below
	seg.busy = false
	s.mu.Unlock()

	for _, sc := range corrupt {
		data := make([]byte, min(sc.size, MaxBodySize))
		n, _ := f.ReadAt(data, sc.off)
		s.quarantineData(data[:n], fmt.Sprintf("%s-%d.corrupt", seg.key, sc.off),
			&CorruptionError{Path: dst, Offset: sc.off, Err: sc.err})
		s.mu.Lock()
		s.counts.Dropped.Corrupt++
		s.mu.Unlock()
		s.appendSidecar(seg, uint32(sc.off), opSettled)
	}
	s.unref(seg)
	return nil
}

// writtenFits tells whether the slots kept from writing a segment cover
// exactly the records and bytes it has now.
func writtenFits(written []slot, records int, length int64) bool {
	if len(written) == 0 || len(written) != records {
		return false
	}
	last := written[len(written)-1]
	return int64(last.off)+int64(last.size) == length
}
