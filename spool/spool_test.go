package spool

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPutClaimAckRelease(t *testing.T) {
	for _, mode := range []SyncMode{SyncProcess, SyncDurable} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			clock := newClock()
			t0 := clock.Now()
			dir := filepath.Join(t.TempDir(), "spool")
			s := open(t, dir, WithSync(mode), WithClock(clock.Now))

			var in []*Record
			for seq := 1; seq <= 3; seq++ {
				r := &Record{
					URL:             "https://collector.example:4318/v1/metrics",
					ContentType:     "application/x-protobuf",
					ContentEncoding: "gzip",
					Signal:          SignalMetrics,
					Body:            body(seq, 40<<10*(seq-1)+100), // one write and three
				}
				put(t, s, r)
				if r.ID == (ID{}) || !r.Created.Equal(clock.Now()) || !r.ID.Created().Equal(clock.Now()) {
					t.Fatalf("Put set ID %v, Created %v; want an ID created at %v", r.ID, r.Created, clock.Now())
				}
				in = append(in, r)
				clock.Advance(time.Second)
			}
			st := s.Stats()
			if st.Records != 3 || st.Stored != 3 || st.Claimed != 0 || !st.Oldest.Equal(t0) {
				t.Fatalf("after 3 puts: %+v", st)
			}
			if n := len(stored(t, dir, "")); n != 3 {
				t.Fatalf("%d records on disk, want 3", n)
			}
			checkBytes(t, s)

			got, err := s.Claim(2)
			if err != nil || len(got) != 2 {
				t.Fatalf("Claim(2) = %d records, %v; want 2", len(got), err)
			}
			for i, r := range got {
				want := in[i]
				if r.ID != want.ID || r.URL != want.URL || r.ContentType != want.ContentType ||
					r.ContentEncoding != want.ContentEncoding || r.Signal != want.Signal ||
					!r.Created.Equal(want.Created) || r.Attempts != 0 || !bytes.Equal(r.Body, want.Body) || r.Header != nil {
					t.Errorf("claimed %d: %+v\nput %+v", i, r, want)
				}
			}
			st = s.Stats()
			if st.Records != 3 || st.Claimed != 2 || !st.Oldest.Equal(t0) {
				t.Errorf("after claiming 2: %+v", st)
			}
			checkBytes(t, s)

			if err := s.Ack(got[0].ID); err != nil {
				t.Fatalf("Ack: %v", err)
			}
			if err := s.Ack(got[0].ID); !errors.Is(err, ErrUnknownRecord) {
				t.Errorf("second Ack = %v, want ErrUnknownRecord", err)
			}
			if err := s.Release(got[0].ID); !errors.Is(err, ErrUnknownRecord) {
				t.Errorf("Release after Ack = %v, want ErrUnknownRecord", err)
			}
			st = s.Stats()
			if st.Records != 2 || st.Claimed != 1 || st.Acked != 1 || !st.Oldest.Equal(t0.Add(time.Second)) {
				t.Errorf("after Ack: %+v", st)
			}
			checkBytes(t, s)

			if err := s.Release(got[1].ID); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if err := s.Release(got[1].ID); !errors.Is(err, ErrUnknownRecord) {
				t.Errorf("second Release = %v, want ErrUnknownRecord", err)
			}
			st = s.Stats()
			if st.Records != 2 || st.Claimed != 0 || st.Released != 1 {
				t.Errorf("after Release: %+v", st)
			}
			checkBytes(t, s)

			got = claimAll(t, s)
			if !slices.Equal(seqs(got), []int{2, 3}) || got[0].Attempts != 1 || got[1].Attempts != 0 {
				t.Fatalf("claimed seqs %v attempts %d,%d; want [2 3] with 1,0", seqs(got), got[0].Attempts, got[1].Attempts)
			}
			for _, r := range got {
				if err := s.Release(r.ID); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = open(t, dir, WithSync(mode), WithClock(clock.Now))
			if st := s.Stats(); st.Records != 2 || !st.Oldest.Equal(t0.Add(time.Second)) {
				t.Errorf("after reopen: %+v", st)
			}
			checkBytes(t, s)
			got = claimAll(t, s)
			if !slices.Equal(seqs(got), []int{2, 3}) || got[0].Attempts != 2 || got[1].Attempts != 1 {
				t.Fatalf("after reopen claimed seqs %v; want [2 3] with attempts 2,1", seqs(got))
			}
			for i, r := range got {
				want := in[i+1]
				if r.ID != want.ID || !r.Created.Equal(want.Created) || !bytes.Equal(r.Body, want.Body) || r.ContentEncoding != "gzip" {
					t.Errorf("after reopen: %+v, want %+v", r, want)
				}
				if err := s.Ack(r.ID); err != nil {
					t.Fatal(err)
				}
			}
			if st := s.Stats(); st.Records != 0 || st.Bytes != 0 || !st.Oldest.IsZero() || st.Acked != 2 {
				t.Errorf("all acked: %+v", st)
			}
			s.Flush()
			if f := stored(t, dir, ""); len(f) != 0 {
				t.Errorf("records left after acking everything: %v", f)
			}
			s.Close()
			if f := files(t, dir, pendingDir, ownersDir); len(f) != 0 {
				t.Errorf("files left after acking everything and closing: %v", f)
			}
		})
	}
}

