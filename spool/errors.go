package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
)

// Sentinel errors, for errors.Is. Errors from the disk are *Error values that
// match one of ErrNoSpace, ErrPermission, ErrNotDirectory or ErrNotOwner
// when the cause is known, and always match the underlying system error
// too.
var (
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrFull is returned by Put when storing the record would take the
	// spool over its byte cap and the policy is DropNewest (or every older
	// record is being sent and cannot be evicted).
	ErrFull = errors.New("spool: full")
	// ErrTooLarge is returned by Put for a record larger than the whole cap
	// or than MaxBodySize.
	ErrTooLarge = errors.New("spool: record too large")
	// ErrNoSpace: the file system is full (ENOSPC, or a quota).
	ErrNoSpace = errors.New("spool: no space left on device")
	// ErrPermission: the folder is read-only or not ours to write.
	ErrPermission = errors.New("spool: permission denied or read-only")
	// ErrNotDirectory: the spool path exists and is not a folder.
	ErrNotDirectory = errors.New("spool: not a directory")
	// ErrNotOwner: Open found the spool folder, or one of its folders,
	// owned by another user than the one this process runs as.
	ErrNotOwner = errors.New("spool: folder owned by another user")
	// ErrUnknownRecord: Ack, Release or Quarantine of an ID this spool has
	// not handed out with Claim or PutClaimed, or one already settled or
	// being settled by another call.
	ErrUnknownRecord = errors.New("spool: record not claimed")
)

// Error is a failed file-system operation, with the path it concerned.
type Error struct {
	Op   string // "put", "open", "claim", ...
	Path string
	// Kind is ErrNoSpace, ErrPermission, ErrNotDirectory, ErrNotOwner or
	// nil.
	Kind error
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("spool: %s %s: %v", e.Op, e.Path, e.Err)
}

// Unwrap lets errors.Is match both the kind and the system error.
func (e *Error) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}

// diskError classifies err, and returns it unchanged when it already is an
// *Error or nil.
func diskError(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	var kind error
	switch {
	case isNoSpace(err):
		kind = ErrNoSpace
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		kind = ErrPermission
	case errors.Is(err, syscall.ENOTDIR):
		kind = ErrNotDirectory
	}
	return &Error{Op: op, Path: path, Kind: kind, Err: err}
}

// CorruptionError describes damaged bytes in a spool file: a segment
// region whose framing or checksums do not check out, or a file that is not
// a segment at all. What it describes is quarantined, never delivered.
type CorruptionError struct {
	// Path is the file holding the damage.
	Path string
	// Offset is where in the file the damaged region starts; 0 when the
	// whole file is refused.
	Offset int64
	// Err says what is wrong; it wraps an error of the decoder or the
	// file system.
	Err error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("spool: %s at offset %d: %v", e.Path, e.Offset, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }
