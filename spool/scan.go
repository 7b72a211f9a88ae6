package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
)

// scan brings the index in line with the folder: it adopts what dead
// processes left, then takes in every waiting record not yet known. The
// first scan also reads the quarantine. Nothing read here is trusted beyond
// its name; contents are checked when claimed.
func (s *Spool) scan() error {
	s.adoptOrphans()

	var chunks entryChunks
	var bad []string
	err := eachDirName(s.cfg.fs, s.pending, func(name string) {
		if e, ok := parseName(name); ok {
			chunks.add(e)
		} else {
			bad = append(bad, name)
		}
	})
	if err != nil {
		return diskError("open", s.pending, err)
	}
	found := chunks.slice()
	chunks = entryChunks{}
	for _, name := range bad {
		s.setAside(filepath.Join(s.pending, name), name, errors.New("not a record file name"))
		s.mu.Lock()
		s.counts.Dropped.Corrupt++
		s.mu.Unlock()
	}

	s.mu.Lock()
	first := s.lastScan.IsZero()
	s.lastScan = s.cfg.now()
	known := func(id ID) bool {
		_, claimed := s.claimed[id]
		return claimed || s.writing[id]
	}
	if first {
		s.queue = found
		s.queue = slices.DeleteFunc(s.queue, func(e entry) bool { return known(e.id) })
		for _, e := range s.queue {
			s.bytes += e.size
		}
		heapify(&s.queue)
	} else if s.queue.Len() == 0 {
		// Rescans run only when the line is empty, so what is found is new
		// unless it is being claimed or written right now.
		for _, e := range found {
			if !known(e.id) {
				s.queue.push(e)
				s.bytes += e.size
			}
		}
	}
	s.mu.Unlock()
	return nil
}

// entryChunks gathers entries, however many, in chunks of a fixed size, to
// be copied once into a slice of the exact size. Appending to one slice
// instead would leave garbage of several times its final size behind (it
// grows in 1.25x steps), resident until the GC returns it: tens of
// megabytes for a spool of half a million records.
type entryChunks struct {
	chunks [][]entry
	n      int
}

const entryChunkLen = 4096

func (c *entryChunks) add(e entry) {
	if len(c.chunks) == 0 || len(c.chunks[len(c.chunks)-1]) == entryChunkLen {
		c.chunks = append(c.chunks, make([]entry, 0, entryChunkLen))
	}
	last := &c.chunks[len(c.chunks)-1]
	*last = append(*last, e)
	c.n++
}

func (c *entryChunks) slice() []entry {
	out := make([]entry, 0, c.n)
	for _, ch := range c.chunks {
		out = append(out, ch...)
	}
	return out
}

// adoptOrphans moves the claimed records of every dead owner back to
// pending/ and removes what it was writing. An owner is dead when its lock
// can be taken.
func (s *Spool) adoptOrphans() {
	fsys := s.cfg.fs
	owners := filepath.Join(s.dir, ownersDir)
	names, err := fsys.ReadDirNames(owners)
	if err != nil {
		s.cfg.logger.Warn("spool: cannot list owners", "dir", owners, "err", err)
		return
	}
	seen := map[string]bool{}
	for _, name := range names {
		owner := strings.TrimSuffix(name, lockExt)
		if owner == s.owner || seen[owner] || strings.HasPrefix(owner, ".") {
			continue
		}
		seen[owner] = true
		s.adoptOwner(owner)
	}
}

func (s *Spool) adoptOwner(owner string) {
	fsys := s.cfg.fs
	dir := filepath.Join(s.dir, ownersDir, owner)
	lock := dir + lockExt
	unlock, err := tryLock(lock, false)
	switch {
	case errors.Is(err, errLocked):
		return // alive
	case errors.Is(err, fs.ErrNotExist):
		// No lock: the owner finished its Close, or died between creating
		// its lock and its folder; both leave nothing claimed to race for.
	case err != nil:
		s.cfg.logger.Warn("spool: cannot check owner", "lock", lock, "err", err)
		return
	}
	if unlock != nil {
		defer unlock()
	}
	if _, err := fsys.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		// A lock with no folder: stale, unless it is brand new and its
		// owner is about to lock it.
		if fi, err := fsys.Stat(lock); err == nil && s.cfg.now().Sub(fi.ModTime()) > staleLockAge {
			_ = fsys.Remove(lock)
		}
		return
	}
	claimed := filepath.Join(dir, claimedSub)
	names, _ := fsys.ReadDirNames(claimed)
	moved := 0
	for _, name := range names {
		if err := fsys.Rename(filepath.Join(claimed, name), filepath.Join(s.pending, name)); err == nil {
			moved++
		}
	}
	left, _ := fsys.ReadDirNames(claimed)
	if len(left) > 0 {
		s.cfg.logger.Warn("spool: cannot adopt every record of a dead process", "dir", claimed, "left", len(left))
		return
	}
	tmp, _ := fsys.ReadDirNames(filepath.Join(dir, tmpSub))
	if err := fsys.RemoveAll(dir); err != nil {
		s.cfg.logger.Warn("spool: cannot remove a dead process's folder", "dir", dir, "err", err)
		return
	}
	_ = fsys.Remove(lock)
	if moved > 0 || len(tmp) > 0 {
		s.cfg.logger.Info("spool: adopted the records of a process that is gone",
			"owner", owner, "records", moved, "partial_writes_removed", len(tmp))
	}
}

func (s *Spool) loadQuarantine() error {
	fsys := s.cfg.fs
	names, err := fsys.ReadDirNames(s.quarantine)
	if err != nil {
		return diskError("open", s.quarantine, err)
	}
	slices.Sort(names)
	sizes := map[string]int64{}
	for _, name := range names {
		fi, err := fsys.Stat(filepath.Join(s.quarantine, name))
		if err == nil && fi.Mode().IsRegular() {
			sizes[name] = fi.Size()
		}
	}
	var q []quarantined
	var total int64
	for _, name := range names {
		size, ok := sizes[name]
		if !ok {
			continue
		}
		total += size
		if strings.HasSuffix(name, whyExt) {
			// Counted with its record, which takes it along when evicted;
			// a lone one is left for the operator.
			continue
		}
		why := sizes[name+whyExt]
		q = append(q, quarantined{name: name, size: size + why})
	}
	s.mu.Lock()
	s.quarantined = append(q, s.quarantined...)
	s.quarantineBytes += total
	s.mu.Unlock()
	return nil
}

// String names the spool in logs.
func (s *Spool) String() string { return fmt.Sprintf("spool %s (owner %s)", s.dir, s.owner) }