// TestPutClaimed: a record stored already claimed is the caller's to
// settle; it is not handed out by Claim, and Close gives it back.
func TestPutClaimed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	ready := func() bool {
		select {
		case <-s.Ready():
			return true
		default:
			return false
		}
	}
	a, b, c := rec(1, 100), rec(2, 200), rec(3, 300)
	for _, r := range []*Record{a, b, c} {
		if err := s.PutClaimed(r); err != nil || r.ID == (ID{}) {
			t.Fatalf("PutClaimed = %v, ID %v", err, r.ID)
		}
	}
	if ready() {
		t.Error("Ready signalled for records already claimed")
	}
	st := s.Stats()
	if st.Records != 3 || st.Claimed != 3 || st.Stored != 3 {
		t.Errorf("Stats %+v", st)
	}
	if n := len(stored(t, dir, ownersDir)); n != 3 {
		t.Errorf("%d records in this process's folder, want 3", n)
	}
	checkBytes(t, s)
	if rs, _ := s.Claim(10); len(rs) != 0 {
		t.Fatalf("Claim handed out %d records already claimed", len(rs))
	}
	if err := s.Ack(a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(b.ID); err != nil {
		t.Fatal(err)
	}
	if !ready() {
		t.Error("Ready not signalled after Release")
	}
	rs, _ := s.Claim(10)
	if len(rs) != 1 || rs[0].ID != b.ID || rs[0].Attempts != 1 || !bytes.Equal(rs[0].Body, b.Body) {
		t.Fatalf("after Release, Claim = %v", rs)
	}
	s.Close()
	s = open(t, dir)
	got := claimAll(t, s)
	if !slices.Equal(seqs(got), []int{2, 3}) || got[1].Attempts != 0 {
		t.Errorf("after Close and reopen: %v", seqs(got))
	}
}

// TestAttempts: each Release adds one attempt, kept in the sidecar, so it
// survives reopening; Close and adoption add none.
func TestAttempts(t *testing.T) {
	for _, releases := range []int{0, 1, 2, 5} {
		t.Run(fmt.Sprint(releases), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir)
			put(t, s, rec(1, 100))
			for i := range releases {
				rs, err := s.Claim(1)
				if err != nil || len(rs) != 1 || rs[0].Attempts != i {
					t.Fatalf("release %d: Claim = %v, %v; want attempts %d", i, rs, err, i)
				}
				if err := s.Release(rs[0].ID); err != nil {
					t.Fatal(err)
				}
				if i%2 == 1 { // reopen every other time
					s.Close()
					s = open(t, dir)
				}
			}
			// Claimed and returned by Close: no attempt.
			if rs, _ := s.Claim(1); len(rs) != 1 {
				t.Fatal("nothing to claim")
			}
			s.Close()
			if rs := stored(t, dir, pendingDir); len(rs) != 1 || rs[0].Attempts != releases {
				t.Errorf("records in pending/ %+v, want one with %d attempts", rs, releases)
			}
			s = open(t, dir)
			rs, err := s.Claim(1)
			if err != nil || len(rs) != 1 || rs[0].Attempts != releases || seqOf(rs[0].Body) != 1 {
				t.Fatalf("after reopen: %v, %v; want attempts %d", rs, err, releases)
			}
			if st := s.Stats(); st.Released != 0 {
				t.Errorf("Released counts this process only: %d", st.Released)
			}
		})
	}
}

