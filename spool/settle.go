package spool

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// settleSlot marks a claimed slot settled for good, in memory and in the
// sidecar, counting it with count.
func (s *Spool) settleSlot(p slotRef, count func(*Stats)) {
	s.mu.Lock()
	seg := p.seg
	sl := &seg.slots[p.i]
	if sl.state == slotClaimed || sl.state == slotSettling {
		seg.claimedN--
		delete(s.claimed, sl.id)
	}
	sl.state = slotSettled
	seg.settled++
	seg.live -= int64(sl.size)
	off := sl.off
	if count != nil {
		count(&s.counts)
	}
	seg.refs++
	s.mu.Unlock()
	s.appendSidecar(seg, off, opSettled)
	s.unref(seg)
}

// Ack marks a claimed record delivered. Its segment is deleted when every
// record in it is.
func (s *Spool) Ack(id ID) error {
	p, err := s.claimedRef(id)
	if err != nil {
		return err
	}
	defer s.ops.Done()
	s.settleSlot(p, func(c *Stats) { c.Acked++ })
	return nil
}

// Release puts a claimed record back in line, its attempt count one higher.
func (s *Spool) Release(id ID) error {
	p, err := s.claimedRef(id)
	if err != nil {
		return err
	}
	defer s.ops.Done()
	s.mu.Lock()
	seg := p.seg
	sl := &seg.slots[p.i]
	sl.state = slotWaiting
	sl.attempts++
	off := sl.off
	seg.claimedN--
	delete(s.claimed, id)
	seg.next = min(seg.next, p.i)
	seg.setCursorTo(sl.dest, min(seg.cursorTo(sl.dest), p.i))
	s.counts.Released++
	seg.refs++
	s.mu.Unlock()
	s.appendSidecar(seg, off, opReleased)
	s.unref(seg)
	s.notify()
	return nil
}

// Quarantine moves a claimed record to the dead-letter folder with the
// reason beside it, for a person to inspect; it is never sent again.
func (s *Spool) Quarantine(id ID, reason string) error {
	p, err := s.claimedRef(id)
	if err != nil {
		return err
	}
	defer s.ops.Done()
	s.mu.Lock()
	sl := p.seg.slots[p.i]
	f := p.seg.f
	p.seg.refs++
	s.mu.Unlock()
	buf := make([]byte, sl.size)
	n, rerr := f.ReadAt(buf, int64(sl.off))
	s.unref(p.seg)
	err = s.quarantineData(buf[:n], entry{id: sl.id, size: int64(sl.size), attempts: sl.attempts}.name(), errors.New(reason))
	if rerr != nil && rerr != io.EOF && err == nil {
		err = diskError("quarantine", filepath.Join(p.seg.dir, p.seg.name), rerr)
	}
	// Kept or, when it cannot be, dropped: either way it is not ours to
	// send or to hand back any more.
	s.settleSlot(p, nil)
	return err
}

// claimedRef finds a claimed record for one Ack, Release or Quarantine,
// which must call s.ops.Done when finished (Close waits for it). A second
// settlement of the same record fails with ErrUnknownRecord.
func (s *Spool) claimedRef(id ID) (slotRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return slotRef{}, ErrClosed
	}
	p, ok := s.claimed[id]
	if !ok {
		return slotRef{}, fmt.Errorf("%w: %s", ErrUnknownRecord, id)
	}
	// Taken out now, so that a concurrent second call fails.
	delete(s.claimed, id)
	p.seg.slots[p.i].state = slotSettling
	s.ops.Add(1)
	return p, nil
}
