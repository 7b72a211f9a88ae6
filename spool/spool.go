package spool

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Folder layout:
//
//	pending/          sealed segments waiting, shared by all processes, with
//	                  their sidecars (see segment.go)
//	owners/<o>.lock   held (flock) by the live process o for its lifetime
//	owners/<o>/       o's segments: the one it appends to and the ones it is
//	                  sending from, with their sidecars
//	quarantine/       records refused by the server or unreadable, one file
//	                  each, with a .why file saying why
//
// Claiming a segment moves it from pending/ into the claimant's own folder
// by rename, which succeeds for exactly one process; so no record is handed
// to two senders at once. A process that finds an owner's lock free knows
// the owner is gone and moves its segments back to pending/.
const (
	pendingDir    = "pending"
	ownersDir     = "owners"
	quarantineDir = "quarantine"
	lockExt       = ".lock"
	whyExt        = ".why"
	dirPerm       = 0o700
	filePerm      = 0o600
)

// staleLockAge protects a process that has just created its lock file and
// not yet locked it from being taken for dead; and a sidecar on its way
// into pending/ just ahead of its segment from being taken for an orphan.
const staleLockAge = time.Minute

// DefaultSegmentBytes is the size at which a segment is sealed and a new one
// started; smaller when the cap is small (a sixteenth of it), so that
// dropping the oldest segment at the cap never drops much.
const DefaultSegmentBytes = 8 << 20

// Spool is a folder of export records waiting to be delivered. It is safe
// for concurrent use by many goroutines, and several processes may open the
// same folder.
//
// State is guarded by mutexes rather than owned by one goroutine, as the
// house style prefers, because durable puts must run their syncs
// concurrently for group commit to share them, and claims must read while
// puts append. mu is never held across I/O; wmu is held across the append
// of a record, which is what orders the segment's bytes.
type Spool struct {
	cfg                            config
	dir, pending, quarantine, mine string
	owner                          string
	unlock                         func() error
	instance                       uint64 // high half of every ID this process makes
	counter                        atomic.Uint32
	lastURL                        atomic.Pointer[urlPair]
	segmentBytes                   int64
	mineSync                       *groupSync
	ready                          chan struct{}

	ops      sync.WaitGroup // operations under way, waited for by Close
	deleting sync.WaitGroup // segment deletions under way, waited for by Flush

	// wmu serialises puts: the cap check, the append and the choice of the
	// active segment. Taken before mu, never after.
	wmu sync.Mutex

	mu              sync.Mutex // guards all below, and the segments' fields but f's offset and ack
	closed          bool
	segs            []*segment // every segment known, oldest first
	byKey           map[ID]*segment
	active          *segment // the segment puts append to; nil until the next put
	claimed         map[ID]slotRef
	diskBytes       int64 // bytes of the segments and sidecars known, as on disk
	quarantined     []quarantined
	quarantineBytes int64
	lastScan        time.Time
	logged          map[string]bool // warnings given once per segment
	keepMine        bool            // a segment this process could not hand back is in its folder
	writtenSlots    int             // slots kept in segments' written, at most maxWrittenSlots
	counts          Stats           // counters only; the rest is computed by Stats
}

// segment is the index of one segment file.
type segment struct {
	key  ID
	dir  string // folder holding its files now
	name string // the segment file's name now

	records  int   // records and corrupt regions it holds
	bytes    int64 // its valid length
	settled  int   // records settled: delivered, quarantined, dropped
	live     int64 // bytes of the records not settled (estimated until loaded)
	oldest   ID    // of its records not settled, when known before loading
	ackBytes int64 // sidecar size
	active   bool  // this process appends to it
	busy     bool  // being loaded, moved or deleted: left alone meanwhile
	gone     bool  // deleted, or taken by another process

	// A loaded segment is this process's, in its folder: its slots are
	// known and f is open. Unloaded ones wait in pending/.
	f         File
	slots     []slot
	written   []slot // while in pending/: the slots as this process wrote them
	next      int    // no slot below next is waiting
	firstLive int    // no slot below firstLive is unsettled
	claimedN  int    // slots claimed or settling now
	refs      int    // I/O on f or the sidecar under way outside mu
	dsync     *groupSync

	ackMu      sync.Mutex // guards the five below
	ack        File       // the sidecar, opened on first write
	ackSize    int64      // its length
	ackBroken  bool       // a failed write could not be undone: write no more
	ackPending []byte     // entries not written yet
	ackTimer   *time.Timer
}

type slotState uint8

