package spool

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// hookFS is the OS file system with some operations replaced.
type hookFS struct {
	OSFS
	mkdirAll func(path string, perm fs.FileMode) error
	create   func(name string, perm fs.FileMode) (File, error)
	rename   func(oldpath, newpath string) error
	remove   func(name string) error
	openFile func(name string, flag int, perm fs.FileMode) (File, error)
}

func (h *hookFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if h.openFile != nil {
		return h.openFile(name, flag, perm)
	}
	return h.OSFS.OpenFile(name, flag, perm)
}

func (h *hookFS) MkdirAll(path string, perm fs.FileMode) error {
	if h.mkdirAll != nil {
		return h.mkdirAll(path, perm)
	}
	return h.OSFS.MkdirAll(path, perm)
}

func (h *hookFS) Create(name string, perm fs.FileMode) (File, error) {
	if h.create != nil {
		return h.create(name, perm)
	}
	return h.OSFS.Create(name, perm)
}

func (h *hookFS) Rename(o, n string) error {
	if h.rename != nil {
		return h.rename(o, n)
	}
	return h.OSFS.Rename(o, n)
}

func (h *hookFS) Remove(name string) error {
	if h.remove != nil {
		return h.remove(name)
	}
	return h.OSFS.Remove(name)
}

// fullFS is the OS file system on a disk with budget bytes left: writes
// past it fail with ENOSPC after writing what fits, as a real disk does.
type fullFS struct {
	OSFS
	mu     sync.Mutex
	budget int64 // negative: unlimited
}

func (f *fullFS) setBudget(n int64) {
	f.mu.Lock()
	f.budget = n
	f.mu.Unlock()
}

