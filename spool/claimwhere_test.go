package spool

import (
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const (
	urlA = "https://a.example:4318/v1/traces"
	urlB = "https://b.example:4318/v1/metrics"
)

// recTo is rec(seq, 64) addressed to url.
func recTo(url string, seq int) *Record {
	r := rec(seq, 64)
	r.URL = url
	return r
}

// only accepts the given URL alone, counting how often it is asked.
func only(url string, asked *int) func(string) bool {
	return func(u string) bool {
		*asked++
		return u == url
	}
}

// claimWhereAll claims with accept until nothing is left.
func claimWhereAll(t *testing.T, s *Spool, max int, accept func(string) bool) []*Record {
	t.Helper()
	var out []*Record
	for {
		rs, err := s.ClaimWhere(max, accept)
		if err != nil {
			t.Fatalf("ClaimWhere: %v", err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
	}
}

// TestClaimWhereSkipsDestinations: records of a skipped URL stay waiting,
// untouched; the accepted ones come oldest first; skipped ones are handed
// out, oldest first and with no attempt counted, once accepted. accept is
// asked once per URL and claim.
func TestClaimWhereSkipsDestinations(t *testing.T) {
	for _, tc := range []struct {
		name     string
		segBytes int64
	}{{"one segment", 0}, {"a segment every two records", 300}} {
		segBytes := tc.segBytes
		t.Run(tc.name, func(t *testing.T) {
			opts := []Option{}
			if segBytes > 0 {
				opts = append(opts, withSegmentBytes(segBytes))
			}
			s := open(t, t.TempDir(), opts...)
			var wantA, wantB []int
			for i := range 12 {
				if i%3 == 0 {
					put(t, s, recTo(urlB, i))
					wantB = append(wantB, i)
				} else {
					put(t, s, recTo(urlA, i))
					wantA = append(wantA, i)
				}
			}
			asked := 0
			first, err := s.ClaimWhere(2, only(urlB, &asked))
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(first); !slices.Equal(got, wantB[:2]) {
				t.Fatalf("first claim of B: %v, want %v", got, wantB[:2])
			}
			if asked > 2 {
				t.Errorf("accept asked %d times for two URLs", asked)
			}
			rest := claimWhereAll(t, s, 1, only(urlB, new(int)))
			if got := seqs(rest); !slices.Equal(got, wantB[2:]) {
				t.Fatalf("rest of B: %v, want %v", got, wantB[2:])
			}
			if st := s.Stats(); st.Records != 12 || st.Claimed != 4 {
				t.Fatalf("stats %+v, want 12 records, 4 claimed", st)
			}
			// B's are settled; A's were never touched.
			for _, r := range append(first, rest...) {
				if err := s.Ack(r.ID); err != nil {
					t.Fatal(err)
				}
			}
			// A release puts a record back in its own line, first again.
			as := claimWhereAll(t, s, 3, only(urlA, new(int)))
			if got := seqs(as); !slices.Equal(got, wantA) {
				t.Fatalf("A: %v, want %v", got, wantA)
			}
			for _, r := range as {
				if r.Attempts != 0 {
					t.Fatalf("record %d skipped by earlier claims has %d attempts", seqOf(r.Body), r.Attempts)
				}
			}
			if err := s.Release(as[0].ID); err != nil {
				t.Fatal(err)
			}
			if err := s.Quarantine(as[1].ID, "refused"); err != nil {
				t.Fatal(err)
			}
			again := claimWhereAll(t, s, 5, nil)
			if len(again) != 1 || again[0].ID != as[0].ID || again[0].Attempts != 1 {
				t.Fatalf("after the release: %v", seqs(again))
			}
			for _, r := range append(again, as[2:]...) {
				if err := s.Ack(r.ID); err != nil {
					t.Fatal(err)
				}
			}
			if st := s.Stats(); st.Records != 0 || st.Quarantined != 1 {
				t.Fatalf("stats %+v", st)
			}
			checkBytes(t, s)
		})
	}
}

// TestClaimWhereAcrossProcesses: segments another process shared are
// loaded as a claim comes to them; their skipped records stay waiting,
// and what this process did not send goes back to the folder at Close for
// the next.
func TestClaimWhereAcrossProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	first := open(t, dir, withSegmentBytes(300))
	for i := range 8 {
		url := urlA
		if i%2 == 1 {
			url = urlB
		}
		put(t, first, recTo(url, i))
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := open(t, dir)
	bs := claimWhereAll(t, second, 10, only(urlB, new(int)))
	if got := seqs(bs); !slices.Equal(got, []int{1, 3, 5, 7}) {
		t.Fatalf("B from the other process: %v", got)
	}
	for _, r := range bs {
		if err := second.Ack(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if st := second.Stats(); st.Records != 4 {
		t.Fatalf("stats %+v, want A's 4 waiting", st)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}

	third := open(t, dir)
	as := claimAll(t, third)
	if got := seqs(as); !slices.Equal(got, []int{0, 2, 4, 6}) {
		t.Fatalf("A in the third process: %v", got)
	}
	for _, r := range as {
		if r.Attempts != 0 {
			t.Fatalf("record %d has %d attempts", seqOf(r.Body), r.Attempts)
		}
	}
}

// TestClaimWhereExpiresSkipped: with a maximum age, records of a URL that
// no claim accepts are dropped once past it, counted as expired.
func TestClaimWhereExpiresSkipped(t *testing.T) {
	clock := newClock()
	s := open(t, t.TempDir(), WithClock(clock.Now), WithMaxAge(time.Minute))
	put(t, s, recTo(urlA, 0), recTo(urlB, 1))
	clock.Advance(30 * time.Second)
	put(t, s, recTo(urlA, 2))
	clock.Advance(45 * time.Second)
	bs, err := s.ClaimWhere(5, only(urlB, new(int)))
	if err != nil {
		t.Fatal(err)
	}
	// B's record is past the age too: dropped when claimed, as by Claim.
	if len(bs) != 0 {
		t.Fatalf("claimed %v", seqs(bs))
	}
	if st := s.Stats(); st.Records != 1 || st.Dropped.Expired != 2 {
		t.Fatalf("stats %+v, want A's newer record left and 2 expired", st)
	}
	as := claimAll(t, s)
	if got := seqs(as); !slices.Equal(got, []int{2}) {
		t.Fatalf("left: %v", got)
	}
}

// BenchmarkClaimWhereSkipping: claiming one destination's records behind
// a backlog of another's costs the same whatever the backlog.
func BenchmarkClaimWhereSkipping(b *testing.B) {
	s := open(b, b.TempDir())
	for i := range 20000 {
		put(b, s, recTo(urlA, i))
	}
	accept := func(u string) bool { return u == urlB }
	b.ResetTimer()
	for i := range b.N {
		put(b, s, recTo(urlB, i))
		rs, err := s.ClaimWhere(1, accept)
		if err != nil || len(rs) != 1 {
			b.Fatal(err, len(rs))
		}
		if err := s.Ack(rs[0].ID); err != nil {
			b.Fatal(err)
		}
	}
}
