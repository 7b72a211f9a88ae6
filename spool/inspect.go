package spool

import (
	"encoding/binary"
	"io"
	"os"
)

// These read a spool folder without opening it, for tools that report on a
// spool another process is using. The layout they rely on is stable:
// records wait in pending/, are claimed into owners/<owner>/claimed/, and
// are set aside in quarantine/ (prefixed with the time they arrived there,
// each with a .why file).

// RecordName is what a record file's name says.
type RecordName struct {
	ID       ID
	Size     int64 // bytes on disk
	Attempts int
}

// ParseRecordName reads a record file name; ok is false for any other name.
func ParseRecordName(name string) (n RecordName, ok bool) {
	e, ok := parseName(name)
	if !ok {
		return n, false
	}
	return RecordName{ID: e.id, Size: e.size, Attempts: int(e.attempts)}, true
}

// ReadRecordMeta reads and verifies the header and meta block of the record
// file at path, and nothing of its body: the Record has no Body, ID or
// Attempts (those are in the name), and bodySize is what the header says.
func ReadRecordMeta(path string) (rec *Record, bodySize int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	head := make([]byte, headerSize)
	if _, err := io.ReadFull(f, head); err != nil {
		return nil, 0, &CorruptionError{Path: path, Err: corruptf("short header: %v", err)}
	}
	// Bounded before allocating; decodeMeta checks the rest.
	metaLen := int(binary.LittleEndian.Uint32(head[16:]))
	if metaLen > maxMetaSize {
		return nil, 0, &CorruptionError{Path: path, Err: corruptf("meta length %d over the limit", metaLen)}
	}
	buf := make([]byte, headerSize+metaLen+crcSize)
	copy(buf, head)
	if _, err := io.ReadFull(f, buf[headerSize:]); err != nil {
		return nil, 0, &CorruptionError{Path: path, Err: corruptf("truncated in meta: %v", err)}
	}
	d, bodyLen, err := decodeMeta(buf)
	if err != nil {
		return nil, 0, &CorruptionError{Path: path, Err: err}
	}
	return &d.Record, bodyLen, nil
}
