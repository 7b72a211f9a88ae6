package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// StoredRecord is a record found by Walk.
type StoredRecord struct {
	// Record has no Body; its ID, addressing and Created are set.
	Record   *Record
	BodySize int
	Size     int64 // bytes on disk, framing included
	Attempts int
	// Owner is "" for records waiting in pending/, else the name of the
	// owner folder holding them: a process sending them now, or one that
	// stopped without closing the spool.
	Owner   string
	Segment string // path of the segment file
	Offset  int64
}

// Walk calls fn for every record a spool folder holds and has not settled
// (delivered, quarantined or dropped), oldest segment first, without opening
// the spool and without changing anything: for tools that report on a
// spool another process may be using. A live process notes what it
// settles within a second, so a record it delivered may still be listed
// meanwhile. A damaged region is passed with a
// *CorruptionError and a StoredRecord that has only Segment, Offset, Size
// and Owner. The record being appended by a live process when Walk reads
// is not reported. Segments that move or disappear during the walk are
// skipped; a record moving between folders meanwhile may be reported twice
// or not at all. An error from fn ends the walk and is returned.
func Walk(dir string, fn func(StoredRecord, error) error) error {
	type folder struct{ path, owner string }
	folders := []folder{{filepath.Join(dir, pendingDir), ""}}
	owners, err := os.ReadDir(filepath.Join(dir, ownersDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, o := range owners {
		if o.IsDir() {
			folders = append(folders, folder{filepath.Join(dir, ownersDir, o.Name()), o.Name()})
		}
	}
	type found struct {
		folder
		name string
		n    segName
	}
	var segs []found
	for _, f := range folders {
		names, err := OSFS{}.ReadDirNames(f.path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		for _, name := range names {
			if n, ok := parseSegName(name); ok && !n.sidecar {
				segs = append(segs, found{f, name, n})
			}
		}
	}
	slices.SortFunc(segs, func(a, b found) int {
		if a.n.key.less(b.n.key) {
			return -1
		}
		if b.n.key.less(a.n.key) {
			return 1
		}
		return 0
	})
	for _, sg := range segs {
		if err := walkSegment(sg.path, sg.owner, sg.name, sg.n, fn); err != nil {
			return err
		}
	}
	return nil
}

func walkSegment(folder, owner, name string, n segName, fn func(StoredRecord, error) error) error {
	path := filepath.Join(folder, name)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if n.sealed {
		size = min(size, n.size)
	}
	var side sidecarState
	if data, err := os.ReadFile(filepath.Join(folder, sidecarName(n.key))); err == nil {
		side = readSidecar(data)
	}
	var fnErr error
	var held *scanned // reported one step late, to tell the last region
	report := func(sc scanned) error {
		if side.settled[uint32(sc.off)] {
			return nil
		}
		sr := StoredRecord{Owner: owner, Segment: path, Offset: sc.off, Size: sc.size}
		if sc.err != nil {
			return fn(sr, &CorruptionError{Path: path, Offset: sc.off, Err: sc.err})
		}
		rec := sc.meta.Record
		sr.Record, sr.BodySize, sr.Attempts = &rec, sc.bodyLen, int(side.attempts[uint32(sc.off)])
		return fn(sr, nil)
	}
	err = scanSegment(f, size, false, func(sc scanned) {
		if fnErr != nil {
			return
		}
		if held != nil {
			fnErr = report(*held)
		}
		held = &sc
	})
	// An active segment's last region may be a write under way; a sealed
	// segment's is as damaged as any other.
	if err == nil && fnErr == nil && held != nil && (held.err == nil || held.off+held.size < size || n.sealed) {
		fnErr = report(*held)
	}
	if fnErr != nil {
		return fnErr
	}
	return err
}
