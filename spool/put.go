package spool

import (
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"sync"
	"time"
)

// Put stores r durably according to the sync mode. On success r.ID and
// r.Created are set. It fails with ErrFull (policy DropNewest),
// ErrTooLarge, ErrClosed, or an *Error from the disk; in every case what was
// stored before is untouched.
func (s *Spool) Put(r *Record) error { return s.put(r, false) }

// PutClaimed stores r as Put does, but already claimed by the caller, who
// is sending it now and must settle it with Ack, Release or Quarantine. If
// the process dies first, the record is adopted like any claimed one.
func (s *Spool) PutClaimed(r *Record) error { return s.put(r, true) }

func (s *Spool) put(r *Record, claimed bool) error {
	rec := s.sanitize(r)
	size := rec.Size()
	head, trailer, err := encodeHead(rec)
	if err != nil || size > s.cfg.maxBytes {
		s.mu.Lock()
		s.counts.Dropped.TooLarge++
		s.mu.Unlock()
		return fmt.Errorf("%w: %d bytes, cap %d", ErrTooLarge, size, s.cfg.maxBytes)
	}

	s.wmu.Lock()
	s.mu.Lock()
	if s.closed {
		s.counts.Dropped.Closed++
		s.mu.Unlock()
		s.wmu.Unlock()
		return ErrClosed
	}
	cleanup, err := s.makeRoomLocked(size)
	if err != nil {
		s.counts.Dropped.Full++
		s.mu.Unlock()
		s.wmu.Unlock()
		return err
	}
	s.diskBytes += size // reserved; given back if the write fails
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()
	s.do(cleanup)

	seg, err := s.activeWLocked(rec.ID)
	var off int64
	if err == nil {
		off, err = s.appendWLocked(seg, head, rec.Body, trailer)
	}
	if err != nil && isNoSpace(err) {
		// Delivered segments being deleted in the background may be about
		// to give the space back: try once more when they are gone.
		s.deleting.Wait()
		if seg, err = s.activeWLocked(rec.ID); err == nil {
			off, err = s.appendWLocked(seg, head, rec.Body, trailer)
		}
	}
	if err != nil {
		s.wmu.Unlock()
		s.mu.Lock()
		s.diskBytes -= size
		s.counts.Dropped.Disk++
		s.mu.Unlock()
		return diskError("put", s.mine, err)
	}

	s.mu.Lock()
	st := slotWaiting
	if claimed {
		st = slotClaimed
		s.claimed[rec.ID] = slotRef{seg, len(seg.slots)}
		seg.claimedN++
	}
	seg.slots = append(seg.slots, slot{id: rec.ID, off: uint32(off), size: uint32(size), dest: s.internLocked(rec.URL), state: st})
	seg.records++
	seg.bytes += size
	seg.live += size
	s.counts.Stored++
	durable := s.cfg.sync == SyncDurable
	if durable {
		seg.refs++
	}
	s.mu.Unlock()
	var acts []action
	if seg.bytes >= s.segmentBytes {
		acts = s.sealWLocked(seg)
	}
	s.wmu.Unlock()
	s.do(acts)

	if durable {
		err := seg.dsync.Sync()
		if err != nil {
			s.mu.Lock()
			s.counts.Dropped.Disk++
			s.mu.Unlock()
		}
		s.unref(seg)
		if err != nil {
			// Stored, and sent in time, but a power loss may take it.
			return diskError("put", filepath.Join(s.mine, activeName(seg.key)), err)
		}
	}
	r.ID, r.Created = rec.ID, rec.Created
	if !claimed {
		s.notify()
	}
	return nil
}

// makeRoomLocked decides what goes so that size more bytes fit under the
// cap, and returns the deletions to carry out; it changes nothing when they
// cannot fit. The caller holds wmu and mu.
func (s *Spool) makeRoomLocked(size int64) ([]action, error) {
	over := s.diskBytes + s.quarantineBytes + size - s.cfg.maxBytes
	if over <= 0 {
		return nil, nil
	}
	var victims []*segment
	freed := int64(0)
	// A fully settled active segment holds nothing but delivered records.
	if a := s.active; a != nil && a.settled >= a.records && a.refs == 0 {
		victims = append(victims, a)
		freed += a.bytes + a.ackBytes
	}
	if s.cfg.policy == DropOldest {
		for _, seg := range s.segs {
			if freed >= over {
				break
			}
			if seg.active || seg.busy || seg.gone || seg.refs > 0 || seg.claimedN > 0 {
				continue
			}
			victims = append(victims, seg)
			freed += seg.bytes + seg.ackBytes
		}
	}
	if freed < over {
		return nil, fmt.Errorf("%w: %d bytes stored, cap %d", ErrFull, s.diskBytes+s.quarantineBytes, s.cfg.maxBytes)
	}
	acts := make([]action, 0, len(victims))
	for _, seg := range victims {
		if seg == s.active {
			s.active = nil
			seg.active = false
		}
		s.counts.Dropped.Evicted += uint64(seg.records - seg.settled)
		acts = append(acts, s.forgetLocked(seg))
	}
	return acts, nil
}