const (
	slotWaiting slotState = iota
	slotClaimed
	slotSettling // claimed, and being acked, released or quarantined
	slotSettled
)

// slot is one record (or corrupt region) of a loaded segment: small and
// pointer-free, as a segment of small records holds tens of thousands.
type slot struct {
	id       ID
	off      uint32
	size     uint32
	attempts int32
	state    slotState
}

type slotRef struct {
	seg *segment
	i   int
}

type quarantined struct {
	name string
	size int64
}

// Open opens the spool in dir, creating it (0700) if needed, and takes in
// every record that earlier processes left there.
func Open(dir string, opts ...Option) (*Spool, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		cfg:        cfg,
		dir:        dir,
		pending:    filepath.Join(dir, pendingDir),
		quarantine: filepath.Join(dir, quarantineDir),
		byKey:      map[ID]*segment{},
		claimed:    map[ID]slotRef{},
		logged:     map[string]bool{},
		ready:      make(chan struct{}, 1),
	}
	s.segmentBytes = cfg.segmentBytes
	if s.segmentBytes <= 0 {
		s.segmentBytes = max(1, min(DefaultSegmentBytes, cfg.maxBytes/16))
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:]) // never fails (crypto/rand since Go 1.24)
	s.instance = uint64(binary.LittleEndian.Uint32(rnd[:4])) << 32
	s.owner = fmt.Sprintf("%d-%08x", os.Getpid(), binary.LittleEndian.Uint32(rnd[4:]))
	s.mine = filepath.Join(dir, ownersDir, s.owner)
	s.mineSync = &groupSync{sync: func() error { return cfg.fs.SyncDir(s.mine) }}

	if err := s.makeFolders(); err != nil {
		return nil, err
	}
	if err := s.takeOwnership(); err != nil {
		return nil, err
	}
	if err := s.loadQuarantine(); err != nil {
		s.releaseOwnership()
		return nil, err
	}
	if err := s.scan(); err != nil {
		s.releaseOwnership()
		return nil, err
	}
	return s, nil
}

func (s *Spool) makeFolders() error {
	fsys := s.cfg.fs
	if fi, err := fsys.Stat(s.dir); err == nil && !fi.IsDir() {
		return &Error{Op: "open", Path: s.dir, Kind: ErrNotDirectory, Err: fmt.Errorf("%s is a %s", s.dir, fi.Mode().Type())}
	}
	for _, d := range []string{s.pending, s.quarantine, filepath.Join(s.dir, ownersDir)} {
		if err := fsys.MkdirAll(d, dirPerm); err != nil {
			return diskError("open", d, err)
		}
	}
	if s.cfg.sync == SyncDurable {
		for _, d := range []string{filepath.Dir(s.dir), s.dir, filepath.Join(s.dir, ownersDir)} {
			if err := fsys.SyncDir(d); err != nil {
				return diskError("open", d, err)
			}
		}
	}
	return nil
}

// takeOwnership locks this process's owner file before creating its folder,
// so that no one ever sees the folder of a live owner without its lock.
func (s *Spool) takeOwnership() error {
	lock := s.mine + lockExt
	unlock, err := tryLock(lock, true)
	if err != nil {
		return diskError("open", lock, err)
	}
	s.unlock = unlock
	if err := s.cfg.fs.MkdirAll(s.mine, dirPerm); err != nil {
		s.releaseOwnership()
		return diskError("open", s.mine, err)
	}
	if s.cfg.sync == SyncDurable {
		if err := s.cfg.fs.SyncDir(filepath.Join(s.dir, ownersDir)); err != nil {
			s.releaseOwnership()
			return diskError("open", s.mine, err)
		}
	}
	return nil
}

