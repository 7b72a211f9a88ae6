package spool

import (
	"fmt"
	"path/filepath"
)

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
