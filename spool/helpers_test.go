package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the injected clock of every test that depends on time: it
// moves only when the test says so.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var quiet = slog.New(slog.DiscardHandler)

// open opens a spool that is closed when the test ends. Logs are discarded
// and rescans are off unless opts say otherwise.
func open(t testing.TB, dir string, opts ...Option) *Spool {
	t.Helper()
	s, err := Open(dir, append([]Option{WithLogger(quiet), WithRescanInterval(-1)}, opts...)...)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// body returns the body of record number seq: its size and content derive
// from seq, so that a delivered record can be checked against what was put.
// The size is fixed, or when fixed is 0 ranges from 100 B to 200 KiB,
// log-uniformly.
func body(seq int, fixed int) []byte {
	sum := sha256.Sum256(binary.LittleEndian.AppendUint64(nil, uint64(seq)))
	size := bodySize(seq, fixed)
	b := bytes.Repeat(sum[:], size/len(sum)+1)[:size]
	if size >= 8 {
		binary.LittleEndian.PutUint64(b, uint64(seq))
	}
	return b
}

func bodySize(seq int, fixed int) int {
	if fixed != 0 {
		return fixed
	}
	sum := sha256.Sum256(binary.LittleEndian.AppendUint64(nil, uint64(seq)))
	u := float64(binary.LittleEndian.Uint16(sum[:2])) / 65535
	return int(100 * math.Pow(2, u*11))
}

// seqOf reads the sequence number back from a body made by body.
func seqOf(b []byte) int {
	if len(b) < 8 {
		return -1
	}
	return int(binary.LittleEndian.Uint64(b))
}

// rec returns a record with body(seq, size).
func rec(seq, size int) *Record {
	return &Record{
		URL:         "https://collector.example:4318/v1/traces",
		ContentType: "application/x-protobuf",
		Signal:      SignalTraces,
		Body:        body(seq, size),
	}
}

// put stores records and returns them (with their IDs set).
func put(t testing.TB, s *Spool, rs ...*Record) []*Record {
	t.Helper()
	for _, r := range rs {
		if err := s.Put(r); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	return rs
}

// claimAll claims until nothing is left and returns what was delivered.
func claimAll(t testing.TB, s *Spool) []*Record {
	t.Helper()
	var out []*Record
	for {
		rs, err := s.Claim(64)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
	}
}

func seqs(rs []*Record) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = seqOf(r.Body)
	}
	return out
}

func ids(rs []*Record) []ID {
	out := make([]ID, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// files lists the regular files under dir/sub (recursively), relative to
// dir, sorted.
func files(t testing.TB, dir string, subs ...string) []string {
	t.Helper()
	var out []string
	for _, sub := range subs {
		root := filepath.Join(dir, sub)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.Type().IsRegular() {
				rel, _ := filepath.Rel(dir, p)
				out = append(out, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(out)
	return out
}

// stored lists the records the folder holds and has not settled, as Walk
// finds them, failing the test on damaged regions; where is "" for all,
// pendingDir for those waiting there, ownersDir for those in owner folders.
func stored(t testing.TB, dir string, where string) []StoredRecord {
	t.Helper()
	var out []StoredRecord
	err := Walk(dir, func(r StoredRecord, err error) error {
		if err != nil {
			t.Errorf("Walk: %v", err)
			return nil
		}
		if where == "" || (where == pendingDir) == (r.Owner == "") {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// quarantinedRecords lists the record files in the quarantine.
func quarantinedRecords(t testing.TB, dir string) []string {
	t.Helper()
	return slices.DeleteFunc(files(t, dir, quarantineDir), func(p string) bool { return strings.HasSuffix(p, whyExt) })
}

// diskBytes adds up the sizes of the regular files under dir/subs.
func diskBytes(t testing.TB, dir string, subs ...string) int64 {
	t.Helper()
	var n int64
	for _, p := range files(t, dir, subs...) {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// checkBytes fails unless Stats agrees with the disk: DiskBytes with what is
// under pending/ and owners/, Bytes with the records not settled there,
// QuarantineBytes with quarantine/.
func checkBytes(t testing.TB, s *Spool) {
	t.Helper()
	s.flushSidecars()
	st := s.Stats()
	if got := diskBytes(t, s.Dir(), pendingDir, ownersDir); st.DiskBytes != got {
		t.Errorf("Stats().DiskBytes = %d, files under pending/ and owners/ hold %d", st.DiskBytes, got)
	}
	var live int64
	for _, r := range stored(t, s.Dir(), "") {
		live += r.Size
	}
	if st.Bytes != live {
		t.Errorf("Stats().Bytes = %d, records not settled hold %d", st.Bytes, live)
	}
	if got := diskBytes(t, s.Dir(), quarantineDir); st.QuarantineBytes != got {
		t.Errorf("Stats().QuarantineBytes = %d, files under quarantine/ hold %d", st.QuarantineBytes, got)
	}
}

// grepDir returns the files under dir that contain needle anywhere.
func grepDir(t testing.TB, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	for _, p := range files(t, dir, ".") {
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, needle) {
			hits = append(hits, p)
		}
	}
	return hits
}

// snapshot maps every file under dir to its content.
func snapshot(t testing.TB, dir string, subs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range files(t, dir, subs...) {
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		out[p] = string(data)
	}
	return out
}

func isErr(t testing.TB, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("error %v: errors.Is(err, %v) is false", err, target)
		}
	}
}

// endsTorn tells whether the segment at path ends in a partial record.
func endsTorn(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false // an empty segment deleted meanwhile
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	torn := false
	if err := scanSegment(f, fi.Size(), false, func(sc scanned) { torn = sc.err != nil && sc.off+sc.size == fi.Size() }); err != nil {
		t.Fatal(err)
	}
	return torn
}
