package spool

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
)

// insertLocked adds seg to the index in key order.
func (s *Spool) insertLocked(seg *segment) {
	i, _ := slices.BinarySearchFunc(s.segs, seg.key, func(a *segment, k ID) int {
		switch {
		case a.key.less(k):
			return -1
		case k.less(a.key):
			return 1
		}
		return 0
	})
	s.segs = slices.Insert(s.segs, i, seg)
	s.byKey[seg.key] = seg
}

// forgetLocked removes seg from the index and returns the deletion of its
// files, which callers whose files are not theirs to delete drop.
func (s *Spool) forgetLocked(seg *segment) action {
	seg.gone, seg.busy = true, true
	s.takeWrittenLocked(seg)
	s.diskBytes -= seg.bytes + seg.ackBytes
	if i := slices.Index(s.segs, seg); i >= 0 {
		s.segs = slices.Delete(s.segs, i, i+1)
	}
	delete(s.byKey, seg.key)
	return action{seg: seg, kind: actDelete}
}

// action is file work decided under mu and carried out after it.
type action struct {
	seg  *segment
	kind int
}

const (
	actDelete = iota + 1
	actShare
)

// tidyLocked deletes seg once every record in it is settled, and shares it
// when asked to and nothing of it has been touched. It returns the file work
// to do after mu is released.
func (s *Spool) tidyLocked(seg *segment, share bool) []action {
	if seg.active || seg.busy || seg.gone || seg.refs > 0 || seg.slots == nil {
		return nil
	}
	if seg.settled >= seg.records {
		return []action{s.forgetLocked(seg)}
	}
	if share && seg.claimedN == 0 && seg.settled == 0 {
		seg.busy = true
		return []action{{seg: seg, kind: actShare}}
	}
	return nil
}

// do carries out file work decided under mu.
func (s *Spool) do(acts []action) {
	for _, a := range acts {
		switch a.kind {
		case actDelete:
			// In the background: unlinking a segment of megabytes whose
			// pages are still dirty takes the kernel milliseconds, which
			// the Ack that finished the segment need not wait for. Every
			// caller of do is an operation, so Close waits for it.
			s.ops.Add(1)
			s.deleting.Add(1)
			go func() {
				defer s.ops.Done()
				defer s.deleting.Done()
				s.deleteFiles(a.seg)
			}()
		case actShare:
			s.share(a.seg)
		}
	}
}

func (s *Spool) deleteFiles(seg *segment) {
	seg.closeFiles()
	path := filepath.Join(seg.dir, seg.name)
	// The segment before its sidecar: a sidecar left alone is harmless, a
	// segment left without its sidecar would be sent again.
	if err := s.cfg.fs.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.cfg.logger.Warn("spool: cannot delete a delivered segment", "path", path, "err", err)
		return
	}
	_ = s.cfg.fs.Remove(filepath.Join(seg.dir, sidecarName(seg.key)))
}

// share moves a loaded segment to pending/ and drops its slots from memory.
func (s *Spool) share(seg *segment) {
	name, err := s.moveToPending(seg)
	s.mu.Lock()
	defer s.mu.Unlock()
	seg.busy = false
	if err != nil {
		s.warnOnceLocked("share:"+seg.key.String(), "spool: cannot move a segment to pending/; keeping it", "segment", seg.name, "err", err)
		return
	}
	seg.closeFiles()
	if s.writtenSlots+len(seg.slots) <= maxWrittenSlots {
		seg.written = seg.slots
		s.writtenSlots += len(seg.slots)
	}
	seg.slots, seg.dir, seg.name, seg.next, seg.firstLive, seg.nextTo = nil, s.pending, name, 0, 0, nil
}

// maxWrittenSlots bounds the slots kept for segments this process wrote
// and shared untouched (40 bytes each: 1.25 MiB), so that loading one of them
// again, which is what a process does with the backlog of its own outage,
// reads no more than its sidecar, rather than every byte of the segment a
// second time to find its records.
const maxWrittenSlots = 1 << 15

// takeWrittenLocked returns and forgets the slots kept for seg.
func (s *Spool) takeWrittenLocked(seg *segment) []slot {
	w := seg.written
	seg.written = nil
	s.writtenSlots -= len(w)
	return w
}

// moveToPending renames seg's sidecar, then seg, into pending/ under its
// sealed name. The sidecar goes first so that the segment never waits in
// pending/ without it; a failure puts the sidecar back.
func (s *Spool) moveToPending(seg *segment) (string, error) {
	s.flushSidecar(seg)
	fsys := s.cfg.fs
	name := segmentName(seg.key, seg.records, seg.bytes)
	ackSrc, ackDst := filepath.Join(seg.dir, sidecarName(seg.key)), filepath.Join(s.pending, sidecarName(seg.key))
	movedAck := fsys.Rename(ackSrc, ackDst) == nil
	if err := fsys.Rename(filepath.Join(seg.dir, seg.name), filepath.Join(s.pending, name)); err != nil {
		if movedAck {
			_ = fsys.Rename(ackDst, ackSrc)
		}
		return "", err
	}
	return name, nil
}

// unref ends I/O on seg begun under mu, and tidies it.
func (s *Spool) unref(seg *segment) {
	s.mu.Lock()
	seg.refs--
	acts := s.tidyLocked(seg, false)
	s.mu.Unlock()
	s.do(acts)
}
