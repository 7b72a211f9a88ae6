package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// Claim hands out up to max of the oldest waiting records, each to be
// settled later with Ack, Release or Quarantine. It returns no records and
// no error when nothing is waiting. Records that turn out corrupt are
// quarantined and records past the maximum age dropped, both counted,
// neither returned. Claim(max) is ClaimWhere(max, nil).
func (s *Spool) Claim(max int) ([]*Record, error) { return s.ClaimWhere(max, nil) }

// ClaimWhere is Claim for the records whose stored URL accept accepts
// (every record when accept is nil): up to max of the oldest such, oldest
// first for each URL. The others stay waiting, untouched, and are handed
// out by a later claim that accepts them.
//
// accept is called at most once per distinct URL and claim, with the
// spool's lock held: it must not call the spool. The records it skips cost
// a claim nothing after the first claim that passes over them, as each
// segment keeps a cursor per URL.
//
// Which URLs a segment not loaded yet (one another process shared, or
// this one wrote and set aside) holds is known only once it is loaded, so
// a claim loads such segments, oldest first, as it comes to them, even
// when none of their records is accepted: the segment is then this
// process's to send from, as with Claim. When a maximum age is set,
// records of skipped URLs past it are dropped all the same (counted
// Expired), so that a URL never accepted does not keep its records longer.
func (s *Spool) ClaimWhere(max int, accept func(url string) bool) ([]*Record, error) {
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

	f := filter{accept: accept}
	var out []*Record
	var firstErr error
	// Records that turn out expired or corrupt are not handed out, so pick
	// again until max are or none is left: an empty result must mean that
	// nothing accepted is waiting.
	for len(out) < max && firstErr == nil {
		s.mu.Lock()
		var picked, expired []slotRef
		var load *segment
		if accept == nil {
			picked, load = s.pickLocked(max - len(out))
		} else {
			picked, expired, load = s.pickWhereLocked(max-len(out), &f)
		}
		s.mu.Unlock()
		for _, p := range expired {
			s.settleSlot(p, func(c *Stats) { c.Dropped.Expired++ })
			s.unref(p.seg)
		}
		if load != nil {
			firstErr = s.load(load)
			continue
		}
		if len(picked) == 0 {
			if len(expired) > 0 {
				continue
			}
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

// filter is the accept function of one claim, with its answers: accept
// is asked once per destination.
type filter struct {
	accept  func(url string) bool
	answers []int8 // by destination: 0 not asked yet, 1 accepted, -1 skipped
}

func (f *filter) accepts(s *Spool, d uint32) bool {
	if int(d) >= len(f.answers) {
		f.answers = append(f.answers, make([]int8, len(s.dests)-len(f.answers))...)
	}
	if f.answers[d] == 0 {
		f.answers[d] = -1
		if f.accept(s.dests[d]) {
			f.answers[d] = 1
		}
	}
	return f.answers[d] > 0
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

// pickWhereLocked is pickLocked for the destinations f accepts. Each
// accepted destination of a segment is walked from its own cursor; the
// candidates are taken in slot order, oldest first. With a maximum age it
// also claims, and returns as expired, the records of skipped destinations
// at the head of their line that are past it, for the caller to drop.
func (s *Spool) pickWhereLocked(n int, f *filter) (picked, expired []slotRef, load *segment) {
	var now int64
	if s.cfg.maxAge > 0 {
		now = s.cfg.now().UnixNano()
	}
	var cand []int
	for _, seg := range s.segs {
		if seg.busy || seg.gone || seg.records-seg.settled <= seg.claimedN {
			continue
		}
		if seg.slots == nil {
			if len(picked) > 0 || len(expired) > 0 {
				return picked, expired, nil
			}
			seg.busy = true
			return nil, nil, seg
		}
		cand = cand[:0]
		for d := range s.dests {
			d := uint32(d)
			i := seg.cursorTo(d)
			if i >= len(seg.slots) {
				continue
			}
			// Past the waiting records of d at the cursor nothing is
			// waiting for d.
			for i < len(seg.slots) && (seg.slots[i].dest != d || seg.slots[i].state != slotWaiting) {
				i++
			}
			seg.setCursorTo(d, i)
			if i == len(seg.slots) {
				continue
			}
			if !f.accepts(s, d) {
				if now != 0 {
					expired = s.expireHeadLocked(seg, d, now, expired)
				}
				continue
			}
			need := n - len(picked)
			for j, got := i, 0; j < len(seg.slots) && got < need; j++ {
				if sl := &seg.slots[j]; sl.dest == d && sl.state == slotWaiting {
					cand = append(cand, j)
					got++
				}
			}
		}
		slices.Sort(cand)
		for _, i := range cand {
			if len(picked) == n {
				break
			}
			sl := &seg.slots[i]
			sl.state = slotClaimed
			seg.claimedN++
			seg.refs++
			s.claimed[sl.id] = slotRef{seg, i}
			picked = append(picked, slotRef{seg, i})
		}
		if len(picked) == n {
			break
		}
	}
	return picked, expired, nil
}

// expireHeadLocked claims the waiting records of destination d in seg
// that are past the maximum age, from the head of d's line up to the
// first that is not, and adds them to expired.
func (s *Spool) expireHeadLocked(seg *segment, d uint32, now int64, expired []slotRef) []slotRef {
	maxAge := int64(s.cfg.maxAge)
	for i := seg.cursorTo(d); i < len(seg.slots); i++ {
		sl := &seg.slots[i]
		if sl.dest != d || sl.state != slotWaiting {
			continue
		}
		if now-sl.id.created <= maxAge {
			break
		}
		sl.state = slotClaimed
		seg.claimedN++
		seg.refs++
		s.claimed[sl.id] = slotRef{seg, i}
		expired = append(expired, slotRef{seg, i})
	}
	return expired
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
	var urls []string // of the scanned slots, interned below under mu
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
			url := ""
			if sc.meta != nil {
				url = sc.meta.URL
			}
			slots = append(slots, sl)
			urls = append(urls, url)
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
	for i, url := range urls {
		slots[i].dest = s.internLocked(url)
	}
	seg.dir, seg.f, seg.slots, seg.ackBytes, seg.bytes = s.mine, f, slots, ackBytes, length
	seg.records, seg.settled, seg.live, seg.next, seg.firstLive, seg.nextTo = len(slots), 0, 0, 0, 0, nil
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
