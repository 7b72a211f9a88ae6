package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// corruptSizes are the body sizes of the five records each corruption test
// starts with (index = seq): one write, and three (header, body, trailer)
// for 40 KiB.
var corruptSizes = []int{0, 100, 5000, 40 << 10, 300, 2000}

const deadOwner = "1-0badc0de"

// victim is where the damage goes: the one segment holding records 1 to 5,
// sealed in pending/ by Close, and where record 3 (40 KiB) lies in it.
type victim struct {
	dir, seg string // spool folder, segment path
	off, n   int64  // record 3
	key      ID
	records  int
}

// TestCorruption damages the files of a closed spool by hand, the way a
// disk, a person or a crash might, then opens it. Open must not fail; the
// damaged records must never be delivered, but be quarantined (or, for a
// torn last write of a dead process, removed) and counted as corrupt;
// every other record must be delivered intact, and what was set aside must
// not come back at the next open.
func TestCorruption(t *testing.T) {
	all := []int{1, 2, 3, 4, 5}
	allBut3 := []int{1, 2, 4, 5}
	cases := []struct {
		name        string
		damage      func(t *testing.T, v victim)
		delivered   []int
		corrupt     uint64
		quarantined int // files (besides .why) in quarantine/ at the end
	}{
		{"truncated mid-record: it and what follows are lost", func(t *testing.T, v victim) {
			truncate(t, v.seg, v.off+v.n/2)
		}, []int{1, 2}, 3, 1},
		{"truncated in the last trailer", func(t *testing.T, v victim) {
			truncate(t, v.seg, fileSize(t, v.seg)-1)
		}, []int{1, 2, 3, 4}, 1, 1},
		{"zero length", func(t *testing.T, v victim) {
			truncate(t, v.seg, 0)
		}, nil, 5, 0},
		{"byte flipped in the body", func(t *testing.T, v victim) {
			flip(t, v.seg, v.off+v.n-5000)
		}, allBut3, 1, 1},
		{"byte flipped in the meta", func(t *testing.T, v victim) {
			flip(t, v.seg, v.off+headerSize+3)
		}, allBut3, 1, 1},
		{"byte flipped in the body checksum", func(t *testing.T, v victim) {
			flip(t, v.seg, v.off+v.n-1)
		}, allBut3, 1, 1},
		{"byte flipped in the magic", func(t *testing.T, v victim) {
			flip(t, v.seg, v.off)
		}, allBut3, 1, 1},
		{"body length field changed", func(t *testing.T, v victim) {
			flip(t, v.seg, v.off+21)
		}, allBut3, 1, 1},
		{"record zeroed", func(t *testing.T, v victim) {
			data := readFile(t, v.seg)
			clear(data[v.off : v.off+v.n])
			write(t, v.seg, data)
		}, allBut3, 1, 1},
		{"bytes appended, name fixed", func(t *testing.T, v victim) {
			appendTo(t, v.seg, []byte("tail"))
			renameSealed(t, v, v.records, fileSize(t, v.seg))
		}, all, 1, 1},
		{"bytes appended, name not fixed", func(t *testing.T, v victim) {
			appendTo(t, v.seg, []byte("tail"))
		}, all, 0, 0},
		{"size in the name cuts the last record", func(t *testing.T, v victim) {
			renameSealed(t, v, v.records, fileSize(t, v.seg)-10)
		}, []int{1, 2, 3, 4}, 1, 1},
		{"size in the name past the end", func(t *testing.T, v victim) {
			renameSealed(t, v, v.records, fileSize(t, v.seg)+10)
		}, all, 0, 0},
		{"record count in the name wrong", func(t *testing.T, v victim) {
			renameSealed(t, v, 2, fileSize(t, v.seg))
		}, all, 0, 0},
		{"garbage with a segment name", func(t *testing.T, v victim) {
			garbage := bytes.Repeat([]byte("garbage!"), 64)
			write(t, filepath.Join(v.dir, pendingDir, segmentName(ID{created: 1, uniq: 1}, 1, int64(len(garbage)))), garbage)
		}, all, 1, 1},
		{"garbage with another name", func(t *testing.T, v victim) {
			write(t, filepath.Join(v.dir, pendingDir, "notes.txt"), []byte("hello"))
		}, all, 1, 1},
		{"hidden file", func(t *testing.T, v victim) {
			write(t, filepath.Join(v.dir, pendingDir, ".hidden"), nil)
		}, all, 0, 0},
		{"folder with a segment name", func(t *testing.T, v victim) {
			mkdir(t, filepath.Join(v.dir, pendingDir, segmentName(ID{created: 2, uniq: 2}, 1, 4096)))
		}, all, 1, 1},
		{"sidecar of garbage", func(t *testing.T, v victim) {
			write(t, filepath.Join(v.dir, pendingDir, sidecarName(v.key)), bytes.Repeat([]byte{0xa5}, 77))
		}, all, 0, 0},
		{"sidecar says record 3 was delivered", func(t *testing.T, v victim) {
			e := sidecarEntry(uint32(v.off), opSettled)
			write(t, filepath.Join(v.dir, pendingDir, sidecarName(v.key)), e[:])
		}, allBut3, 0, 0},
		{"sidecar entry torn", func(t *testing.T, v victim) {
			e := sidecarEntry(uint32(v.off), opSettled)
			write(t, filepath.Join(v.dir, pendingDir, sidecarName(v.key)), e[:5])
		}, all, 0, 0},
		{"dead owner's active segment with a torn last write", func(t *testing.T, v victim) {
			owner := deadOwnerFolder(t, v.dir, true)
			data := readFile(t, v.seg)
			os.Remove(v.seg)
			write(t, filepath.Join(owner, activeName(v.key)), data[:v.off+v.n/3])
		}, []int{1, 2}, 0, 0},
		{"dead owner's active segment, whole", func(t *testing.T, v victim) {
			owner := deadOwnerFolder(t, v.dir, true)
			rename(t, v.seg, filepath.Join(owner, activeName(v.key)))
		}, all, 0, 0},
		{"dead owner's segment and sidecar, no lock file", func(t *testing.T, v victim) {
			owner := deadOwnerFolder(t, v.dir, false)
			e := sidecarEntry(uint32(v.off), opSettled)
			write(t, filepath.Join(owner, sidecarName(v.key)), e[:])
			rename(t, v.seg, filepath.Join(owner, filepath.Base(v.seg)))
		}, allBut3, 0, 0},
		{"dead owner's segment corrupt in the middle", func(t *testing.T, v victim) {
			owner := deadOwnerFolder(t, v.dir, true)
			flip(t, v.seg, v.off+2)
			rename(t, v.seg, filepath.Join(owner, activeName(v.key)))
		}, allBut3, 1, 1},
		{"dead owner's stray files and a sidecar without segment", func(t *testing.T, v victim) {
			owner := deadOwnerFolder(t, v.dir, true)
			mkdir(t, filepath.Join(owner, "tmp"))
			write(t, filepath.Join(owner, "tmp", "x"), []byte("partial"))
			e := sidecarEntry(0, opSettled)
			write(t, filepath.Join(owner, sidecarName(ID{created: 9, uniq: 9})), e[:])
		}, all, 0, 0},
		{"stray files in owners/ and quarantine/", func(t *testing.T, v victim) {
			write(t, filepath.Join(v.dir, ownersDir, "stray"), []byte("x"))
			write(t, filepath.Join(v.dir, quarantineDir, "lone"+whyExt), []byte("why"))
			write(t, filepath.Join(v.dir, quarantineDir, "not-a-record"), []byte("x"))
		}, all, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			v := makeVictim(t)
			c.damage(t, v)
			dir := v.dir

			s, err := Open(dir, WithLogger(quiet), WithRescanInterval(-1))
			if err != nil {
				t.Fatalf("Open after the damage: %v", err)
			}
			got := claimAll(t, s)
			checkDelivered(t, got, c.delivered)
			st := s.Stats()
			if st.Dropped.Corrupt != c.corrupt {
				t.Errorf("Dropped.Corrupt = %d, want %d", st.Dropped.Corrupt, c.corrupt)
			}
			if st.Records != len(c.delivered) || st.Quarantined != c.quarantined {
				t.Errorf("Records %d Quarantined %d; want %d %d", st.Records, st.Quarantined, len(c.delivered), c.quarantined)
			}
			checkBytes(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			// What is left: the good records in pending/, nothing in owners/,
			// each quarantined file with its reason.
			if n := len(stored(t, dir, pendingDir)); n != len(c.delivered) {
				t.Errorf("%d records in pending/, want %d", n, len(c.delivered))
			}
			if left := files(t, dir, ownersDir); slices.ContainsFunc(left, func(p string) bool { return !strings.HasSuffix(p, lockExt) && p != filepath.Join(ownersDir, "stray") }) {
				t.Errorf("left under owners/: %v", left)
			}
			if dead, err := os.Stat(filepath.Join(dir, ownersDir, deadOwner)); err == nil {
				t.Errorf("the dead owner's folder is still there: %v", dead.Mode())
			}
			quarantined := 0
			for _, p := range files(t, dir, quarantineDir) {
				if strings.HasSuffix(p, whyExt) {
					continue
				}
				quarantined++
				if strings.HasSuffix(p, "not-a-record") {
					continue
				}
				if data, _ := os.ReadFile(filepath.Join(dir, p+whyExt)); len(data) == 0 {
					t.Errorf("%s has no reason beside it", p)
				}
			}

			// Once set aside, never seen again.
			s = open(t, dir)
			got = claimAll(t, s)
			checkDelivered(t, got, c.delivered)
			if st := s.Stats(); st.Dropped.Corrupt != 0 || st.Quarantined != quarantined {
				t.Errorf("second open: Corrupt %d Quarantined %d; want 0 %d", st.Dropped.Corrupt, st.Quarantined, quarantined)
			}
			checkBytes(t, s)
		})
	}
}

