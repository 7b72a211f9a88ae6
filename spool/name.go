package spool

import (
	"fmt"
	"strconv"
	"strings"
)

// A record's file name carries what opening a spool needs to know without
// reading the file: its ID (creation order), its size on disk and how many
// attempts it has had. Opening a spool is therefore one directory listing,
// however many records it holds; contents are verified when a record is
// claimed, which reads it anyway.
//
//	<created:16 hex>-<uniq:16 hex>-<size>-<attempts>.rec
const recordExt = ".rec"

// entry is the in-memory index of one record: small and pointer-free, so
// that a spool of half a million records costs a few megabytes.
type entry struct {
	id       ID
	size     int64
	attempts int32
}

func (e entry) name() string {
	return fmt.Sprintf("%016x-%016x-%d-%d%s", uint64(e.id.created), e.id.uniq, e.size, e.attempts, recordExt)
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
