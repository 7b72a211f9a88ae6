//go:build linux

package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// mountTmpfs mounts a small tmpfs for the test, or skips it: only root may
// mount, and not in every container. The injected-FS tests cover the same
// errors everywhere.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a tmpfs needs root (the injected-FS tests cover the same errors)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs here: %v (the injected-FS tests cover the same errors)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestNoSpaceTmpfs fills a real 2 MiB file system.
func TestNoSpaceTmpfs(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(mountTmpfs(t, "2m"), "spool")
	// Segments of three records, so that delivering some frees space.
	s := open(t, dir, withSegmentBytes(300<<10))
	var stored []*Record
	var err error
	for seq := 0; err == nil; seq++ {
		if seq > 100 {
			t.Fatal("2 MiB holds more than 100 records of 100 KiB")
		}
		r := rec(seq, 100<<10)
		if err = s.Put(r); err == nil {
			stored = append(stored, r)
		}
	}
	isErr(t, err, ErrNoSpace, syscall.ENOSPC)
	st := s.Stats()
	if st.Dropped.Disk != 1 || st.Records != len(stored) || len(stored) < 5 {
		t.Errorf("Stats %+v with %d stored", st, len(stored))
	}
	for _, p := range files(t, dir, ownersDir) {
		if strings.HasSuffix(p, segmentExt) && endsTorn(t, filepath.Join(dir, p)) {
			t.Errorf("%s ends in a partial record", p)
		}
	}
	checkBytes(t, s)

	// Everything stored is intact; acking frees space once every record of
	// a segment is delivered: ack all but three, which stay waiting.
	got := claimAll(t, s)
	if !slices.Equal(ids(got), ids(stored)) {
		t.Fatalf("claimed %d records, stored %d", len(got), len(stored))
	}
	for i, r := range got {
		if !bytes.Equal(r.Body, stored[i].Body) {
			t.Errorf("record %d damaged", i)
		}
		if i < len(got)-3 {
			s.Ack(r.ID)
		} else {
			s.Release(r.ID)
		}
	}
	if err := s.Put(rec(1000, 100<<10)); err != nil {
		t.Fatalf("Put after freeing space: %v", err)
	}
	s.Close()
	s = open(t, dir)
	got = claimAll(t, s)
	if len(got) != 3+1 {
		t.Errorf("after reopen: %d records, want 4", len(got))
	}
	for _, r := range got {
		if !bytes.Equal(r.Body, body(seqOf(r.Body), 100<<10)) {
			t.Errorf("seq %d damaged", seqOf(r.Body))
		}
	}
}

// TestReadOnlyTmpfs: a spool on a file system remounted read-only cannot
// be opened, and says why.
func TestReadOnlyTmpfs(t *testing.T) {
	t.Parallel()
	mnt := mountTmpfs(t, "1m")
	dir := filepath.Join(mnt, "spool")
	s := open(t, dir)
	put(t, s, rec(1, 100), rec(2, 100))
	s.Close()
	before := snapshot(t, dir, ".")
	if err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Skipf("skipped: cannot remount read-only: %v (TestPermissionInjected covers this)", err)
	}
	for _, d := range []string{dir, filepath.Join(mnt, "new")} {
		s, err := Open(d, WithLogger(quiet))
		if s != nil {
			s.Close()
		}
		if !errors.Is(err, ErrPermission) || !errors.Is(err, syscall.EROFS) {
			t.Errorf("Open(%s) on a read-only file system = %v, want ErrPermission and EROFS", d, err)
		}
	}
	if after := snapshot(t, dir, "."); !reflect.DeepEqual(before, after) {
		t.Error("a failed Open changed the folder")
	}
}

// TestReadOnlyChmod: a folder without write permission, for users other
// than root, whom permissions do not stop.
func TestReadOnlyChmod(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("skipped: root ignores permissions (TestReadOnlyTmpfs and TestPermissionInjected cover this)")
	}
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	put(t, s, rec(1, 100))
	s.Close()
	empty := filepath.Join(t.TempDir(), "empty")
	mkdir(t, empty)
	var dirs []string
	for _, d := range []string{dir, empty, filepath.Join(dir, pendingDir), filepath.Join(dir, ownersDir), filepath.Join(dir, quarantineDir)} {
		if err := os.Chmod(d, 0o500); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			os.Chmod(d, 0o700)
		}
	})
	for _, d := range []string{dir, empty, filepath.Join(empty, "spool")} {
		s, err := Open(d, WithLogger(quiet))
		if s != nil {
			s.Close()
		}
		if !errors.Is(err, ErrPermission) || !errors.Is(err, os.ErrPermission) {
			t.Errorf("Open(%s) = %v, want ErrPermission", d, err)
		}
		if err != nil && !strings.Contains(err.Error(), "spool:") {
			t.Errorf("error %q does not say where it comes from", err)
		}
	}
}
