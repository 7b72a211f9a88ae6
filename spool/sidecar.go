package spool

import (
	"os"
	"path/filepath"
	"time"
)

// Sidecar entries are buffered and written in batches: when 4 KiB have
// gathered, a second after the first of them, and before the segment moves
// or the spool closes. A write per settled record cost a system call each,
// a tenth of the CPU a record takes to deliver; and most entries are never
// written at all, because a segment whose records are all delivered within
// the second is deleted with its sidecar. The price: entries buffered when
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
// restart.
func (s *Spool) flushSidecar(seg *segment) {
	seg.ackMu.Lock()
	defer seg.ackMu.Unlock()
	if seg.ackTimer != nil {
		seg.ackTimer.Stop()
		seg.ackTimer = nil
	}
	if len(seg.ackPending) == 0 {
		return
	}
	path := filepath.Join(seg.dir, sidecarName(seg.key))
	var err error
	if seg.ack == nil && !seg.ackBroken {
		seg.ack, err = s.cfg.fs.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, filePerm)
		if err == nil {
			seg.ackSize, err = segmentFileSize(seg.ack)
		}
	}
	var n int
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
	s.mu.Lock()
	seg.ackBytes += int64(n)
	s.diskBytes += int64(n)
	if err != nil {
		s.warnOnceLocked("sidecar:"+seg.key.String(), "spool: cannot note settled records; they may be sent again after a restart", "path", path, "err", err)
	}
	s.mu.Unlock()
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
