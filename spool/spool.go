package spool

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
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
// State is guarded by mutexes rather than owned by one goroutine, because
// durable puts must run their syncs concurrently for group commit to share
// them, and claims must read while puts append.
//
// Lock order. Four locks, always taken in this order and never the
// reverse; a path may skip any of them:
//
//		wmu → mu → seg.ackMu → groupSync.mu
//
//	  - wmu serialises puts: the cap check, the append and the choice of the
//	    active segment. It is held across the append, which is what orders a
//	    segment's bytes, and across the folder sync of a new segment.
//	  - mu guards the index: the fields below it and the segments' fields
//	    (see segment). It is never held across file I/O but one: closing a
//	    segment's files when it is shared (closeFiles takes ackMu).
//	  - seg.ackMu guards one segment's sidecar buffer and file; it is held
//	    across the sidecar's write, never while taking mu.
//	  - groupSync.mu guards one group commit's batch; it is taken with
//	    nothing else held but, for the owner folder's sync, wmu.
//
// Helpers that expect mu held end in Locked; those that expect wmu held
// end in WLocked. Besides the locks, a segment's refs, busy and gone flags
// (under mu) say who may do file work on it outside mu: a segment with refs
// is not moved or deleted; a busy one is left alone by everyone but the
// goroutine that set busy; a gone one is no longer in the index.
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

	wmu sync.Mutex // see the lock order above

	mu     sync.Mutex // guards all below, and the segments' fields (see segment)
	closed bool
	segs   []*segment // every segment known, oldest first
	byKey  map[ID]*segment
	// active is the segment puts append to; nil until the next put.
	// Written under wmu and mu, so either suffices to read it.
	active          *segment
	claimed         map[ID]slotRef
	diskBytes       int64 // bytes of the segments and sidecars known, as on disk
	quarantined     []quarantined
	quarantineBytes int64
	lastScan        time.Time
	logged          map[string]bool // warnings given once per segment
	keepMine        bool            // a segment this process could not hand back is in its folder
	writtenSlots    int             // slots kept in segments' written, at most maxWrittenSlots
	// dests interns the URLs of the records indexed, so that a slot names
	// its destination in four bytes: dests[slot.dest] is its URL. Entries
	// are never removed; a spool sees few distinct URLs.
	dests   []string
	destIdx map[string]uint32
	counts  Stats // counters only; the rest is computed by Stats
}

// Open opens the spool in dir, creating it (0700) if needed, and takes in
// every record that earlier processes left there. A spool folder open to
// group or others is tightened to 0700, with a warning naming it; one
// owned by another user is refused with an *Error matching ErrNotOwner,
// before anything is changed.
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
		destIdx:    map[string]uint32{},
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
	_ = s.cfg.fs.Remove(s.mine + noteExt)
	_ = s.cfg.fs.Remove(s.mine + lockExt)
	if s.unlock != nil {
		_ = s.unlock()
	}
}

func (s *Spool) warnOnceLocked(key, msg string, args ...any) {
	if s.logged[key] {
		return
	}
	s.logged[key] = true
	s.cfg.logger.Warn(msg, args...)
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

// internLocked returns the index of url in dests, adding it if new.
func (s *Spool) internLocked(url string) uint32 {
	if d, ok := s.destIdx[url]; ok {
		return d
	}
	d := uint32(len(s.dests))
	s.dests = append(s.dests, url)
	s.destIdx[url] = d
	return d
}

// String names the spool in logs.
func (s *Spool) String() string { return fmt.Sprintf("spool %s (owner %s)", s.dir, s.owner) }
