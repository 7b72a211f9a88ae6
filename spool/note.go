package spool

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// noteExt names an owner's note, beside its lock in owners/: a small
// document the process that owns the folder writes about itself for tools
// that read the folder (otlpretry status), such as which destinations its
// exports wait on. It is replaced whole and atomically, and deleted with
// the owner's folder; it holds nothing secret.
const noteExt = ".note"

// MaxNoteSize bounds a note.
const MaxNoteSize = 64 << 10

// WriteNote replaces this process's note with data. Tools read it with
// Owners, while this process runs.
func (s *Spool) WriteNote(data []byte) error {
	if len(data) > MaxNoteSize {
		return fmt.Errorf("spool: note of %d bytes, over %d", len(data), MaxNoteSize)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.ops.Add(1) // Close waits for it, then deletes the note with the folder
	s.mu.Unlock()
	defer s.ops.Done()
	return s.writeFileAtomic(filepath.Join(s.dir, ownersDir), s.owner+noteExt, data)
}

// readNote reads the note of the owner folder at path; nil when there is
// none or it cannot be read.
func readNote(path string) []byte {
	f, err := os.Open(path + noteExt)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxNoteSize+1))
	if err != nil || len(b) > MaxNoteSize {
		return nil
	}
	return b
}
