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
	"time"
)

// hookFS is the OS file system with some operations replaced.
type hookFS struct {
	OSFS
	mkdirAll func(path string, perm fs.FileMode) error
	create   func(name string, perm fs.FileMode) (File, error)
	rename   func(oldpath, newpath string) error
	remove   func(name string) error
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
				stored := snapshot(t, dir, pendingDir)

				fsys.setBudget(c.budget)
				err := s.Put(rec(4, c.body))
				isErr(t, err, ErrNoSpace, syscall.ENOSPC)
				var se *Error
				if !errors.As(err, &se) || se.Op != "put" {
					t.Errorf("Put error %#v, want an *Error from put", err)
				}
				st := s.Stats()
				if st.PutErrors != 1 || st.Records != 3 || st.Stored != 3 {
					t.Errorf("Stats %+v; want 1 put error, 3 records", st)
				}
				if tmp := files(t, dir, ownersDir); slices.ContainsFunc(tmp, func(p string) bool { return !strings.HasSuffix(p, lockExt) }) {
					t.Errorf("files left under owners/: %v", tmp)
				}
				checkBytes(t, s)
				if got := snapshot(t, dir, pendingDir); !reflect.DeepEqual(got, stored) {
					t.Errorf("pending/ changed: %d files, %d before", len(got), len(stored))
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
			if st := s.Stats(); st.PutErrors != 1 || st.Records != 0 || st.Bytes != 0 {
				t.Errorf("Stats %+v", st)
			}

			// Records that cannot be moved.
			dir = t.TempDir()
			var ro bool
			var mu sync.Mutex
			s = open(t, dir, WithFS(&hookFS{rename: func(o, n string) error {
				mu.Lock()
				defer mu.Unlock()
				if ro {
					return &os.LinkError{Op: "rename", Old: o, New: n, Err: errno}
				}
				return os.Rename(o, n)
			}}))
			put(t, s, rec(1, 10))
			mu.Lock()
			ro = true
			mu.Unlock()
			_, err = s.Claim(1)
			isErr(t, err, ErrPermission, errno)
			if err := s.Put(rec(2, 10)); !errors.Is(err, ErrPermission) {
				t.Errorf("Put = %v, want ErrPermission", err)
			}
			if st := s.Stats(); st.Records != 1 || st.Claimed != 0 || st.PutErrors != 1 {
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

// blockOnce makes the first call to hook for which match is true wait
// until unblock is called; entered is closed when it is waiting.
type blockOnce struct {
	first   atomic.Bool
	entered chan struct{}
	gate    chan struct{}
}

func newBlockOnce() *blockOnce {
	return &blockOnce{entered: make(chan struct{}), gate: make(chan struct{})}
}

func (b *blockOnce) wait() {
	if b.first.CompareAndSwap(false, true) {
		close(b.entered)
		<-b.gate
	}
}

func (b *blockOnce) unblock() { close(b.gate) }

// TestSettleOnce: a record being settled cannot be settled again at the
// same time, and counts once.
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
				dir := t.TempDir()
				b := newBlockOnce()
				inClaimed := func(p string) bool {
					return strings.Contains(p, string(filepath.Separator)+claimedSub+string(filepath.Separator))
				}
				s := open(t, dir, WithFS(&hookFS{
					remove: func(p string) error {
						if inClaimed(p) {
							b.wait()
						}
						return os.Remove(p)
					},
					rename: func(o, n string) error {
						if inClaimed(o) {
							b.wait()
						}
						return os.Rename(o, n)
					},
				}))
				put(t, s, rec(1, 100))
				rs, _ := s.Claim(1)
				done := make(chan error)
				go func() { done <- op1(s, rs[0].ID) }()
				<-b.entered
				err2 := op2(s, rs[0].ID)
				b.unblock()
				if err := <-done; err != nil {
					t.Fatalf("%s: %v", first, err)
				}
				if !errors.Is(err2, ErrUnknownRecord) {
					t.Errorf("%s during %s = %v, want ErrUnknownRecord", second, first, err2)
				}
				st := s.Stats()
				if st.Acked+st.Released+uint64(st.Quarantined) != 1 {
					t.Errorf("settled %d times: %+v", st.Acked+st.Released+uint64(st.Quarantined), st)
				}
				checkBytes(t, s)
			})
		}
	}
}

// TestCloseWaitsForSettle: Close must not hand back to pending/ a record
// whose Ack is under way, or the acked record would be sent again.
func TestCloseWaitsForSettle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := newBlockOnce()
	s := open(t, dir, WithFS(&hookFS{remove: func(p string) error {
		if strings.HasSuffix(p, recordExt) {
			b.wait()
		}
		return os.Remove(p)
	}}))
	put(t, s, rec(1, 100))
	rs, _ := s.Claim(1)
	acked := make(chan error)
	go func() { acked <- s.Ack(rs[0].ID) }()
	<-b.entered
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	var closeErr error
	early := false
	select {
	case closeErr = <-closed:
		// The bug shows only if Close gets here first; the wait bounds the
		// test, it does not make it pass.
		early = true
		t.Errorf("Close returned (%v) while an Ack was deleting the record", closeErr)
	case <-time.After(50 * time.Millisecond):
	}
	b.unblock()
	if err := <-acked; err != nil {
		t.Errorf("Ack: %v", err)
	}
	if !early {
		closeErr = <-closed
	}
	if closeErr != nil {
		t.Errorf("Close: %v", closeErr)
	}
	s = open(t, dir)
	if got := claimAll(t, s); len(got) != 0 {
		t.Errorf("an acked record came back: %v", seqs(got))
	}
}

// TestQuarantineFailure: a record that cannot be moved to the quarantine
// is deleted rather than sent again, and the spool forgets it.
func TestQuarantineFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, WithFS(&hookFS{rename: func(o, n string) error {
		if strings.Contains(n, quarantineDir) {
			return &os.LinkError{Op: "rename", Old: o, New: n, Err: syscall.EIO}
		}
		return os.Rename(o, n)
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
