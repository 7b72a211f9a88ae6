//go:build unix

package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// logBuffer collects log lines, safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// spoolFolders are the folders a spool at dir uses before any process has
// opened it.
func spoolFolders(dir string) []string {
	return []string{dir, filepath.Join(dir, pendingDir), filepath.Join(dir, quarantineDir), filepath.Join(dir, ownersDir)}
}

// TestOpenTightensOpenFolders: a spool folder and subfolders left open to
// everyone (0777) are 0700 after Open, each named in a warning.
func TestOpenTightensOpenFolders(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	folders := spoolFolders(dir)
	for _, d := range folders {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	logs := &logBuffer{}
	s, err := Open(dir, WithLogger(slog.New(slog.NewTextHandler(logs, nil))), WithRescanInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range folders {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %04o after Open, want 0700", d, fi.Mode().Perm())
		}
		var warned bool
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "tightened to 0700") &&
				strings.Contains(line, fmt.Sprintf("path=%s ", d)) && strings.Contains(line, "mode=0777") {
				warned = true
			}
		}
		if !warned {
			t.Errorf("no warning names %s; logs:\n%s", d, logs)
		}
	}
	// A folder already closed to others is left alone, without a word.
	s.Close()
	logs = &logBuffer{}
	s2, err := Open(dir, WithLogger(slog.New(slog.NewTextHandler(logs, nil))), WithRescanInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if strings.Contains(logs.String(), "tightened") {
		t.Errorf("a 0700 folder was tightened again: %s", logs)
	}
}

// TestOpenRefusesAnotherUsersFolder: a spool folder, or one of its
// folders, owned by another user is refused with ErrNotOwner, an error that
// names the folder, its owner and this process's uid, and nothing is
// changed.
func TestOpenRefusesAnotherUsersFolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a folder to another user")
	}
	const nobody = 65534
	for _, which := range []string{"", pendingDir, quarantineDir, ownersDir} {
		t.Run("owned:"+which, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spool")
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(dir, which)
			if which != "" {
				if err := os.Mkdir(target, 0o777); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chown(target, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			before := tree(t, dir)

			s, err := Open(dir, WithLogger(quiet))
			if s != nil {
				s.Close()
			}
			if !errors.Is(err, ErrNotOwner) {
				t.Fatalf("Open = %v, want ErrNotOwner", err)
			}
			var se *Error
			if !errors.As(err, &se) || se.Path != target {
				t.Errorf("Open error %#v, want an *Error naming %s", err, target)
			}
			msg := err.Error()
			for _, want := range []string{target, "uid 65534", fmt.Sprintf("uid %d", os.Geteuid())} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if after := tree(t, dir); after != before {
				t.Errorf("Open changed the folder:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// tree describes every entry under dir: path, mode and owner.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d; ", p, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