func TestQuarantine(t *testing.T) {
	t.Parallel()
	clock := newClock()
	dir := t.TempDir()
	s := open(t, dir, WithClock(clock.Now))
	put(t, s, rec(1, 500), rec(2, 600), rec(3, 700))
	rs, _ := s.Claim(2)
	const reason = "HTTP 400: invalid protobuf"
	if err := s.Quarantine(rs[0].ID, reason); err != nil {
		t.Fatal(err)
	}
	if err := s.Quarantine(rs[0].ID, reason); !errors.Is(err, ErrUnknownRecord) {
		t.Errorf("second Quarantine = %v, want ErrUnknownRecord", err)
	}
	if err := s.Ack(rs[0].ID); !errors.Is(err, ErrUnknownRecord) {
		t.Errorf("Ack of a quarantined record = %v, want ErrUnknownRecord", err)
	}
	if err := s.Release(rs[1].ID); err != nil {
		t.Fatal(err)
	}

	check := func(s *Spool) {
		t.Helper()
		q := files(t, dir, quarantineDir)
		if len(q) != 2 {
			t.Fatalf("quarantine holds %v, want a record and its .why", q)
		}
		var recFile, why string
		for _, p := range q {
			switch {
			case strings.HasSuffix(p, recordExt+whyExt):
				why = p
			case strings.HasSuffix(p, recordExt):
				recFile = p
			}
		}
		if recFile == "" || why != recFile+whyExt || !strings.Contains(recFile, rs[0].ID.String()) {
			t.Fatalf("quarantine holds %v; want the record %v and its .why", q, rs[0].ID)
		}
		data, _ := os.ReadFile(filepath.Join(dir, why))
		if !strings.Contains(string(data), reason) {
			t.Errorf(".why says %q, want %q", data, reason)
		}
		data, _ = os.ReadFile(filepath.Join(dir, recFile))
		if r, err := decodeRecord(data); err != nil || !bytes.Equal(r.Body, rs[0].Body) {
			t.Errorf("quarantined file does not hold the record: %v", err)
		}
		st := s.Stats()
		if st.Quarantined != 1 || st.Records != 2 {
			t.Errorf("Stats: %+v; want 1 quarantined, 2 records", st)
		}
		checkBytes(t, s)
		got := claimAll(t, s)
		if !slices.Equal(seqs(got), []int{2, 3}) {
			t.Errorf("claimed %v, want [2 3]: a quarantined record is never claimed", seqs(got))
		}
		for _, r := range got {
			s.Release(r.ID)
		}
	}
	check(s)
	s.Close()
	check(open(t, dir, WithClock(clock.Now)))
	// A spool that rescans does not pick it up either.
	clock.Advance(time.Hour)
	s = open(t, dir, WithClock(clock.Now), WithRescanInterval(0))
	claimAll(t, s)
	clock.Advance(time.Hour)
	if rs, err := s.Claim(10); len(rs) != 0 || err != nil {
		t.Errorf("rescan found %d records (%v)", len(rs), err)
	}
}