func (f *fullFS) Create(name string, perm fs.FileMode) (File, error) {
	f.mu.Lock()
	empty := f.budget == 0
	f.mu.Unlock()
	if empty {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	file, err := f.OSFS.Create(name, perm)
	if err != nil {
		return nil, err
	}
	return &fullFile{File: file, fs: f, name: name}, nil
}

type fullFile struct {
	File
	fs   *fullFS
	name string
}

func (w *fullFile) Write(p []byte) (int, error) {
	w.fs.mu.Lock()
	n := int64(len(p))
	if w.fs.budget >= 0 && n > w.fs.budget {
		n = w.fs.budget
	}
	if w.fs.budget >= 0 {
		w.fs.budget -= n
	}
	w.fs.mu.Unlock()
	m, err := w.File.Write(p[:n])
	if err == nil && m < len(p) {
		err = &fs.PathError{Op: "write", Path: w.name, Err: syscall.ENOSPC}
	}
	return m, err
}

// TestNoSpaceInjected: a full disk fails the put it happens to, with
// ErrNoSpace and ENOSPC, counted, leaving no partial file and the records
// stored before untouched; once space is freed puts work again.
func TestNoSpaceInjected(t *testing.T) {
	small := rec(0, 1000).Size()
	cases := []struct {
		name   string
		body   int
		budget int64
	}{
		{"at create", 1000, 0},
		{"small record, mid-write", 1000, small / 2},
		{"small record, last byte", 1000, small - 1},
		{"large record, in the head", 100 << 10, 10},
		{"large record, in the body", 100 << 10, 50 << 10},
		{"large record, in the trailer", 100 << 10, rec(0, 100<<10).Size() - 2},
	}
	for _, mode := range []SyncMode{SyncProcess, SyncDurable} {
		for _, c := range cases {
			t.Run(mode.String()+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				fsys := &fullFS{budget: -1}
				s := open(t, dir, WithFS(fsys), WithSync(mode))
				before := put(t, s, rec(1, 1000), rec(2, 100<<10), rec(3, 5000))
				stored := snapshot(t, dir, pendingDir, ownersDir)

				fsys.setBudget(c.budget)
				err := s.Put(rec(4, c.body))
				isErr(t, err, ErrNoSpace, syscall.ENOSPC)
				var se *Error
				if !errors.As(err, &se) || se.Op != "put" {
					t.Errorf("Put error %#v, want an *Error from put", err)
				}
				st := s.Stats()
				if st.Dropped.Disk != 1 || st.Records != 3 || st.Stored != 3 {
					t.Errorf("Stats %+v; want 1 put error, 3 records", st)
				}
				checkBytes(t, s)
				// Not a byte of the failed write is left.
				if got := snapshot(t, dir, pendingDir, ownersDir); !reflect.DeepEqual(got, stored) {
					t.Errorf("the stored files changed: %d files, %d before", len(got), len(stored))
				}

				// Still full: claiming and settling need no space.
				rs, err := s.Claim(10)
				if err != nil || len(rs) != 3 {
					t.Fatalf("Claim on a full disk = %d, %v", len(rs), err)
				}
				for i, r := range rs {
					if r.ID != before[i].ID || !bytes.Equal(r.Body, before[i].Body) {
						t.Errorf("record %d changed", i)
					}
				}
				if err := s.Ack(rs[0].ID); err != nil {
					t.Fatal(err)
				}
				s.Release(rs[1].ID)
				s.Release(rs[2].ID)

				fsys.setBudget(-1)
				if err := s.Put(rec(4, c.body)); err != nil {
					t.Fatalf("Put after space was freed: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = open(t, dir)
				got := claimAll(t, s)
				if !slices.Equal(seqs(got), []int{2, 3, 4}) || !bytes.Equal(got[2].Body, body(4, c.body)) {
					t.Errorf("after reopen: %v", seqs(got))
				}
			})
		}
	}
}

// TestPermissionInjected: a read-only or forbidden disk fails Open or Put
// with ErrPermission, and matching the system error too.
func TestPermissionInjected(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EROFS, syscall.EACCES, syscall.EPERM} {
		t.Run(errno.Error(), func(t *testing.T) {
			t.Parallel()
			deny := func(op, p string) error { return &fs.PathError{Op: op, Path: p, Err: errno} }

			// A new folder that cannot be made.
			dir := filepath.Join(t.TempDir(), "spool")
			s, err := Open(dir, WithLogger(quiet), WithFS(&hookFS{mkdirAll: func(p string, _ fs.FileMode) error { return deny("mkdir", p) }}))
			if s != nil || !errors.Is(err, ErrPermission) || !errors.Is(err, errno) {
				t.Errorf("Open = %v; want ErrPermission and %v", err, errno)
			}

			// Files that cannot be created.
			dir = t.TempDir()
			s = open(t, dir, WithFS(&hookFS{create: func(p string, _ fs.FileMode) (File, error) { return nil, deny("open", p) }}))
			err = s.Put(rec(1, 10))
			isErr(t, err, ErrPermission, errno)
			if st := s.Stats(); st.Dropped.Disk != 1 || st.Records != 0 || st.Bytes != 0 {
				t.Errorf("Stats %+v", st)
			}

			// A folder that turns read-only: records in pending/ cannot be
			// claimed (moved), no segment can be started.
			dir = t.TempDir()
			first := open(t, dir)
			put(t, first, rec(1, 10))
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			var ro bool
			var mu sync.Mutex
			s = open(t, dir, WithFS(&hookFS{
				rename: func(o, n string) error {
					mu.Lock()
					defer mu.Unlock()
					if ro {
						return &os.LinkError{Op: "rename", Old: o, New: n, Err: errno}
					}
					return os.Rename(o, n)
				},
				create: func(p string, perm fs.FileMode) (File, error) {
					mu.Lock()
					defer mu.Unlock()
					if ro {
						return nil, deny("open", p)
					}
					return OSFS{}.Create(p, perm)
				},
			}))
			mu.Lock()
			ro = true
			mu.Unlock()
			_, err = s.Claim(1)
			isErr(t, err, ErrPermission, errno)
			if err := s.Put(rec(2, 10)); !errors.Is(err, ErrPermission) {
				t.Errorf("Put = %v, want ErrPermission", err)
			}
			if st := s.Stats(); st.Records != 1 || st.Claimed != 0 || st.Dropped.Disk != 1 {
				t.Errorf("Stats %+v; want the record still waiting", st)
			}
			mu.Lock()
			ro = false
			mu.Unlock()
			if rs, err := s.Claim(1); err != nil || len(rs) != 1 || seqOf(rs[0].Body) != 1 {
				t.Errorf("Claim once writable = %v, %v", rs, err)
			}
		})
	}
}

// TestNotDirectory: a spool path that is a file, or under one.
func TestNotDirectory(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{file, filepath.Join(file, "spool")} {
		s, err := Open(dir, WithLogger(quiet))
		if s != nil || !errors.Is(err, ErrNotDirectory) {
			t.Errorf("Open(%s) = %v, want ErrNotDirectory", dir, err)
		}
	}
	if data, _ := os.ReadFile(file); string(data) != "x" {
		t.Error("Open changed the file")
	}
}

// TestSettleOnce: two settlements of one record at the same time: one
// wins, the other gets ErrUnknownRecord, and it counts once. Run many times
// over, and under -race, so that the goroutines interleave every way.
func TestSettleOnce(t *testing.T) {
	settle := map[string]func(s *Spool, id ID) error{
		"Ack":        func(s *Spool, id ID) error { return s.Ack(id) },
		"Release":    func(s *Spool, id ID) error { return s.Release(id) },
		"Quarantine": func(s *Spool, id ID) error { return s.Quarantine(id, "bad") },
	}
	for first, op1 := range settle {
		for second, op2 := range settle {
			t.Run(first+"/"+second, func(t *testing.T) {
				t.Parallel()
				s := open(t, t.TempDir())
				for round := range 20 {
					put(t, s, rec(round, 100))
					rs, _ := s.Claim(1)
					if len(rs) != 1 {
						t.Fatalf("round %d: nothing claimed", round)
					}
					before := s.Stats()
					start := make(chan struct{})
					errs := make(chan error, 2)
					for _, op := range []func(*Spool, ID) error{op1, op2} {
						go func() {
							<-start
							errs <- op(s, rs[0].ID)
						}()
					}
					close(start)
					e1, e2 := <-errs, <-errs
					if (e1 == nil) == (e2 == nil) || !errors.Is(errors.Join(e1, e2), ErrUnknownRecord) {
						t.Fatalf("round %d: %s and %s at once returned %v and %v; want one nil, one ErrUnknownRecord", round, first, second, e1, e2)
					}
					st := s.Stats()
					if n := st.Acked + st.Released + uint64(st.Quarantined) - before.Acked - before.Released - uint64(before.Quarantined); n != 1 {
						t.Fatalf("round %d: settled %d times", round, n)
					}
					// Whatever was released goes again.
					for _, r := range claimAll(t, s) {
						s.Ack(r.ID)
					}
				}
				checkBytes(t, s)
			})
		}
	}
}

// TestAckAndClose: an Ack under way when Close is called either finishes
// first, and the record is never sent again, or fails with ErrClosed, and
// it is. Never both, never neither.
func TestAckAndClose(t *testing.T) {
	t.Parallel()
	for round := range 40 {
		dir := t.TempDir()
		s := open(t, dir)
		put(t, s, rec(1, 100), rec(2, 100))
		rs, _ := s.Claim(1)
		start := make(chan struct{})
		acked := make(chan error, 1)
		go func() {
			<-start
			acked <- s.Ack(rs[0].ID)
		}()
		close(start)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		ackErr := <-acked
		if ackErr != nil && !errors.Is(ackErr, ErrClosed) {
			t.Fatalf("round %d: Ack = %v", round, ackErr)
		}
		s = open(t, dir)
		got := seqs(claimAll(t, s))
		slices.Sort(got)
		want := []int{2}
		if ackErr != nil {
			want = []int{1, 2}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: Ack returned %v, then the next process got %v; want %v", round, ackErr, got, want)
		}
	}
}

// TestQuarantineFailure: a record that cannot be moved to the quarantine
// is deleted rather than sent again, and the spool forgets it.
func TestQuarantineFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, WithFS(&hookFS{create: func(n string, perm fs.FileMode) (File, error) {
		if strings.Contains(n, quarantineDir) {
			return nil, &os.PathError{Op: "open", Path: n, Err: syscall.EIO}
		}
		return OSFS{}.Create(n, perm)
	}}))
	put(t, s, rec(1, 100), rec(2, 100))
	rs, _ := s.Claim(1)
	err := s.Quarantine(rs[0].ID, "bad")
	isErr(t, err, syscall.EIO)
	st := s.Stats()
	if st.Records != 1 || st.Claimed != 0 || st.Quarantined != 0 {
		t.Errorf("Stats %+v; want the record forgotten", st)
	}
	checkBytes(t, s)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	s = open(t, dir)
	if got := claimAll(t, s); !slices.Equal(seqs(got), []int{2}) {
		t.Errorf("after reopen %v, want [2]", seqs(got))
	}
}

