package spool

import (
	"io"
	"io/fs"
	"os"
	"runtime"
)

// FS is the narrow file-system seam the spool works through. The default is
// the operating system's; tests wrap it to inject disk errors (a full disk,
// a failing fsync) that are hard to cause for real.
type FS interface {
	MkdirAll(path string, perm fs.FileMode) error
	// Create makes a new file that must not exist yet, for reading and
	// writing.
	Create(name string, perm fs.FileMode) (File, error)
	// OpenFile opens a file with os.OpenFile's flags.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	ReadFile(name string) ([]byte, error)
	// ReadDirNames lists a folder's entries, unsorted.
	ReadDirNames(dir string) ([]string, error)
	Stat(name string) (fs.FileInfo, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	RemoveAll(path string) error
	// Chmod changes a file's or folder's mode, as os.Chmod does.
	Chmod(name string, mode fs.FileMode) error
	// SyncDir makes the folder's entries (creations, renames) durable.
	SyncDir(dir string) error
}

// File is a file opened by FS.Create or FS.OpenFile.
type File interface {
	io.Writer
	io.ReaderAt
	io.Seeker
	Truncate(size int64) error
	Sync() error
	Close() error
}

// OSFS is the operating system's file system.
type OSFS struct{}

var _ FS = OSFS{}

func (OSFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }

func (OSFS) Create(name string, perm fs.FileMode) (File, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
}

func (OSFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}

func (OSFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

func (OSFS) ReadDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func (OSFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }
func (OSFS) Rename(o, n string) error              { return os.Rename(o, n) }
func (OSFS) Remove(name string) error              { return os.Remove(name) }
func (OSFS) RemoveAll(path string) error           { return os.RemoveAll(path) }
func (OSFS) Chmod(name string, mode fs.FileMode) error {
	return os.Chmod(name, mode)
}

func (OSFS) SyncDir(dir string) error {
	// Windows cannot open a folder for syncing; NTFS journals its metadata.
	if runtime.GOOS == "windows" {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// eachDirName calls fn for every entry of dir, unsorted. With the operating
// system's file system it reads the folder in batches, so that a folder of
// half a million records is never held in memory as half a million names
// (tens of megabytes); any other FS is listed with ReadDirNames.
func eachDirName(fsys FS, dir string, fn func(name string)) error {
	if _, ok := fsys.(OSFS); !ok {
		names, err := fsys.ReadDirNames(dir)
		if err != nil {
			return err
		}
		for _, name := range names {
			fn(name)
		}
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, name := range names {
			fn(name)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