// TestQuarantineCap: past its cap the quarantine loses its oldest files,
// counted, and its byte count stays equal to the disk, also across reopen.
func TestQuarantineCap(t *testing.T) {
	t.Parallel()
	clock := newClock()
	dir := t.TempDir()
	one := rec(0, 1000).Size() + int64(len("reason 0\n"))
	opts := []Option{WithClock(clock.Now), WithQuarantineMaxBytes(2*one + one/2)}
	s := open(t, dir, opts...)
	for seq := range 6 {
		put(t, s, rec(seq, 1000))
	}
	quarantine := func(s *Spool, n int) []ID {
		t.Helper()
		rs, err := s.Claim(n)
		if err != nil || len(rs) != n {
			t.Fatalf("Claim(%d) = %d, %v", n, len(rs), err)
		}
		for _, r := range rs {
			clock.Advance(time.Second)
			if err := s.Quarantine(r.ID, fmt.Sprintf("reason %d", seqOf(r.Body))); err != nil {
				t.Fatal(err)
			}
		}
		return ids(rs)
	}
	kept := func() []string {
		var out []string
		for _, p := range quarantinedRecords(t, dir) {
			data, _ := os.ReadFile(filepath.Join(dir, p))
			r, err := decodeRecord(data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(seqOf(r.Body)))
		}
		return out
	}
	quarantine(s, 4)
	st := s.Stats()
	if st.Quarantined != 2 || st.Dropped.QuarantineEvicted != 2 {
		t.Errorf("after 4 into a quarantine for 2: %d quarantined, %d overflow", st.Quarantined, st.Dropped.QuarantineEvicted)
	}
	if got := kept(); !slices.Equal(got, []string{"2", "3"}) {
		t.Errorf("quarantine keeps %v, want the newest [2 3]", got)
	}
	if n := len(files(t, dir, quarantineDir)); n != 4 {
		t.Errorf("%d files in quarantine/, want 2 records and 2 .why", n)
	}
	checkBytes(t, s)
	s.Close()

	s = open(t, dir, opts...)
	if st := s.Stats(); st.Quarantined != 2 {
		t.Errorf("after reopen %d quarantined, want 2", st.Quarantined)
	}
	checkBytes(t, s)
	quarantine(s, 1)
	st = s.Stats()
	if st.Quarantined != 2 || st.Dropped.QuarantineEvicted != 1 {
		t.Errorf("after reopen and 1 more: %d quarantined, %d overflow; want 2, 1", st.Quarantined, st.Dropped.QuarantineEvicted)
	}
	if got := kept(); !slices.Equal(got, []string{"3", "4"}) {
		t.Errorf("quarantine keeps %v, want [3 4]", got)
	}
	checkBytes(t, s)

	// A zero cap keeps nothing.
	s.Close()
	s = open(t, dir, WithClock(clock.Now), WithQuarantineMaxBytes(0))
	quarantine(s, 1)
	if st := s.Stats(); st.Quarantined != 0 || st.Dropped.QuarantineEvicted != 3 || st.QuarantineBytes != 0 {
		t.Errorf("zero cap: %+v", st)
	}
	if f := files(t, dir, quarantineDir); len(f) != 0 {
		t.Errorf("zero cap left %v", f)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	clock := newClock()
	t0 := clock.Now()
	dir := t.TempDir()
	s := open(t, dir, WithClock(clock.Now))
	var claimed []*Record
	steps := []struct {
		name    string
		do      func()
		records int
		claimed int
		oldest  time.Duration // from t0; -1 for none
	}{
		{"empty", func() {}, 0, 0, -1},
		{"put", func() { put(t, s, rec(1, 100)); clock.Advance(time.Minute) }, 1, 0, 0},
		{"put more", func() {
			put(t, s, rec(2, 50<<10))
			clock.Advance(time.Minute)
			put(t, s, rec(3, 0))
		}, 3, 0, 0},
		{"claim oldest", func() { claimed, _ = s.Claim(1) }, 3, 1, 0},
		{"claim next", func() {
			more, _ := s.Claim(1)
			claimed = append(claimed, more...)
		}, 3, 2, 0},
		{"ack oldest", func() { s.Ack(claimed[0].ID) }, 2, 1, time.Minute},
		{"release", func() { s.Release(claimed[1].ID) }, 2, 0, time.Minute},
		{"claim all and quarantine one", func() {
			claimed, _ = s.Claim(10)
			s.Quarantine(claimed[0].ID, "bad")
		}, 1, 1, 2 * time.Minute},
		{"ack last", func() { s.Ack(claimed[1].ID) }, 0, 0, -1},
	}
	for _, step := range steps {
		step.do()
		st := s.Stats()
		want := time.Time{}
		if step.oldest >= 0 {
			want = t0.Add(step.oldest)
		}
		if st.Records != step.records || st.Claimed != step.claimed || !st.Oldest.Equal(want) {
			t.Errorf("%s: Records %d Claimed %d Oldest %v; want %d %d %v", step.name, st.Records, st.Claimed, st.Oldest, step.records, step.claimed, want)
		}
		if step.oldest >= 0 {
			if age := st.OldestAge(t0.Add(time.Hour)); age != time.Hour-step.oldest {
				t.Errorf("%s: OldestAge = %v", step.name, age)
			}
		} else if age := st.OldestAge(t0); age != 0 {
			t.Errorf("%s: OldestAge of an empty spool = %v", step.name, age)
		}
		checkBytes(t, s)
	}
	st := s.Stats()
	if st.Stored != 3 || st.Acked != 2 || st.Released != 1 || st.Quarantined != 1 || st.Dropped.Total() != 0 {
		t.Errorf("counters: %+v", st)
	}
	d := Drops{Full: 1, Evicted: 2, Disk: 3, Expired: 4, Corrupt: 5, TooLarge: 6, Closed: 7, QuarantineEvicted: 8}
	if d.Total() != 36 {
		t.Errorf("Drops.Total = %d, want 36", d.Total())
	}
}

// TestFullPolicies: three 1000-byte records fill the cap; then a fourth
// comes.
func TestFullPolicies(t *testing.T) {
	size := rec(0, 1000).Size()
	cases := []struct {
		name        string
		policy      FullPolicy
		cap         int64
		claim       int // records claimed (oldest first) before the fourth put
		newBody     int
		wantErr     error
		wantSeqs    []int // what is left, claimed ones included
		full, evict uint64
	}{
		{"drop-newest room", DropNewest, 4 * size, 0, 1000, nil, []int{1, 2, 3, 4}, 0, 0},
		{"drop-newest full", DropNewest, 3 * size, 0, 1000, ErrFull, []int{1, 2, 3}, 1, 0},
		{"drop-newest full claimed", DropNewest, 3 * size, 2, 1000, ErrFull, []int{1, 2, 3}, 1, 0},
		{"drop-oldest one", DropOldest, 3 * size, 0, 1000, nil, []int{2, 3, 4}, 0, 1},
		{"drop-oldest two", DropOldest, 3 * size, 0, 2000, nil, []int{3, 4}, 0, 2},
		{"drop-oldest skips claimed", DropOldest, 3 * size, 1, 1000, nil, []int{1, 3, 4}, 0, 1},
		{"drop-oldest all claimed", DropOldest, 3 * size, 3, 1000, ErrFull, []int{1, 2, 3}, 1, 0},
		{"drop-oldest not enough waiting", DropOldest, 3 * size, 2, 2000, ErrFull, []int{1, 2, 3}, 1, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir, WithMaxBytes(c.cap), WithFullPolicy(c.policy))
			put(t, s, rec(1, 1000), rec(2, 1000), rec(3, 1000))
			if c.claim > 0 {
				if rs, _ := s.Claim(c.claim); len(rs) != c.claim {
					t.Fatalf("claimed %d, want %d", len(rs), c.claim)
				}
			}
			before := snapshot(t, dir, pendingDir, ownersDir)
			err := s.Put(rec(4, c.newBody))
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("fourth Put = %v, want %v", err, c.wantErr)
			}
			if c.wantErr != nil {
				if after := snapshot(t, dir, pendingDir, ownersDir); !reflect.DeepEqual(before, after) {
					t.Errorf("a refused Put changed the stored files")
				}
			}
			st := s.Stats()
			if st.Dropped.Full != c.full || st.Dropped.Evicted != c.evict || st.Records != len(c.wantSeqs) || st.Dropped.Disk != 0 {
				t.Errorf("Stats %+v; want Full %d Evicted %d Records %d", st, c.full, c.evict, len(c.wantSeqs))
			}
			if st.Bytes > c.cap {
				t.Errorf("Bytes %d over the cap %d", st.Bytes, c.cap)
			}
			checkBytes(t, s)
			s.Close()
			s = open(t, dir)
			got := claimAll(t, s)
			for _, r := range got {
				size := 1000
				if seqOf(r.Body) == 4 {
					size = c.newBody
				}
				if !bytes.Equal(r.Body, body(seqOf(r.Body), size)) {
					t.Errorf("seq %d: body differs from the one put", seqOf(r.Body))
				}
			}
			gotSeqs := seqs(got)
			slices.Sort(gotSeqs)
			if !slices.Equal(gotSeqs, c.wantSeqs) {
				t.Errorf("left %v, want %v", gotSeqs, c.wantSeqs)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	size := rec(0, 1000).Size()
	many := http.Header{}
	for i := range maxHeaders + 1 {
		many.Add("X-Tenant", fmt.Sprint(i))
	}
	cases := []struct {
		name    string
		cap     int64
		r       *Record
		allow   []string
		wantErr error
	}{
		{"exactly the cap", size, rec(1, 1000), nil, nil},
		{"one byte over the cap", size - 1, rec(1, 1000), nil, ErrTooLarge},
		{"over MaxBodySize", 1 << 40, &Record{Body: make([]byte, MaxBodySize+1)}, nil, ErrTooLarge},
		{"URL over the meta limit", 1 << 30, &Record{URL: "https://h/" + strings.Repeat("a", maxMetaSize), Body: []byte("x")}, nil, ErrTooLarge},
		{"too many headers", 1 << 30, &Record{Header: many, Body: []byte("x")}, []string{"X-Tenant"}, ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir, WithMaxBytes(c.cap), WithHeaderAllowList(c.allow...))
			err := s.Put(c.r)
			st := s.Stats()
			if c.wantErr == nil {
				if err != nil || st.Records != 1 {
					t.Fatalf("Put = %v, Records %d; want it stored", err, st.Records)
				}
				return
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("Put = %v, want %v", err, c.wantErr)
			}
			if st.Dropped.TooLarge != 1 || st.Records != 0 || st.Dropped.Disk != 0 || st.Bytes != 0 {
				t.Errorf("Stats %+v; want 1 TooLarge and nothing stored", st)
			}
			if f := files(t, dir, pendingDir, ownersDir); slices.ContainsFunc(f, func(p string) bool { return !strings.HasSuffix(p, lockExt) }) {
				t.Errorf("files left: %v", f)
			}
		})
	}
}

