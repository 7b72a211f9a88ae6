package spool

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Folder layout:
//
//	pending/            records waiting to be sent, shared by all processes
//	owners/<o>.lock     held (flock) by the live process o for its lifetime
//	owners/<o>/tmp/     o's records being written
//	owners/<o>/claimed/ o's records being sent
//	quarantine/         records refused by the server or unreadable, each
//	                    with a .why file saying why
//
// Claiming moves a record from pending/ into the claimant's own folder by
// rename, which succeeds for exactly one process; so no record is handed to
// two senders at once. A process that finds an owner's lock free knows the
// owner is gone and moves its claimed records back to pending/.
const (
	pendingDir    = "pending"
	ownersDir     = "owners"
	quarantineDir = "quarantine"
	claimedSub    = "claimed"
	tmpSub        = "tmp"
	lockExt       = ".lock"
	whyExt        = ".why"
	dirPerm       = 0o700
	filePerm      = 0o600
)

// staleLockAge protects a process that has just created its lock file and
// not yet locked it from being taken for dead.
const staleLockAge = time.Minute

// Spool is a folder of export records waiting to be delivered. It is safe
// for concurrent use by many goroutines, and several processes may open the
// same folder.
//
// State is guarded by one mutex rather than owned by one goroutine, as the
// house style prefers, because puts must run their file I/O concurrently
// for group commit to share syncs; the lock is never held across I/O.
type Spool struct {
	cfg                            config
	dir, pending, quarantine, mine string
	owner                          string
	unlock                         func() error
	instance                       uint64 // high half of every ID this process makes
	counter                        atomic.Uint32
	pendingSync, claimedSync       *groupSync
	ready                          chan struct{}

	ops sync.WaitGroup // operations under way, waited for by Close

	mu              sync.Mutex // guards all below
	closed          bool
	queue           queue
	claimed         map[ID]entry
	settling        map[ID]bool // claimed records being acked, released or quarantined
	writing         map[ID]bool // puts between reservation and queueing
	bytes           int64       // waiting, claimed and being written
	quarantined     []quarantined
	quarantineBytes int64
	lastScan        time.Time
	counts          Stats // counters only; the rest is computed by Stats
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
		claimed:    map[ID]entry{},
		settling:   map[ID]bool{},
		writing:    map[ID]bool{},
		ready:      make(chan struct{}, 1),
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:]) // never fails (crypto/rand since Go 1.24)
	s.instance = uint64(binary.LittleEndian.Uint32(rnd[:4])) << 32
	s.owner = fmt.Sprintf("%d-%08x", os.Getpid(), binary.LittleEndian.Uint32(rnd[4:]))
	s.mine = filepath.Join(dir, ownersDir, s.owner)
	s.pendingSync = &groupSync{sync: func() error { return cfg.fs.SyncDir(s.pending) }}
	s.claimedSync = &groupSync{sync: func() error { return cfg.fs.SyncDir(filepath.Join(s.mine, claimedSub)) }}

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
	for _, d := range []string{filepath.Join(s.mine, claimedSub), filepath.Join(s.mine, tmpSub)} {
		if err := s.cfg.fs.MkdirAll(d, dirPerm); err != nil {
			s.releaseOwnership()
			return diskError("open", d, err)
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
	if size > s.cfg.maxBytes || len(rec.Body) > MaxBodySize ||
		metaSize(rec) > maxMetaSize || headerCount(rec.Header) > maxHeaders {
		s.mu.Lock()
		s.counts.Dropped.TooLarge++
		s.mu.Unlock()
		return fmt.Errorf("%w: %d bytes, cap %d", ErrTooLarge, size, s.cfg.maxBytes)
	}
	e := entry{id: rec.ID, size: size}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	var victims []entry
	for s.bytes+s.quarantineBytes+size > s.cfg.maxBytes {
		if s.cfg.policy != DropOldest || s.queue.Len() == 0 {
			s.counts.Dropped.Full++
			// Give back what was evicted: the new record is not going in.
			for _, v := range victims {
				s.queue.push(v)
				s.bytes += v.size
				s.counts.Dropped.Evicted--
			}
			s.mu.Unlock()
			return fmt.Errorf("%w: %d bytes stored, cap %d", ErrFull, s.bytes+s.quarantineBytes, s.cfg.maxBytes)
		}
		v := s.queue.pop()
		s.bytes -= v.size
		s.counts.Dropped.Evicted++
		victims = append(victims, v)
	}
	s.bytes += size
	s.writing[e.id] = true
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()

	for _, v := range victims {
		// ENOENT: another process has claimed or dropped it; it is gone
		// from here either way.
		_ = s.cfg.fs.Remove(filepath.Join(s.pending, v.name()))
	}
	if err := s.write(rec, e, claimed); err != nil {
		s.mu.Lock()
		delete(s.writing, e.id)
		s.bytes -= size
		s.counts.PutErrors++
		s.mu.Unlock()
		return diskError("put", s.dir, err)
	}
	r.ID, r.Created = rec.ID, rec.Created

	s.mu.Lock()
	delete(s.writing, e.id)
	s.counts.Stored++
	if claimed {
		s.claimed[e.id] = e
		s.mu.Unlock()
		return nil
	}
	s.queue.push(e)
	s.mu.Unlock()
	s.notify()
	return nil
}

// sanitize returns a copy of r fit for disk: a new ID and creation time, no
// credentials in the URL, only allow-listed headers.
func (s *Spool) sanitize(r *Record) *Record {
	now := s.cfg.now()
	rec := &Record{
		ID:              ID{created: now.UnixNano(), uniq: s.instance | uint64(s.counter.Add(1))},
		URL:             stripCredentials(r.URL),
		ContentType:     r.ContentType,
		ContentEncoding: r.ContentEncoding,
		Signal:          r.Signal,
		Created:         now,
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

// write puts the record under its final name in pending/ so that it is
// either whole or absent, whenever the process dies.
func (s *Spool) write(rec *Record, e entry, claimed bool) (err error) {
	fsys := s.cfg.fs
	head, trailer, err := encodeHead(rec)
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.mine, tmpSub, e.name())
	f, err := fsys.Create(tmp, filePerm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = fsys.Remove(tmp)
		}
	}()
	if len(rec.Body) <= 32<<10 {
		// One write for small records: syscalls dominate their cost.
		buf := make([]byte, 0, len(head)+len(rec.Body)+crcSize)
		buf = append(append(append(buf, head...), rec.Body...), trailer[:]...)
		_, err = f.Write(buf)
	} else if _, err = f.Write(head); err == nil {
		if _, err = f.Write(rec.Body); err == nil {
			_, err = f.Write(trailer[:])
		}
	}
	if err == nil && s.cfg.sync == SyncDurable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	dir, dirSync := s.pending, s.pendingSync
	if claimed {
		dir, dirSync = filepath.Join(s.mine, claimedSub), s.claimedSync
	}
	if err := fsys.Rename(tmp, filepath.Join(dir, e.name())); err != nil {
		return err
	}
	if s.cfg.sync == SyncDurable {
		// The record is in place now; if this sync fails, a power loss
		// may still lose it, but the process will find and send it.
		return dirSync.Sync()
	}
	return nil
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
	if s.queue.Len() == 0 && s.cfg.rescanInterval >= 0 && s.cfg.now().Sub(s.lastScan) >= s.cfg.rescanInterval {
		s.mu.Unlock()
		if err := s.scan(); err != nil {
			s.cfg.logger.Warn("spool: rescan failed", "dir", s.dir, "err", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
	}
	s.mu.Unlock()

	var out []*Record
	var firstErr error
	// Records that turn out expired, gone or corrupt are not handed out,
	// so pick again until max are or none is left: an empty result must
	// mean that nothing is waiting.
	for len(out) < max && firstErr == nil {
		var picked []entry
		s.mu.Lock()
		for len(out)+len(picked) < max && s.queue.Len() > 0 {
			e := s.queue.pop()
			s.claimed[e.id] = e
			picked = append(picked, e)
		}
		s.mu.Unlock()
		if len(picked) == 0 {
			break
		}
		for _, e := range picked {
			rec, err := s.claimOne(e)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if rec != nil {
				out = append(out, rec)
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, firstErr
}

// claimOne moves e into this process's claimed folder and reads it. It
// returns nil and no error when the record is gone or was set aside.
func (s *Spool) claimOne(e entry) (*Record, error) {
	fsys := s.cfg.fs
	src := filepath.Join(s.pending, e.name())
	if s.cfg.maxAge > 0 && s.cfg.now().Sub(e.id.Created()) > s.cfg.maxAge {
		err := fsys.Remove(src)
		s.forget(e, func(c *Stats) {
			if err == nil {
				c.Dropped.Expired++
			}
		})
		return nil, nil
	}
	dst := filepath.Join(s.mine, claimedSub, e.name())
	if err := fsys.Rename(src, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Another process claimed or dropped it first.
			s.forget(e, nil)
			return nil, nil
		}
		s.mu.Lock()
		delete(s.claimed, e.id)
		s.queue.push(e)
		s.mu.Unlock()
		return nil, diskError("claim", src, err)
	}
	data, err := fsys.ReadFile(dst)
	if err == nil && int64(len(data)) != e.size {
		err = corruptf("file is %d bytes, its name says %d", len(data), e.size)
	}
	var rec *Record
	if err == nil {
		rec, err = decodeRecord(data)
	}
	if err != nil {
		s.setAside(dst, e.name(), &CorruptionError{Path: src, Err: err})
		s.forget(e, func(c *Stats) { c.Dropped.Corrupt++ })
		return nil, nil
	}
	rec.ID, rec.Attempts = e.id, int(e.attempts)
	return rec, nil
}

// forget removes a claimed entry that is gone from disk.
func (s *Spool) forget(e entry, count func(*Stats)) {
	s.mu.Lock()
	delete(s.claimed, e.id)
	delete(s.settling, e.id)
	s.bytes -= e.size
	if count != nil {
		count(&s.counts)
	}
	s.mu.Unlock()
}

// Ack deletes a claimed record: it has been delivered.
func (s *Spool) Ack(id ID) error {
	e, err := s.settle(id)
	if err != nil {
		return err
	}
	defer s.ops.Done()
	path := filepath.Join(s.mine, claimedSub, e.name())
	if err := s.cfg.fs.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.unsettle(id)
		return diskError("ack", path, err)
	}
	s.forget(e, func(c *Stats) { c.Acked++ })
	return nil
}

// Release puts a claimed record back in line, its attempt count one higher.
func (s *Spool) Release(id ID) error {
	e, err := s.settle(id)
	if err != nil {
		return err
	}
	defer s.ops.Done()
	src := filepath.Join(s.mine, claimedSub, e.name())
	next := e
	next.attempts++
	if err := s.cfg.fs.Rename(src, filepath.Join(s.pending, next.name())); err != nil {
		s.unsettle(id)
		return diskError("release", src, err)
	}
	s.mu.Lock()
	delete(s.claimed, id)
	delete(s.settling, id)
	s.queue.push(next)
	s.counts.Released++
	s.mu.Unlock()
	s.notify()
	return nil
}

// Quarantine moves a claimed record to the dead-letter folder with the
// reason beside it, for a person to inspect; it is never sent again.
func (s *Spool) Quarantine(id ID, reason string) error {
	e, err := s.settle(id)
	if err != nil {
		return err
	}
	defer s.ops.Done()
	src := filepath.Join(s.mine, claimedSub, e.name())
	err = s.setAside(src, e.name(), errors.New(reason))
	// Kept or, when it cannot be, deleted: either way it is not ours to
	// send or to hand back any more.
	s.forget(e, nil)
	return err
}

// settle reserves a claimed record for one Ack, Release or Quarantine,
// which must call s.ops.Done when finished (Close waits for it) and
// unsettle if the record stays claimed.
func (s *Spool) settle(id ID) (entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return entry{}, ErrClosed
	}
	e, ok := s.claimed[id]
	if !ok || s.settling[id] {
		return entry{}, fmt.Errorf("%w: %s", ErrUnknownRecord, id)
	}
	s.settling[id] = true
	s.ops.Add(1)
	return e, nil
}

func (s *Spool) unsettle(id ID) {
	s.mu.Lock()
	delete(s.settling, id)
	s.mu.Unlock()
}

// setAside moves path into the quarantine under a name that sorts by the
// time it arrived there, writes why beside it, and trims the quarantine to
// its cap, oldest first.
func (s *Spool) setAside(path, name string, why error) error {
	fsys := s.cfg.fs
	qname := fmt.Sprintf("%016x-%s", uint64(s.cfg.now().UnixNano()), name)
	dst := filepath.Join(s.quarantine, qname)
	size := int64(0)
	if fi, err := fsys.Stat(path); err == nil {
		size = fi.Size()
	}
	if err := fsys.Rename(path, dst); err != nil {
		// It cannot be kept: better gone than delivered or re-read forever.
		_ = fsys.Remove(path)
		s.cfg.logger.Error("spool: cannot quarantine a record, deleted it", "path", path, "reason", why, "err", err)
		return diskError("quarantine", path, err)
	}
	reason := []byte(why.Error() + "\n")
	if err := writeSmallFile(fsys, dst+whyExt, reason); err == nil {
		size += int64(len(reason))
	}
	s.cfg.logger.Warn("spool: record quarantined", "path", dst, "reason", why)

	s.mu.Lock()
	s.quarantined = append(s.quarantined, quarantined{name: qname, size: size})
	s.quarantineBytes += size
	var evict []quarantined
	for s.quarantineBytes > s.cfg.quarantineBytes && len(s.quarantined) > 0 {
		evict = append(evict, s.quarantined[0])
		s.quarantineBytes -= s.quarantined[0].size
		s.quarantined = s.quarantined[1:]
		s.counts.Dropped.QuarantineOverflow++
	}
	s.mu.Unlock()
	for _, q := range evict {
		_ = fsys.Remove(filepath.Join(s.quarantine, q.name))
		_ = fsys.Remove(filepath.Join(s.quarantine, q.name+whyExt))
	}
	return nil
}

func writeSmallFile(fsys FS, path string, data []byte) error {
	f, err := fsys.Create(path, filePerm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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

	s.mu.Lock()
	claimed := make([]entry, 0, len(s.claimed))
	for _, e := range s.claimed {
		claimed = append(claimed, e)
	}
	s.mu.Unlock()
	var firstErr error
	for _, e := range claimed {
		src := filepath.Join(s.mine, claimedSub, e.name())
		if err := s.cfg.fs.Rename(src, filepath.Join(s.pending, e.name())); err != nil && firstErr == nil {
			// Left where it is, the next process adopts it.
			firstErr = diskError("close", src, err)
		}
	}
	if firstErr != nil {
		// Keep the owner folder: it still holds records.
		_ = s.unlock()
		return firstErr
	}
	s.releaseOwnership()
	return nil
}
