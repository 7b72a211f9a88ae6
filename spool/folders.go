package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
)

// makeFolders makes the spool's folders, or checks the ones there: every
// folder must belong to this process's user, which is refused with
// ErrNotOwner before anything is changed; one open to group or others is
// tightened to 0700, with a warning naming it, since records may carry
// allow-listed headers and bodies that are no one else's to read.
func (s *Spool) makeFolders() error {
	fsys := s.cfg.fs
	if fi, err := fsys.Stat(s.dir); err == nil && !fi.IsDir() {
		return &Error{Op: "open", Path: s.dir, Kind: ErrNotDirectory, Err: fmt.Errorf("%s is a %s", s.dir, fi.Mode().Type())}
	}
	folders, err := s.existingFolders()
	if err != nil {
		return err
	}
	for _, d := range folders {
		if err := s.checkOwner(d.path, d.info); err != nil {
			return err
		}
	}
	owners := filepath.Join(s.dir, ownersDir)
	for _, d := range []string{s.pending, s.quarantine, owners} {
		if err := fsys.MkdirAll(d, dirPerm); err != nil {
			return diskError("open", d, err)
		}
	}
	for _, d := range folders {
		if err := s.tighten(d.path, d.info); err != nil {
			return err
		}
	}
	if s.cfg.sync == SyncDurable {
		for _, d := range []string{filepath.Dir(s.dir), s.dir, owners} {
			if err := fsys.SyncDir(d); err != nil {
				return diskError("open", d, err)
			}
		}
	}
	return nil
}

type folderInfo struct {
	path string
	info fs.FileInfo
}

// existingFolders lists the spool's folders already there: the spool's
// own, pending/, quarantine/, owners/ and each owner's folder.
func (s *Spool) existingFolders() ([]folderInfo, error) {
	fsys := s.cfg.fs
	owners := filepath.Join(s.dir, ownersDir)
	var out []folderInfo
	add := func(path string) error {
		fi, err := fsys.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return diskError("open", path, err)
		case fi.IsDir():
			out = append(out, folderInfo{path, fi})
		}
		return nil
	}
	for _, d := range []string{s.dir, s.pending, s.quarantine, owners} {
		if err := add(d); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 || out[len(out)-1].path != owners {
		return out, nil
	}
	names, err := fsys.ReadDirNames(owners)
	if err != nil {
		return nil, diskError("open", owners, err)
	}
	for _, name := range names {
		if err := add(filepath.Join(owners, name)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkOwner refuses a folder that belongs to another user: its files would
// be that user's to read and to replace.
func (s *Spool) checkOwner(path string, fi fs.FileInfo) error {
	owner, ok := fileOwner(fi)
	me := currentUser()
	if !ok || me < 0 || owner == me {
		return nil
	}
	return &Error{Op: "open", Path: path, Kind: ErrNotOwner,
		Err: fmt.Errorf("folder %s is owned by uid %d, and this process runs as uid %d", path, owner, me)}
}

// tighten takes group and others' access away from a folder, with a
// warning naming it.
func (s *Spool) tighten(path string, fi fs.FileInfo) error {
	if runtime.GOOS == "windows" || fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if err := s.cfg.fs.Chmod(path, dirPerm); err != nil {
		return diskError("open", path, err)
	}
	s.cfg.logger.Warn("spool: folder was open to other users; tightened to 0700",
		"path", path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	return nil
}