// TestMaxAge: records are dropped when claimed past the maximum age of the
// injected clock, counted, never returned, also after reopening (creation
// times come from the file names).
func TestMaxAge(t *testing.T) {
	cases := []struct {
		name    string
		maxAge  time.Duration
		at      time.Duration // claim time, from the first put
		want    []int
		expired uint64
	}{
		{"none old", time.Hour, 59 * time.Minute, []int{1, 2, 3}, 0},
		{"exactly the max age", time.Hour, time.Hour, []int{1, 2, 3}, 0},
		{"one nanosecond over", time.Hour, time.Hour + 1, []int{2, 3}, 1},
		{"two expired", time.Hour, 90*time.Minute + 1, []int{3}, 2},
		{"all expired", time.Hour, 3 * time.Hour, nil, 3},
		{"no max age", 0, 10 * 365 * 24 * time.Hour, []int{1, 2, 3}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clock := newClock()
			t0 := clock.Now()
			dir := t.TempDir()
			opts := []Option{WithClock(clock.Now), WithMaxAge(c.maxAge)}
			s := open(t, dir, opts...)
			put(t, s, rec(1, 100))
			clock.Advance(30 * time.Minute)
			put(t, s, rec(2, 100))
			clock.Advance(29 * time.Minute)
			put(t, s, rec(3, 100))
			s.Close()

			clock.Advance(t0.Add(c.at).Sub(clock.Now()))
			s = open(t, dir, opts...)
			var got []*Record
			for { // one at a time: expired records ahead must not stop Claim
				rs, err := s.Claim(1)
				if err != nil {
					t.Fatal(err)
				}
				if len(rs) == 0 {
					break
				}
				got = append(got, rs...)
			}
			if !slices.Equal(seqs(got), c.want) {
				t.Errorf("claimed %v, want %v", seqs(got), c.want)
			}
			st := s.Stats()
			if st.Dropped.Expired != c.expired || st.Records != len(c.want) {
				t.Errorf("Expired %d Records %d; want %d %d", st.Dropped.Expired, st.Records, c.expired, len(c.want))
			}
			s.flushSidecars()
			if n := len(stored(t, dir, "")); n != len(c.want) {
				t.Errorf("%d record files on disk, want %d", n, len(c.want))
			}
			checkBytes(t, s)
		})
	}
}