// TestGroupSync: a caller arriving during a sync waits for the next one
// and gets its result; each sync runs once for all who joined it.
func TestGroupSync(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	started := make(chan struct{})
	gate := make(chan struct{})
	fail := errors.New("sync failed")
	g := &groupSync{sync: func() error {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			close(started)
			<-gate
			return nil
		}
		return fail
	}}
	first := make(chan error)
	go func() { first <- g.Sync() }()
	<-started
	joiner := make(chan error)
	go func() { joiner <- g.Sync() }()
	for { // until the joiner waits for the next sync
		g.mu.Lock()
		waiting := g.next != nil
		g.mu.Unlock()
		if waiting {
			break
		}
		runtime.Gosched()
	}
	close(gate)
	if err := <-first; err != nil {
		t.Errorf("first sync: %v", err)
	}
	if err := <-joiner; !errors.Is(err, fail) {
		t.Errorf("joiner: %v, want the second sync's error", err)
	}
	if err := g.Sync(); !errors.Is(err, fail) {
		t.Errorf("later caller: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Errorf("%d syncs, want 3", calls)
	}
}

// TestLoadFailureLosesNothing: a segment that cannot be opened when a
// sender starts on it is handed back, not forgotten: Claim reports the
// disk error, and once the disk answers again every record is delivered,
// by this process or by the next.
func TestLoadFailureLosesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := open(t, dir)
	put(t, first, rec(1, 100), rec(2, 200))
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	failing.Store(true)
	s := open(t, dir, WithFS(&hookFS{openFile: func(p string, flag int, perm fs.FileMode) (File, error) {
		if failing.Load() && strings.HasSuffix(p, segmentExt) {
			return nil, &fs.PathError{Op: "open", Path: p, Err: syscall.EIO}
		}
		return OSFS{}.OpenFile(p, flag, perm)
	}}))
	rs, err := s.Claim(10)
	if len(rs) != 0 {
		t.Fatalf("claimed %d records from a segment that cannot be read", len(rs))
	}
	isErr(t, err, syscall.EIO)
	if st := s.Stats(); st.Records != 2 || st.Dropped.Total() != 0 || st.Quarantined != 0 {
		t.Fatalf("after the failed load: %+v", st)
	}
	if n := len(stored(t, dir, pendingDir)); n != 2 {
		t.Fatalf("%d records back in pending/, want 2", n)
	}
	failing.Store(false)
	if got := claimAll(t, s); !slices.Equal(seqs(got), []int{1, 2}) {
		t.Fatalf("once readable: claimed %v", seqs(got))
	}
}