// makeVictim stores records 1 to 5 in one segment and closes the spool.
func makeVictim(t *testing.T) victim {
	t.Helper()
	v := victim{dir: t.TempDir()}
	s := open(t, v.dir)
	var r3 *Record
	for seq := 1; seq <= 5; seq++ {
		r := rec(seq, corruptSizes[seq])
		put(t, s, r)
		if seq == 3 {
			r3 = r
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, r := range stored(t, v.dir, pendingDir) {
		if r.Record.ID == r3.ID {
			v.seg, v.off, v.n = r.Segment, r.Offset, r.Size
		}
	}
	n, ok := parseSegName(filepath.Base(v.seg))
	if !ok || !n.sealed || n.records != 5 {
		t.Fatalf("segment %q: %+v; want 5 records sealed", v.seg, n)
	}
	v.key, v.records = n.key, n.records
	return v
}

func deadOwnerFolder(t *testing.T, dir string, lock bool) string {
	t.Helper()
	owner := filepath.Join(dir, ownersDir, deadOwner)
	mkdir(t, owner)
	if lock {
		write(t, owner+lockExt, nil)
	}
	return owner
}

func renameSealed(t *testing.T, v victim, records int, size int64) {
	t.Helper()
	rename(t, v.seg, filepath.Join(filepath.Dir(v.seg), segmentName(v.key, records, size)))
}

func checkDelivered(t *testing.T, got []*Record, want []int) {
	t.Helper()
	seen := seqs(got)
	slices.Sort(seen)
	if !slices.Equal(seen, want) {
		t.Errorf("delivered %v, want %v", seen, want)
	}
	for _, r := range got {
		seq := seqOf(r.Body)
		if seq < 1 || seq >= len(corruptSizes) {
			t.Errorf("delivered a record with body %q...", r.Body[:min(len(r.Body), 16)])
			continue
		}
		if !bytes.Equal(r.Body, body(seq, corruptSizes[seq])) {
			t.Errorf("seq %d delivered damaged", seq)
		}
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func truncate(t *testing.T, p string, size int64) {
	t.Helper()
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, p string, at int64) {
	t.Helper()
	data := readFile(t, p)
	data[at] ^= 0x5a
	write(t, p, data)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func appendTo(t *testing.T, p string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, o, n string) {
	t.Helper()
	if err := os.Rename(o, n); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
}