func TestHeaderAllowList(t *testing.T) {
	secrets := http.Header{
		"Authorization":       {"Bearer s3cr3t-t0ken-AUTHZ"},
		"Proxy-Authorization": {"Basic cHJveHk6UFJPWFktU0VDUkVU"},
		"Cookie":              {"session=C00KIE-SECRET"},
	}
	cases := []struct {
		name  string
		allow []string
		in    http.Header
		want  http.Header
	}{
		{"nothing allowed", nil, http.Header{"X-Tenant": {"a"}}, nil},
		{"allowed, any case", []string{"x-tenant"}, http.Header{"X-Tenant": {"a", "b"}, "X-Other": {"c"}}, http.Header{"X-Tenant": {"a", "b"}}},
		{"credentials listed", []string{"Authorization", "proxy-authorization", "COOKIE", "X-Tenant"}, http.Header{"X-Tenant": {"t"}}, http.Header{"X-Tenant": {"t"}}},
		{"only credentials listed", []string{"Authorization", "Cookie", "Proxy-Authorization"}, http.Header{}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir, WithHeaderAllowList(c.allow...))
			in := c.in.Clone()
			for k, v := range secrets {
				in[k] = v
			}
			orig := in.Clone()
			r := &Record{URL: "https://h:4318/v1/logs", Header: in, Body: []byte("body")}
			put(t, s, r)
			if !reflect.DeepEqual(r.Header, orig) {
				t.Errorf("Put changed the caller's headers")
			}
			rs, _ := s.Claim(1)
			if len(rs) != 1 || !reflect.DeepEqual(rs[0].Header, c.want) {
				t.Fatalf("stored headers %v, want %v", rs[0].Header, c.want)
			}
			// Through every state a record file can be in.
			s.Release(rs[0].ID)
			put(t, s, &Record{Header: in, Body: []byte("2")})
			rs, _ = s.Claim(2)
			s.Quarantine(rs[0].ID, "inspect")
			s.Close()
			for _, vs := range secrets {
				if hits := grepDir(t, dir, []byte(vs[0])); len(hits) > 0 {
					t.Errorf("%q found on disk in %v", vs[0], hits)
				}
			}
			if len(c.want) > 0 {
				if hits := grepDir(t, dir, []byte(c.want["X-Tenant"][0])); len(hits) == 0 {
					t.Error("allowed header not on disk: the grep is broken")
				}
			}
		})
	}
}

func TestURLCredentials(t *testing.T) {
	cases := []struct {
		in, want string
		secrets  []string
	}{
		{"https://user:pa55w0rd@collector.example:4318/v1/traces?api_key=K3YSECRET&x=1#FRAGSECRET",
			"https://collector.example:4318/v1/traces", []string{"pa55w0rd", "user", "K3YSECRET", "FRAGSECRET"}},
		{"http://T0KENUSER@host/v1/logs", "http://host/v1/logs", []string{"T0KENUSER"}},
		{"https://host/v1/metrics?", "https://host/v1/metrics", nil},
		{"http://[::1]:4318/v1/traces?sig=S1GSECRET", "http://[::1]:4318/v1/traces", []string{"S1GSECRET"}},
		{"https://host/v1/traces", "https://host/v1/traces", nil},
		{"http://us er:PW%zzSECRET@host/", "", []string{"PW%zzSECRET"}},              // unparsable: nothing kept
		{"collector:0PAQUESECRET@host:4318/v1/traces", "", []string{"0PAQUESECRET"}}, // opaque: nothing kept
		{"/v1/traces", "", nil}, // no host to send to
		{"", "", nil},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir)
			r := &Record{URL: c.in, Body: []byte("b")}
			put(t, s, r)
			if r.URL != c.in {
				t.Errorf("Put changed the caller's URL to %q", r.URL)
			}
			rs, _ := s.Claim(1)
			if len(rs) != 1 || rs[0].URL != c.want {
				t.Fatalf("stored URL %q, want %q", rs[0].URL, c.want)
			}
			s.Close()
			for _, sec := range c.secrets {
				if hits := grepDir(t, dir, []byte(sec)); len(hits) > 0 {
					t.Errorf("%q found on disk in %v", sec, hits)
				}
			}
		})
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	put(t, s, rec(1, 10), rec(2, 10))
	rs, _ := s.Claim(1)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ops := map[string]func() error{
		"Put":        func() error { return s.Put(rec(3, 10)) },
		"PutClaimed": func() error { return s.PutClaimed(rec(4, 10)) },
		"Claim":      func() error { _, err := s.Claim(1); return err },
		"Ack":        func() error { return s.Ack(rs[0].ID) },
		"Release":    func() error { return s.Release(rs[0].ID) },
		"Quarantine": func() error { return s.Quarantine(rs[0].ID, "x") },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	// The two puts are lost exports, counted as such.
	if st := s.Stats(); st.Dropped.Closed != 2 || st.Dropped.Total() != 2 {
		t.Errorf("Dropped %+v, want 2 closed", st.Dropped)
	}
	if n := len(stored(t, dir, pendingDir)); n != 2 {
		t.Errorf("%d records in pending/ after Close, want 2", n)
	}
}

