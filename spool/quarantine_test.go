package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// opLogFS is the OS file system, logging what is done to files in one
// folder, in order, with names relative to it.
type opLogFS struct {
	OSFS
	dir string
	mu  sync.Mutex
	ops []string
}

func (l *opLogFS) log(op string, paths ...string) {
	var rel []string
	for _, p := range paths {
		if filepath.Dir(p) != l.dir && p != l.dir {
			return
		}
		rel = append(rel, filepath.Base(p))
	}
	l.mu.Lock()
	l.ops = append(l.ops, op+" "+strings.Join(rel, " "))
	l.mu.Unlock()
}

func (l *opLogFS) Create(name string, perm fs.FileMode) (File, error) {
	f, err := l.OSFS.Create(name, perm)
	if err != nil {
		return nil, err
	}
	l.log("create", name)
	return &opLogFile{File: f, fs: l, name: name}, nil
}

func (l *opLogFS) Rename(o, n string) error {
	err := l.OSFS.Rename(o, n)
	if err == nil {
		l.log("rename", o, n)
	}
	return err
}

func (l *opLogFS) SyncDir(dir string) error {
	l.log("syncdir", dir)
	return l.OSFS.SyncDir(dir)
}

type opLogFile struct {
	File
	fs   *opLogFS
	name string
}

func (f *opLogFile) Sync() error {
	f.fs.log("sync", f.name)
	return f.File.Sync()
}

// TestQuarantineWriteAtomic: a quarantined record and its reason are each
// written under a temporary name and renamed into place; in SyncDurable
// mode the file is synced before the rename and the folder after it.
func TestQuarantineWriteAtomic(t *testing.T) {
	for _, mode := range []SyncMode{SyncProcess, SyncDurable} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsys := &opLogFS{dir: filepath.Join(dir, quarantineDir)}
			s := open(t, dir, WithFS(fsys), WithSync(mode))
			put(t, s, rec(1, 1000))
			rs, _ := s.Claim(1)
			if err := s.Quarantine(rs[0].ID, "HTTP 400"); err != nil {
				t.Fatal(err)
			}
			names := quarantinedRecords(t, dir)
			if len(names) != 1 {
				t.Fatalf("quarantine holds %v", names)
			}
			name := filepath.Base(names[0])
			var want []string
			for _, n := range []string{name, name + whyExt} {
				want = append(want, "create "+tempPrefix+n)
				if mode == SyncDurable {
					want = append(want, "sync "+tempPrefix+n)
				}
				want = append(want, "rename "+tempPrefix+n+" "+n)
				if mode == SyncDurable {
					want = append(want, "syncdir "+quarantineDir)
				}
			}
			fsys.mu.Lock()
			got := slices.Clone(fsys.ops)
			fsys.mu.Unlock()
			if !slices.Equal(got, want) {
				t.Errorf("quarantine writes:\n got %q\nwant %q", got, want)
			}
			if n := len(files(t, dir, quarantineDir)); n != 2 {
				t.Errorf("%d files in quarantine/, want the record and its reason", n)
			}
		})
	}
}

// TestQuarantineWriteFails: a quarantine write that cannot be renamed into
// place leaves no file behind, and the record, not kept, is not sent again.
func TestQuarantineWriteFails(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, quarantineDir)
	s := open(t, dir, WithFS(&hookFS{rename: func(o, n string) error {
		if filepath.Dir(n) == q {
			return &os.LinkError{Op: "rename", Old: o, New: n, Err: syscall.EIO}
		}
		return os.Rename(o, n)
	}}))
	put(t, s, rec(1, 1000))
	rs, _ := s.Claim(1)
	if err := s.Quarantine(rs[0].ID, "HTTP 400"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Quarantine = %v, want the rename's error", err)
	}
	if f := files(t, dir, quarantineDir); len(f) != 0 {
		t.Errorf("a failed quarantine left %v", f)
	}
	if st := s.Stats(); st.Quarantined != 0 || st.Records != 0 || st.QuarantineBytes != 0 {
		t.Errorf("Stats %+v", st)
	}
}

// TestQuarantineTempFilesRemovedAtOpen: a temporary file a crash left in
// the quarantine is removed at Open and never counted; one too young to
// be abandoned may be another process's write under way, and stays.
func TestQuarantineTempFilesRemovedAtOpen(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	q := filepath.Join(dir, quarantineDir)
	if err := os.MkdirAll(q, 0o700); err != nil {
		t.Fatal(err)
	}
	old, young := filepath.Join(q, tempPrefix+"a.rec"), filepath.Join(q, tempPrefix+"b.rec")
	for _, p := range []string{old, young} {
		if err := os.WriteFile(p, make([]byte, 100), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(old, time.Time{}, clock.Now().Add(-2*staleLockAge)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(young, time.Time{}, clock.Now()); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir, WithClock(clock.Now))
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file still there: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("a recent temporary file was removed: %v", err)
	}
	if st := s.Stats(); st.Quarantined != 0 || st.QuarantineBytes != 0 {
		t.Errorf("temporary files counted: %+v", st)
	}
}