// sanitize returns a copy of r fit for disk: a new ID and creation time, no
// credentials in the URL, only allow-listed headers.
func (s *Spool) sanitize(r *Record) *Record {
	now := s.cfg.now()
	rec := &Record{
		ID:              ID{created: now.UnixNano(), uniq: s.instance | uint64(s.counter.Add(1))},
		URL:             s.stripCredentials(r.URL),
		ContentType:     r.ContentType,
		ContentEncoding: r.ContentEncoding,
		Signal:          r.Signal,
		Created:         time.Unix(0, now.UnixNano()),
		Body:            r.Body,
	}
	for k, vs := range r.Header {
		if s.cfg.allowHeaders[k] {
			if rec.Header == nil {
				rec.Header = map[string][]string{}
			}
			rec.Header[k] = append([]string(nil), vs...)
		}
	}
	return rec
}

// stripCredentials is the function below, remembering its last answer:
// nearly every record of a process goes to the same URL, so the URL is
// parsed once rather than at every put.
func (s *Spool) stripCredentials(raw string) string {
	if last := s.lastURL.Load(); last != nil && last.raw == raw {
		return last.stripped
	}
	stripped := stripCredentials(raw)
	s.lastURL.Store(&urlPair{raw: raw, stripped: stripped})
	return stripped
}

// stripCredentials drops user information and the query string, either of
// which may carry a secret. An unparsable URL is stored as nothing rather
// than risk storing a secret in it.
func stripCredentials(raw string) string {
	u, err := url.Parse(raw)
	// Anything but an absolute URL with a host is refused: in an opaque
	// one such as "collector:s3cret@host/v1/traces" the parser cannot tell
	// where a password is.
	if err != nil || u.Host == "" || u.Opaque != "" {
		return ""
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return u.String()
}

type urlPair struct{ raw, stripped string }

// activeWLocked returns the segment to append to, starting one named after key
// when there is none. The caller holds wmu.
func (s *Spool) activeWLocked(key ID) (*segment, error) {
	if s.active != nil {
		return s.active, nil
	}
	path := filepath.Join(s.mine, activeName(key))
	f, err := s.cfg.fs.Create(path, filePerm)
	if err != nil {
		return nil, err
	}
	if s.cfg.sync == SyncDurable {
		if err := s.mineSync.Sync(); err != nil {
			_ = f.Close()
			_ = s.cfg.fs.Remove(path)
			return nil, err
		}
	}
	seg := &segment{key: key, dir: s.mine, name: activeName(key), active: true, f: f, slots: []slot{}}
	seg.dsync = &groupSync{sync: f.Sync}
	s.mu.Lock()
	s.insertLocked(seg)
	s.active = seg
	s.mu.Unlock()
	return seg, nil
}

// appendWLocked writes one record at the end of seg and returns its offset. A
// failed write is cut off again, so that nothing follows a partial record;
// when even that fails the segment is sealed where its last good record
// ends. The caller holds wmu.
func (s *Spool) appendWLocked(seg *segment, head, body []byte, trailer [crcSize]byte) (int64, error) {
	off := seg.bytes // changes only under wmu
	var err error
	if len(body) <= smallRecord {
		// One write for small records: syscalls dominate their cost.
		bp := writeBufs.Get().(*[]byte)
		buf := append(append(append((*bp)[:0], head...), body...), trailer[:]...)
		_, err = seg.f.Write(buf)
		*bp = buf[:0]
		writeBufs.Put(bp)
	} else if _, err = seg.f.Write(head); err == nil {
		if _, err = seg.f.Write(body); err == nil {
			_, err = seg.f.Write(trailer[:])
		}
	}
	if err == nil {
		return off, nil
	}
	if terr := seg.f.Truncate(off); terr == nil {
		_, _ = seg.f.Seek(off, io.SeekStart)
	}
	// Sealed either way: if the cut failed, nothing may follow the partial
	// record; if it worked, the disk is likely full, and a sealed segment
	// is deleted as soon as its records are delivered, which frees space.
	s.do(s.sealWLocked(seg))
	return 0, err
}

// smallRecord is the largest body written together with its framing in one
// write, through a pooled buffer; larger ones take three writes rather than
// a copy.
const smallRecord = 128 << 10

var writeBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, smallRecord+headerSize+maxMetaSize+crcSize)
	return &b
}}

// sealWLocked ends appends to seg. A sealed segment nobody has started on is
// shared through pending/ unless it is next in line here; a fully settled
// one is deleted. The caller holds wmu.
func (s *Spool) sealWLocked(seg *segment) []action {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == seg {
		s.active = nil
	}
	seg.active = false
	return s.tidyLocked(seg, s.hasOlderWorkLocked(seg))
}

// hasOlderWorkLocked tells whether records older than seg's wait to be sent,
// in which case seg will not be needed soon.
func (s *Spool) hasOlderWorkLocked(seg *segment) bool {
	for _, o := range s.segs {
		if o == seg {
			return false
		}
		if !o.gone && o.records > o.settled {
			return true
		}
	}
	return false
}