// TestCloseReturnsClaimed: records claimed and not settled go back to
// pending/ on Close, attempts unchanged, and this process's folder goes.
func TestCloseReturnsClaimed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	put(t, s, rec(1, 10), rec(2, 20), rec(3, 30))
	if rs, _ := s.Claim(2); len(rs) != 2 {
		t.Fatal("claim")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(stored(t, dir, pendingDir)); n != 3 {
		t.Errorf("%d records in pending/, want 3", n)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, ownersDir)); len(left) != 0 {
		t.Errorf("owners/ still holds %d entries", len(left))
	}
	s = open(t, dir)
	got := claimAll(t, s)
	if !slices.Equal(seqs(got), []int{1, 2, 3}) {
		t.Errorf("claimed %v", seqs(got))
	}
	for _, r := range got {
		if r.Attempts != 0 {
			t.Errorf("seq %d has %d attempts after Close, want 0", seqOf(r.Body), r.Attempts)
		}
	}
}

func TestReady(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	signalled := func() bool {
		select {
		case <-s.Ready():
			return true
		default:
			return false
		}
	}
	if signalled() {
		t.Fatal("Ready signalled before any put")
	}
	put(t, s, rec(1, 10), rec(2, 10))
	if !signalled() {
		t.Fatal("Ready not signalled after Put")
	}
	if signalled() {
		t.Fatal("Ready signalled twice for one batch of puts")
	}
	rs, _ := s.Claim(1)
	s.Ack(rs[0].ID)
	if signalled() {
		t.Fatal("Ready signalled after Claim and Ack")
	}
	rs, _ = s.Claim(1)
	s.Release(rs[0].ID)
	if !signalled() {
		t.Fatal("Ready not signalled after Release")
	}
}

// TestOrder: oldest first by creation time, whichever process made the
// record and whenever it was released, also after reopening.
func TestOrder(t *testing.T) {
	t.Parallel()
	clock := newClock()
	dir := t.TempDir()
	s := open(t, dir, WithClock(clock.Now))
	for seq := 10; seq < 15; seq++ {
		clock.Advance(time.Second)
		put(t, s, rec(seq, 100))
	}
	for seq := 15; seq < 18; seq++ { // same instant: in put order
		put(t, s, rec(seq, 100))
	}
	s.Close()
	// Another process whose clock is an hour behind.
	clock.Advance(-time.Hour)
	s = open(t, dir, WithClock(clock.Now))
	for seq := 0; seq < 5; seq++ {
		clock.Advance(time.Second)
		put(t, s, rec(seq, 100))
	}
	want := []int{0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17}
	rs, _ := s.Claim(3)
	if !slices.Equal(seqs(rs), want[:3]) {
		t.Fatalf("first claim %v, want %v", seqs(rs), want[:3])
	}
	s.Release(rs[1].ID) // goes back among newer records, in its place
	s.Close()
	s = open(t, dir, WithClock(clock.Now))
	var got []int
	for {
		rs, _ := s.Claim(1)
		if len(rs) == 0 {
			break
		}
		got = append(got, seqOf(rs[0].Body))
	}
	if !slices.Equal(got, want) {
		t.Errorf("order after reopen %v, want %v", got, want)
	}
}

func TestConcurrentUse(t *testing.T) {
	for _, mode := range []SyncMode{SyncProcess, SyncDurable} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir, WithSync(mode))
			const writers, each = 4, 50
			var writing, wg sync.WaitGroup
			for w := range writers {
				writing.Go(func() {
					for i := range each {
						if err := s.Put(rec(w*each+i, 100+i)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			var mu sync.Mutex
			seen := map[int]int{}
			var acked atomic.Int64
			deadline := time.Now().Add(20 * time.Second)
			for range 3 {
				wg.Go(func() {
					for acked.Load() < writers*each {
						rs, err := s.Claim(7)
						if err != nil {
							t.Error(err)
							return
						}
						for _, r := range rs {
							if r.Attempts == 0 && seqOf(r.Body)%3 == 0 {
								if err := s.Release(r.ID); err != nil {
									t.Error(err)
								}
								continue
							}
							mu.Lock()
							seen[seqOf(r.Body)]++
							mu.Unlock()
							if err := s.Ack(r.ID); err != nil {
								t.Error(err)
							}
							acked.Add(1)
						}
						if len(rs) == 0 {
							if time.Now().After(deadline) {
								t.Errorf("stuck with %d acked: %+v", acked.Load(), s.Stats())
								return
							}
							select {
							case <-s.Ready():
							case <-time.After(time.Millisecond):
							}
						}
					}
				})
			}
			writing.Wait()
			wg.Wait()
			if len(seen) != writers*each {
				t.Errorf("%d distinct records acked, want %d", len(seen), writers*each)
			}
			for seq, n := range seen {
				if n != 1 {
					t.Errorf("seq %d acked %d times", seq, n)
				}
			}
			st := s.Stats()
			if st.Records != 0 || st.Bytes != 0 || st.Acked != writers*each {
				t.Errorf("Stats %+v", st)
			}
		})
	}
}

// TestFileModes: files 0600 and folders 0700, whatever the umask lets
// through (TestMain sets 022).
func TestFileModes(t *testing.T) {
	if os.PathSeparator != '/' {
		t.Skip("Unix permissions")
	}
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "spool")
	s := open(t, dir)
	put(t, s, rec(1, 10), rec(2, 10), rec(3, 10))
	rs, _ := s.Claim(2)
	s.Quarantine(rs[0].ID, "why")
	mine := filepath.Join(dir, ownersDir, s.owner)
	for _, d := range []string{dir, filepath.Dir(dir), filepath.Join(dir, pendingDir), filepath.Join(dir, quarantineDir),
		filepath.Join(dir, ownersDir), mine} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != os.ModeDir|0o700 {
			t.Errorf("%s: mode %v, want drwx------", d, fi.Mode())
		}
	}
	s.flushSidecars()
	all := files(t, dir, ".")
	if len(all) != 5 { // the segment, its sidecar, quarantined + .why, lock
		t.Errorf("files %v", all)
	}
	for _, p := range all {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want -rw-------", p, fi.Mode())
		}
	}
}

