package spool

import (
	"encoding/binary"
	"io"
	"os"
	"strconv"
	"strings"
)

// Helpers that read the quarantine's files, for tests only.

// RecordName is what a quarantined record file's name says, after the
// quarantine's time prefix.
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

// parseName is the inverse of entry.name; ok is false for any other name.
func parseName(name string) (e entry, ok bool) {
	base, found := strings.CutSuffix(name, recordExt)
	if !found {
		return e, false
	}
	// strings.Cut rather than Split: no allocation, for a spool of half a
	// million records is parsed at every Open.
	p0, rest, ok0 := strings.Cut(base, "-")
	p1, rest, ok1 := strings.Cut(rest, "-")
	p2, p3, ok2 := strings.Cut(rest, "-")
	if !ok0 || !ok1 || !ok2 || strings.Contains(p3, "-") || len(p0) != 16 || len(p1) != 16 {
		return e, false
	}
	created, err1 := strconv.ParseUint(p0, 16, 64)
	uniq, err2 := strconv.ParseUint(p1, 16, 64)
	size, err3 := strconv.ParseInt(p2, 10, 64)
	attempts, err4 := strconv.ParseInt(p3, 10, 32)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || size < 0 || attempts < 0 {
		return e, false
	}
	return entry{id: ID{created: int64(created), uniq: uniq}, size: size, attempts: int32(attempts)}, true
}
