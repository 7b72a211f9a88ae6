package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	// stopped without handing them back.
	Owner string
	// OwnerAlive is true when Owner is a process that still has the spool
	// open (see Owners); a gone owner's records are delivered by the next
	// process that opens the folder.
	OwnerAlive bool
	Segment    string // path of the segment file
	Offset     int64
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
// or not at all. Each owner is told alive or gone as Owners does. An error
// from fn ends the walk and is returned.
func Walk(dir string, fn func(StoredRecord, error) error) error {
	folders := []folder{{path: filepath.Join(dir, pendingDir)}}
	owners, err := Owners(dir)
	if err != nil {
		return err
	}
	for _, o := range owners {
		folders = append(folders, folder{filepath.Join(dir, ownersDir, o.Name), o.Name, o.Alive})
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
		if err := walkSegment(sg.folder, sg.name, sg.n, fn); err != nil {
			return err
		}
	}
	return nil
}

func walkSegment(fo folder, name string, n segName, fn func(StoredRecord, error) error) error {
	folder := fo.path
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
		sr := StoredRecord{Owner: fo.owner, OwnerAlive: fo.alive, Segment: path, Offset: sc.off, Size: sc.size}
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

// folder is a folder Walk reads: pending/ (no owner) or an owner's.
type folder struct {
	path, owner string
	alive       bool
}

// Owner is a process's folder in a spool folder, as Owners finds it.
type Owner struct {
	// Name is the folder's name under owners/: the process ID, a dash and
	// a random part.
	Name string
	// PID is the process ID the owner had (in its PID namespace), read
	// from Name; 0 when Name does not start with one.
	PID int
	// Note is what the process last wrote about itself (Spool.WriteNote),
	// nil if nothing; a gone owner's note says what it was doing.
	Note []byte
	// Alive is true while the process holds its lock: it is running with
	// the spool open, and writes or sends the records in its folder. The
	// records of a gone owner (killed, or closed without handing them
	// back) are delivered by the next process that opens the folder, or
	// by a running one when it next rescans it.
	Alive bool
}

// Owners lists the owner folders of the spool folder dir. It tells a live
// owner from a gone one as a spool does before it adopts a gone owner's
// records: by trying the owner's lock without waiting. A live owner holds
// the lock and is not disturbed; a gone owner's lock is taken and let go
// at once, and a spool adopting at that very instant finds it taken and
// leaves the records to its next scan. Nothing is created or changed. An
// owner whose lock cannot be tried (a permission error, or a platform
// without file locks) is reported alive: it is not known to be gone.
func Owners(dir string) ([]Owner, error) {
	entries, err := os.ReadDir(filepath.Join(dir, ownersDir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []Owner
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, ownersDir, e.Name())
		o := Owner{Name: e.Name(), Alive: ownerAlive(path + lockExt), Note: readNote(path)}
		if pid, _, ok := strings.Cut(o.Name, "-"); ok {
			if n, err := strconv.Atoi(pid); err == nil && n > 0 {
				o.PID = n
			}
		}
		out = append(out, o)
	}
	return out, nil
}

// ownerAlive tries the lock at path without waiting and without creating
// it. A missing lock means the owner is gone: a live owner locks its file
// before it makes its folder.
func ownerAlive(path string) bool {
	if !locksWork {
		return true
	}
	unlock, err := tryLock(path, false)
	switch {
	case err == nil:
		_ = unlock()
		return false
	case errors.Is(err, fs.ErrNotExist):
		return false
	}
	return true
}