func TestOptions(t *testing.T) {
	bad := map[string]Option{
		"zero max bytes":      WithMaxBytes(0),
		"negative quarantine": WithQuarantineMaxBytes(-1),
		"negative age":        WithMaxAge(-time.Second),
		"unknown sync":        WithSync(SyncMode(7)),
		"unknown policy":      WithFullPolicy(FullPolicy(7)),
	}
	for name, o := range bad {
		dir := filepath.Join(t.TempDir(), "spool")
		if s, err := Open(dir, o); err == nil || s != nil {
			t.Errorf("%s: Open succeeded", name)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a failed Open created the folder", name)
		}
	}
	for _, m := range []SyncMode{SyncProcess, SyncDurable} {
		if got, err := ParseSyncMode(m.String()); err != nil || got != m {
			t.Errorf("ParseSyncMode(%q) = %v, %v", m, got, err)
		}
	}
	for _, p := range []FullPolicy{DropNewest, DropOldest} {
		if got, err := ParseFullPolicy(p.String()); err != nil || got != p {
			t.Errorf("ParseFullPolicy(%q) = %v, %v", p, got, err)
		}
	}
	if _, err := ParseSyncMode("fast"); err == nil {
		t.Error("ParseSyncMode accepted fast")
	}
	if _, err := ParseFullPolicy("drop-all"); err == nil {
		t.Error("ParseFullPolicy accepted drop-all")
	}
	if SyncMode(7).String() != "SyncMode(7)" || FullPolicy(7).String() != "FullPolicy(7)" {
		t.Error("String of unknown values")
	}
}

func TestSignal(t *testing.T) {
	cases := map[string]Signal{
		"/v1/traces": SignalTraces, "/prefix/v1/metrics": SignalMetrics, "/v1/logs": SignalLogs,
		"/v1/profiles": SignalUnknown, "": SignalUnknown, "traces": SignalUnknown,
	}
	for path, want := range cases {
		if got := SignalFromPath(path); got != want {
			t.Errorf("SignalFromPath(%q) = %v, want %v", path, got, want)
		}
	}
	for s, want := range map[Signal]string{SignalUnknown: "unknown", SignalTraces: "traces", SignalMetrics: "metrics", SignalLogs: "logs", 9: "signal(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}

func TestParseName(t *testing.T) {
	e := entry{id: ID{created: 0x0123456789abcdef, uniq: 0xfedcba9876543210}, size: 1234, attempts: 7}
	if got, ok := parseName(e.name()); !ok || got != e {
		t.Errorf("parseName(%q) = %+v, %v", e.name(), got, ok)
	}
	if e.id.String() != "0123456789abcdef-fedcba9876543210" || !strings.HasPrefix(e.name(), e.id.String()) {
		t.Errorf("ID.String = %s, name %s", e.id, e.name())
	}
	for _, bad := range []string{
		"", ".rec", "junk.txt", "0123456789abcdef-fedcba9876543210-1234-7",
		"0123456789abcdef-fedcba9876543210-1234-7.rec.why",
		"0123456789abcdef-fedcba9876543210-1234.rec",
		"0123456789abcdef-fedcba9876543210-1234-7-1.rec",
		"0123456789abcde-fedcba9876543210-1234-7.rec",
		"0123456789abcdeg-fedcba9876543210-1234-7.rec",
		"0123456789abcdef-fedcba9876543210--1-7.rec",
		"0123456789abcdef-fedcba9876543210-1--1.rec",
		"0123456789abcdef-fedcba9876543210-x-7.rec",
		"0123456789abcdef-fedcba9876543210-1-99999999999.rec",
	} {
		if _, ok := parseName(bad); ok {
			t.Errorf("parseName(%q) accepted it", bad)
		}
	}
}
