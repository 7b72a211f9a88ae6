package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// adoptOrphans moves the segments of every dead owner to pending/. An owner
// is dead when its lock can be taken.
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
		owner := strings.TrimSuffix(strings.TrimSuffix(name, lockExt), noteExt)
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
			_ = fsys.Remove(dir + noteExt)
			_ = fsys.Remove(lock)
		}
		return
	}
	names, _ := fsys.ReadDirNames(dir)
	segs := map[ID]segName{}
	for _, name := range names {
		if n, ok := parseSegName(name); ok && !n.sidecar {
			segs[n.key] = n
		}
	}
	// Sidecars first, so that no segment waits in pending/ without its own.
	for _, name := range names {
		n, ok := parseSegName(name)
		if !ok || !n.sidecar {
			continue
		}
		path := filepath.Join(dir, name)
		if _, has := segs[n.key]; !has {
			_ = fsys.Remove(path) // its segment was delivered and deleted
			continue
		}
		if err := fsys.Rename(path, filepath.Join(s.pending, name)); err != nil {
			s.cfg.logger.Warn("spool: cannot adopt a sidecar", "path", path, "err", err)
		}
	}
	moved, torn, left := 0, 0, 0
	for key, n := range segs {
		name := activeName(key)
		if n.sealed {
			name = segmentName(key, n.records, n.size)
		}
		records, cut, err := s.adoptSegment(filepath.Join(dir, name), n)
		switch {
		case err != nil:
			left++
			s.cfg.logger.Warn("spool: cannot adopt a segment of a dead process", "path", filepath.Join(dir, name), "err", err)
		default:
			moved += records
			if cut {
				torn++
			}
		}
	}
	if left > 0 {
		return
	}
	if err := fsys.RemoveAll(dir); err != nil {
		s.cfg.logger.Warn("spool: cannot remove a dead process's folder", "dir", dir, "err", err)
		return
	}
	_ = fsys.Remove(dir + noteExt)
	_ = fsys.Remove(lock)
	if moved > 0 || torn > 0 {
		s.cfg.logger.Info("spool: adopted the records of a process that is gone",
			"owner", owner, "records", moved, "partial_writes_removed", torn)
	}
}

// adoptSegment finds where the records of a dead owner's segment end, cuts
// off a torn last write, and moves the segment to pending/ under its sealed
// name. It returns how many records it holds and whether a tail was cut.
func (s *Spool) adoptSegment(path string, n segName) (records int, cut bool, err error) {
	fsys := s.cfg.fs
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	size, err := segmentFileSize(f)
	if err != nil {
		return 0, false, err
	}
	if n.sealed {
		size = min(size, n.size)
	}
	end := int64(0)
	var tail *scanned
	err = scanSegment(f, size, false, func(sc scanned) {
		records++
		end = sc.off + sc.size
		if sc.err != nil {
			tail = &sc
		} else {
			tail = nil
		}
	})
	if err != nil {
		return 0, false, err
	}
	if tail != nil && tail.off+tail.size == size && !n.sealed {
		// What ends the segment unreadably is the write that was under way
		// when its process died; the put never returned.
		records--
		end, cut = tail.off, true
	}
	key := n.key
	if records == 0 {
		_ = fsys.Remove(filepath.Join(filepath.Dir(path), sidecarName(key)))
		_ = fsys.Remove(filepath.Join(s.pending, sidecarName(key)))
		return 0, cut, fsys.Remove(path)
	}
	if cut || end < size {
		if err := f.Truncate(end); err != nil {
			return 0, false, err
		}
	}
	return records, cut, fsys.Rename(path, filepath.Join(s.pending, segmentName(key, records, end)))
}
