package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// A segment this process wrote and shared is loaded again from the slots
// kept at writing, without scanning it; what is on disk still decides what
// is sent. Each case changes the shared segments on disk before they are
// loaded again, and checks what is delivered and counted.
func TestReloadWritten(t *testing.T) {
	const records, size = 30, 4 << 10
	cases := []struct {
		name    string
		damage  func(t *testing.T, dir string, segs []string)
		lost    []int // sequence numbers not delivered
		corrupt uint64
	}{
		{name: "untouched"},
		{
			name: "flipped body byte",
			damage: func(t *testing.T, dir string, segs []string) {
				first := firstRecord(t, segs[0])
				flipByte(t, segs[0], first.off+int64(first.meta.metaEnd)+100)
			},
			lost: []int{firstSeqOf(2)}, corrupt: 1,
		},
		{
			name: "segment cut short",
			damage: func(t *testing.T, dir string, segs []string) {
				fi, err := os.Stat(segs[1])
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(segs[1], fi.Size()-100); err != nil {
					t.Fatal(err)
				}
			},
			lost: []int{lastSeqOf(3)}, corrupt: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Segments of 5 records; the first stays here, the later ones
			// are shared to pending/ as they are sealed.
			s := open(t, dir, withSegmentBytes(5*size))
			put(t, s, recs(records, size)...)
			segs := pendingSegments(t, dir)
			if len(segs) < 4 {
				t.Fatalf("%d segments in pending/, want at least 4", len(segs))
			}
			s.mu.Lock()
			kept := s.writtenSlots
			s.mu.Unlock()
			if kept == 0 {
				t.Fatal("no slots kept for the shared segments")
			}
			if tc.damage != nil {
				tc.damage(t, dir, segs)
			}
			got := claimAll(t, s)
			want := slices.DeleteFunc(seqRange(records), func(n int) bool { return slices.Contains(tc.lost, n) })
			if !slices.Equal(seqs(got), want) {
				t.Fatalf("delivered %v, want %v", seqs(got), want)
			}
			for _, r := range got {
				if !bytes.Equal(r.Body, body(seqOf(r.Body), size)) {
					t.Fatalf("record %d: body differs from what was put", seqOf(r.Body))
				}
				if err := s.Ack(r.ID); err != nil {
					t.Fatal(err)
				}
			}
			if st := s.Stats(); st.Dropped.Corrupt != tc.corrupt || st.Records != 0 {
				t.Fatalf("Stats: %d corrupt, %d waiting; want %d and 0", st.Dropped.Corrupt, st.Records, tc.corrupt)
			}
			s.mu.Lock()
			kept = s.writtenSlots
			s.mu.Unlock()
			if kept != 0 {
				t.Fatalf("%d slots still kept after every segment was loaded", kept)
			}
		})
	}
}

// What another process settled in a shared segment is not sent again by the
// process that wrote it.
func TestReloadWrittenAfterAnotherProcess(t *testing.T) {
	const records, size = 30, 4 << 10
	dir := t.TempDir()
	s := open(t, dir, withSegmentBytes(5*size))
	put(t, s, recs(records, size)...)
	// The first segment stays s's own; the oldest in pending/ goes to
	// other, which delivers two records and gives the rest back.
	other := open(t, dir, withSegmentBytes(5*size))
	taken, err := other.Claim(3)
	if err != nil || len(taken) != 3 {
		t.Fatalf("other.Claim(3) = %d records, %v", len(taken), err)
	}
	for _, r := range taken[:2] {
		if err := other.Ack(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	acked := seqs(taken[:2])
	got := seqs(claimAll(t, s))
	want := slices.DeleteFunc(seqRange(records), func(n int) bool { return slices.Contains(acked, n) })
	if !slices.Equal(got, want) {
		t.Fatalf("after the other process delivered %v: handed out %v, want %v", acked, got, want)
	}
}

func recs(n, size int) []*Record {
	out := make([]*Record, n)
	for i := range out {
		out[i] = rec(i, size)
	}
	return out
}

func seqRange(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// Segments hold 5 records here: segment k (from 1) starts with record
// 5(k-1) and ends with 5k-1.
func firstSeqOf(k int) int { return 5 * (k - 1) }
func lastSeqOf(k int) int  { return 5*k - 1 }

// pendingSegments lists the segment files in pending/, oldest first.
func pendingSegments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "pending", "*"+segmentExt))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func firstRecord(t *testing.T, path string) scanned {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var first *scanned
	if err := scanSegment(f, fi.Size(), true, func(sc scanned) {
		if first == nil {
			first = &sc
		}
	}); err != nil || first == nil || first.err != nil {
		t.Fatalf("scanning %s: %v, %+v", path, err, first)
	}
	return *first
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
