package spool

import (
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A segment is a file of records appended one after another, each framed as
// described in codec.go. Records are stored in segments rather than one file
// each because a file per record costs a create and a rename to store it and
// a rename, an open and an unlink to deliver it, kernel work that would bound
// the spool well below the speed of the disk and the drain well below that
// of the network. A segment costs one write a record to store it (three for
// a large one), one read and one small append to deliver it.
//
// A process appends to its own active segment in its owner folder and seals
// it at a size bound. Sealed segments nobody has started on are moved to
// pending/, where any process can claim one by renaming it into its own
// folder. What has been done with the records of a segment is appended to
// a sidecar file beside it (see sidecar.go), so that no segment is ever
// rewritten and a process that takes a segment over knows which of its
// records were delivered already.
//
// Names:
//
//	<first:16 hex>-<uniq:16 hex>.seg                 active (being appended)
//	<first:16 hex>-<uniq:16 hex>-<records>-<bytes>.seg  sealed
//	<first:16 hex>-<uniq:16 hex>.ack                 its sidecar
//
// where first-uniq is the ID of the segment's first record (its key: it
// sorts segments in creation order), records the number of records it
// holds and bytes its valid length. An active segment of a process that
// died may end in a torn record; whoever adopts it scans it for its valid
// length, truncates it there, and seals it under its full name.
const (
	segmentExt = ".seg"
	sidecarExt = ".ack"
)

// segmentName names a sealed segment.
func segmentName(key ID, records int, size int64) string {
	return fmt.Sprintf("%s-%d-%d%s", key, records, size, segmentExt)
}

// activeName names a segment still being appended to.
func activeName(key ID) string { return key.String() + segmentExt }

func sidecarName(key ID) string { return key.String() + sidecarExt }

// segName is what a segment or sidecar file name says.
type segName struct {
	key     ID
	sealed  bool
	records int
	size    int64
	sidecar bool
}

// parseSegName reads a segment or sidecar name; ok is false for any other.
// Only names exactly as segmentName, activeName and sidecarName write them
// are accepted (lowercase hex, decimal without sign or leading zeros), so
// that a parsed name formats back to the file's own name.
func parseSegName(name string) (n segName, ok bool) {
	base, isSeg := strings.CutSuffix(name, segmentExt)
	if !isSeg {
		var isAck bool
		if base, isAck = strings.CutSuffix(name, sidecarExt); !isAck {
			return n, false
		}
		n.sidecar = true
	}
	p0, rest, ok0 := strings.Cut(base, "-")
	p1, rest, ok1 := strings.Cut(rest, "-")
	created, ok2 := parseHex16(p0)
	uniq, ok3 := parseHex16(p1)
	if !ok0 || !ok2 || !ok3 {
		return n, false
	}
	n.key = ID{created: int64(created), uniq: uniq}
	if !ok1 {
		return n, true // active segment, or a sidecar
	}
	if n.sidecar {
		return n, false
	}
	p2, p3, ok4 := strings.Cut(rest, "-")
	records, ok5 := parseDecimal(p2)
	size, ok6 := parseDecimal(p3)
	if !ok4 || !ok5 || !ok6 || records > math.MaxInt32 {
		return n, false
	}
	n.sealed, n.records, n.size = true, int(records), size
	return n, true
}

// parseHex16 reads 16 lowercase hex digits, as %016x writes them.
func parseHex16(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil
}

// parseDecimal reads a non-negative decimal as %d writes it: digits only,
// no leading zero but in "0".
func parseDecimal(s string) (int64, bool) {
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// segment is the index of one segment file. Its fields are guarded by the
// spool's mu, except f's file offset (wmu: only puts append), and the
// sidecar fields, guarded by ackMu. dir and name change only while the
// segment is busy and has no refs.
type segment struct {
	key  ID
	dir  string // folder holding its files now
	name string // the segment file's name now

	records  int   // records and corrupt regions it holds
	bytes    int64 // its valid length; while active, written under wmu and mu
	settled  int   // records settled: delivered, quarantined, dropped
	live     int64 // bytes of the records not settled (estimated until loaded)
	oldest   ID    // of its records not settled, when known before loading
	ackBytes int64 // sidecar size
	active   bool  // this process appends to it
	busy     bool  // being loaded, moved or deleted: left alone meanwhile
	gone     bool  // deleted, or taken by another process

	// A loaded segment is this process's, in its folder: its slots are
	// known and f is open. Unloaded ones wait in pending/.
	f         File
	slots     []slot
	written   []slot // while in pending/: the slots as this process wrote them
	next      int    // no slot below next is waiting
	firstLive int    // no slot below firstLive is unsettled
	// nextTo[d]: no slot below it is waiting for destination d (an index
	// of the spool's dests). A claim that skips destinations walks each
	// accepted one from its own cursor, so the records it skips are
	// passed over once, not at every claim. Missing entries are 0.
	nextTo   []int
	claimedN int // slots claimed or settling now
	refs     int // I/O on f or the sidecar under way outside mu
	dsync    *groupSync

	ackMu      sync.Mutex // guards the five below; taken after mu, never before
	ack        File       // the sidecar, opened on first write
	ackSize    int64      // its length
	ackBroken  bool       // a failed write could not be undone: write no more
	ackPending []byte     // entries not written yet
	ackTimer   *time.Timer
}

type slotState uint8

const (
	slotWaiting slotState = iota
	slotClaimed
	slotSettling // claimed, and being acked, released or quarantined
	slotSettled
)

// slot is one record (or corrupt region) of a loaded segment: small and
// pointer-free, as a segment of small records holds tens of thousands.
type slot struct {
	id       ID
	off      uint32
	size     uint32
	attempts int32
	dest     uint32 // the record's URL, interned in the spool's dests
	state    slotState
}

type slotRef struct {
	seg *segment
	i   int
}

// cursorTo returns the cursor of destination d (see nextTo).
func (seg *segment) cursorTo(d uint32) int {
	if int(d) < len(seg.nextTo) {
		return seg.nextTo[d]
	}
	return 0
}

// setCursorTo sets the cursor of destination d.
func (seg *segment) setCursorTo(d uint32, i int) {
	if int(d) >= len(seg.nextTo) {
		if i == 0 {
			return
		}
		seg.nextTo = append(seg.nextTo, make([]int, int(d)+1-len(seg.nextTo))...)
	}
	seg.nextTo[d] = i
}

func segmentFileSize(f File) (int64, error) {
	if st, ok := f.(interface{ Stat() (fs.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	return f.Seek(0, 2)
}

func (seg *segment) closeFiles() {
	if seg.f != nil {
		_ = seg.f.Close()
		seg.f = nil
	}
	seg.ackMu.Lock()
	if seg.ack != nil {
		_ = seg.ack.Close()
		seg.ack = nil
	}
	// Whatever was not written yet is moot: the segment is deleted, or
	// moveToPending wrote it first.
	seg.ackPending = nil
	if seg.ackTimer != nil {
		seg.ackTimer.Stop()
		seg.ackTimer = nil
	}
	seg.ackMu.Unlock()
}
