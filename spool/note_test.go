package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNote: a process's note is read by Owners while it runs, replaced
// whole, refused over its bound, and deleted with the owner at Close and
// when a gone owner's records are adopted.
func TestNote(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.WriteNote([]byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteNote([]byte(`{"b":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteNote(make([]byte, MaxNoteSize+1)); err == nil {
		t.Error("a note over MaxNoteSize was written")
	}
	owners, err := Owners(dir)
	if err != nil || len(owners) != 1 || string(owners[0].Note) != `{"b":2}` || !owners[0].Alive {
		t.Fatalf("Owners = %+v, %v; want the live owner with the latest note", owners, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ownersDir, tempPrefix+"*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteNote([]byte("x")); err != ErrClosed {
		t.Errorf("WriteNote after Close: %v, want ErrClosed", err)
	}
	if notes, _ := filepath.Glob(filepath.Join(dir, ownersDir, "*"+noteExt)); len(notes) != 0 {
		t.Errorf("notes left after Close: %v", notes)
	}

	// A gone owner's note goes when its records are adopted.
	gone := filepath.Join(dir, ownersDir, "4242-0badf00d")
	if err := os.MkdirAll(gone, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gone+noteExt, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gone+lockExt, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir)
	defer s2.Close()
	entries, _ := os.ReadDir(filepath.Join(dir, ownersDir))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "4242-") {
			t.Errorf("the gone owner's %s is left after adoption", e.Name())
		}
	}
}