func (s *Spool) releaseOwnership() {
	_ = s.cfg.fs.RemoveAll(s.mine)
	_ = s.cfg.fs.Remove(s.mine + lockExt)
	if s.unlock != nil {
		_ = s.unlock()
	}
}

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

	seg, err := s.activeW(rec.ID)
	var off int64
	if err == nil {
		off, err = s.appendW(seg, head, rec.Body, trailer)
	}
	if err != nil && isNoSpace(err) {
		// Delivered segments being deleted in the background may be about
		// to give the space back: try once more when they are gone.
		s.deleting.Wait()
		if seg, err = s.activeW(rec.ID); err == nil {
			off, err = s.appendW(seg, head, rec.Body, trailer)
		}
	}
	if err != nil {
		s.wmu.Unlock()
		s.mu.Lock()
		s.diskBytes -= size
		s.counts.PutErrors++
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
	seg.slots = append(seg.slots, slot{id: rec.ID, off: uint32(off), size: uint32(size), state: st})
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
		acts = s.sealW(seg)
	}
	s.wmu.Unlock()
	s.do(acts)

	if durable {
		err := seg.dsync.Sync()
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
// nearly every record of a process goes to the same URL, and parsing it
// each time was a tenth of the cost of storing a small record.
func (s *Spool) stripCredentials(raw string) string {
	if last := s.lastURL.Load(); last != nil && last.raw == raw {
		return last.stripped
	}
	stripped := stripCredentials(raw)
	s.lastURL.Store(&urlPair{raw: raw, stripped: stripped})
	return stripped
}

type urlPair struct{ raw, stripped string }

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

// activeW returns the segment to append to, starting one named after key
// when there is none. The caller holds wmu.
func (s *Spool) activeW(key ID) (*segment, error) {
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

// appendW writes one record at the end of seg and returns its offset. A
// failed write is cut off again, so that nothing follows a partial record;
// when even that fails the segment is sealed where its last good record
// ends. The caller holds wmu.
func (s *Spool) appendW(seg *segment, head, body []byte, trailer [crcSize]byte) (int64, error) {
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
	s.do(s.sealW(seg))
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

// sealW ends appends to seg. A sealed segment nobody has started on is
// shared through pending/ unless it is next in line here; a fully settled
// one is deleted. The caller holds wmu.
func (s *Spool) sealW(seg *segment) []action {
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

func (seg *segment) closeFiles() {
	if seg.f != nil {
		_ = seg.f.Close()
		seg.f = nil
	}
	seg.ackMu.Lock()
	if seg.ack != nil {
		_ = seg.ack.Close()
		seg.ack = nil
	}
	// Whatever was not written yet is moot: the segment is deleted, or
	// moveToPending wrote it first.
	seg.ackPending = nil
	if seg.ackTimer != nil {
		seg.ackTimer.Stop()
		seg.ackTimer = nil
	}
	seg.ackMu.Unlock()
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
	seg.slots, seg.dir, seg.name, seg.next, seg.firstLive = nil, s.pending, name, 0, 0
}

// maxWrittenSlots bounds the slots kept for segments this process wrote
// and shared untouched (32 bytes each: 1 MiB), so that loading one of them
// again, which is what a process does with the backlog of its own outage,
// reads no more than its sidecar: scanning the segment to find its records
// read every byte of it a second time, a twentieth of a drain's CPU.
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
			&CorruptionError{Path: fmt.Sprintf("%s@%d", path, sl.off), Err: err})
		s.settleSlot(p, func(c *Stats) { c.Dropped.Corrupt++ })
		putReadBuf(bp)
		return nil
	}
	rec.Attempts = int(sl.attempts)
	rec.buf = bp
	return rec
}

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

func (s *Spool) warnOnceLocked(key, msg string, args ...any) {
	if s.logged[key] {
		return
	}
	s.logged[key] = true
	s.cfg.logger.Warn(msg, args...)
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

// Ready receives a value after records are stored or released, so that a
// sender can sleep until there is work. It is never closed.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

func (s *Spool) notify() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Dir is the spool's folder.
func (s *Spool) Dir() string { return s.dir }

// Close returns claimed records to the waiting line, for this or another
// process to send, and releases the folder. Records stay on disk. Close is
// safe to call more than once.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.ops.Wait()

	s.wmu.Lock()
	s.mu.Lock()
	if s.active != nil {
		s.active.active = false
		s.active = nil
	}
	var mine []*segment
	for _, seg := range s.segs {
		if seg.slots != nil && !seg.gone {
			mine = append(mine, seg)
		}
	}
	s.mu.Unlock()
	s.wmu.Unlock()

	var firstErr error
	for _, seg := range mine {
		if seg.settled >= seg.records {
			s.deleteFiles(seg)
			continue
		}
		// Claimed records have no note in the sidecar: they wait again.
		_, err := s.moveToPending(seg)
		seg.closeFiles()
		if err != nil && firstErr == nil {
			// Left where it is, the next process adopts it.
			firstErr = diskError("close", filepath.Join(seg.dir, seg.name), err)
		}
	}
	s.mu.Lock()
	keep := s.keepMine
	s.mu.Unlock()
	if firstErr != nil || keep {
		// Keep the owner folder: it still holds records, which the next
		// process to open the spool adopts.
		_ = s.unlock()
		return firstErr
	}
	s.releaseOwnership()
	return nil
}
