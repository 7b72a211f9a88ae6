package spool

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"
)

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

// sidecarState is what a sidecar says about a segment's records, by the
// offset each record starts at.
type sidecarState struct {
	settled  map[uint32]bool
	attempts map[uint32]int32
}

// readSidecar decodes a sidecar. It never fails: a torn last entry and
// entries that fail their check or name an unknown op are skipped.
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

// Sidecar entries are buffered and written in batches: when 4 KiB have
// gathered, a second after the first of them, and before the segment moves
// or the spool closes. So settling a record costs no system call of its
// own, and most entries are never written at all, because a segment whose
// records are all delivered within the second is deleted with its sidecar. The price: entries buffered when
// the process is killed are lost, so up to a second's worth of delivered
// records may be sent again after a crash, which at-least-once delivery
// allows.
const (
	sidecarFlushBytes = 4096
	sidecarFlushDelay = time.Second
)

// appendSidecar notes what happened to the record at off. The caller holds
// a reference on seg (its folder does not change meanwhile).
func (s *Spool) appendSidecar(seg *segment, off uint32, op byte) {
	e := sidecarEntry(off, op)
	seg.ackMu.Lock()
	seg.ackPending = append(seg.ackPending, e[:]...)
	full := len(seg.ackPending) >= sidecarFlushBytes
	if !full && seg.ackTimer == nil {
		seg.ackTimer = time.AfterFunc(sidecarFlushDelay, func() { s.flushLater(seg) })
	}
	seg.ackMu.Unlock()
	if full {
		s.flushSidecar(seg)
	}
}

// flushLater writes what a segment's sidecar has gathered, unless the
// segment is gone or busy (being moved, which writes it, or deleted) or the
// spool closing (Close writes it).
func (s *Spool) flushLater(seg *segment) {
	s.mu.Lock()
	if seg.gone || seg.busy || s.closed {
		s.mu.Unlock()
		return
	}
	seg.refs++
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()
	s.flushSidecar(seg)
	s.unref(seg)
}

// flushSidecar writes the buffered entries. A failure is logged, not
// returned: the cost is that delivered records may be sent again after a
// restart. The caller holds a reference on seg or has set it busy, so that
// its folder does not change and it is not forgotten meanwhile; the index
// is updated after ackMu is let go, keeping the lock order.
func (s *Spool) flushSidecar(seg *segment) {
	n, path, err := seg.writeSidecar(s.cfg.fs)
	if n == 0 && err == nil {
		return
	}
	s.mu.Lock()
	seg.ackBytes += int64(n)
	s.diskBytes += int64(n)
	if err != nil {
		s.warnOnceLocked("sidecar:"+seg.key.String(), "spool: cannot note settled records; they may be sent again after a restart", "path", path, "err", err)
	}
	s.mu.Unlock()
}

// writeSidecar writes seg's buffered entries under ackMu, and returns how
// many bytes the sidecar grew by.
func (seg *segment) writeSidecar(fsys FS) (n int, path string, err error) {
	seg.ackMu.Lock()
	defer seg.ackMu.Unlock()
	if seg.ackTimer != nil {
		seg.ackTimer.Stop()
		seg.ackTimer = nil
	}
	if len(seg.ackPending) == 0 {
		return 0, "", nil
	}
	path = filepath.Join(seg.dir, sidecarName(seg.key))
	if seg.ack == nil && !seg.ackBroken {
		seg.ack, err = fsys.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, filePerm)
		if err == nil {
			seg.ackSize, err = segmentFileSize(seg.ack)
		}
	}
	if err == nil && !seg.ackBroken {
		n, err = seg.ack.Write(seg.ackPending)
		if err != nil {
			// Entries are read in steps of their size: a partial one must
			// not stay, or all after it would be misread. If it cannot be
			// cut off, nothing more is noted (at worst, records are sent
			// again).
			if terr := seg.ack.Truncate(seg.ackSize); terr == nil {
				n = 0
			} else {
				seg.ackBroken = true
			}
		}
	}
	seg.ackSize += int64(n)
	seg.ackPending = seg.ackPending[:0]
	return n, path, err
}

// flushSidecars writes what every loaded segment's sidecar has gathered,
// and waits for segment deletions under way.
func (s *Spool) flushSidecars() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.ops.Add(1)
	defer s.ops.Done()
	var segs []*segment
	for _, seg := range s.segs {
		if seg.slots != nil && !seg.gone && !seg.busy {
			seg.refs++
			segs = append(segs, seg)
		}
	}
	s.mu.Unlock()
	for _, seg := range segs {
		s.flushSidecar(seg)
		s.unref(seg)
	}
	s.deleting.Wait()
}

// Flush writes what the spool has noted about settled records and not
// written yet (it does so within a second, and on Close), and finishes
// deleting delivered segments, so that a tool reading the folder now, with
// Walk, sees every settlement made before the call.
func (s *Spool) Flush() { s.flushSidecars() }
