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
// starts with: one write, and three (header, body, trailer) for 40 KiB.
var corruptSizes = []int{0, 100, 5000, 40 << 10, 300, 2000}

const deadOwner = "1-0badc0de"

// TestCorruption damages the files of a closed spool by hand, the way a
// disk, a person or a crash might, then opens it. Open must not fail; the
// damaged records must never be delivered, but be quarantined (or, for
// partial writes, removed) and counted as corrupt; every other record must
// be delivered intact.
func TestCorruption(t *testing.T) {
	all := []int{1, 2, 3, 4, 5}
	allBut3 := []int{1, 2, 4, 5}
	// Each corrupt function gets the spool folder and the path of record 3
	// (40 KiB) in pending/.
	cases := []struct {
		name        string
		damage      func(t *testing.T, dir, victim string)
		delivered   []int
		corrupt     uint64
		quarantined int // files (besides .why) in quarantine/ at the end
	}{
		{"truncated mid-body", func(t *testing.T, dir, victim string) {
			truncate(t, victim, fileSize(t, victim)/2, false)
		}, allBut3, 1, 1},
		{"truncated mid-body, name fixed", func(t *testing.T, dir, victim string) {
			truncate(t, victim, fileSize(t, victim)/2, true)
		}, allBut3, 1, 1},
		{"truncated in the trailer, name fixed", func(t *testing.T, dir, victim string) {
			truncate(t, victim, fileSize(t, victim)-1, true)
		}, allBut3, 1, 1},
		{"truncated in the header, name fixed", func(t *testing.T, dir, victim string) {
			truncate(t, victim, 10, true)
		}, allBut3, 1, 1},
		{"truncated in the meta, name fixed", func(t *testing.T, dir, victim string) {
			truncate(t, victim, headerSize+5, true)
		}, allBut3, 1, 1},
		{"zero length", func(t *testing.T, dir, victim string) {
			truncate(t, victim, 0, false)
		}, allBut3, 1, 1},
		{"zero length, name says 0", func(t *testing.T, dir, victim string) {
			truncate(t, victim, 0, true)
		}, allBut3, 1, 1},
		{"byte flipped in the body", func(t *testing.T, dir, victim string) {
			flip(t, victim, func(data []byte) int { return metaEnd(t, data) + 20000 })
		}, allBut3, 1, 1},
		{"byte flipped in the meta", func(t *testing.T, dir, victim string) {
			flip(t, victim, func([]byte) int { return headerSize + 3 })
		}, allBut3, 1, 1},
		{"byte flipped in the meta checksum", func(t *testing.T, dir, victim string) {
			flip(t, victim, func(data []byte) int { return metaEnd(t, data) - 1 })
		}, allBut3, 1, 1},
		{"byte flipped in the body checksum", func(t *testing.T, dir, victim string) {
			flip(t, victim, func(data []byte) int { return len(data) - 1 })
		}, allBut3, 1, 1},
		{"byte flipped in the magic", func(t *testing.T, dir, victim string) {
			flip(t, victim, func([]byte) int { return 0 })
		}, allBut3, 1, 1},
		{"body length field changed", func(t *testing.T, dir, victim string) {
			flip(t, victim, func([]byte) int { return 21 })
		}, allBut3, 1, 1},
		{"bytes appended, name fixed", func(t *testing.T, dir, victim string) {
			f, err := os.OpenFile(victim, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("tail"))
			f.Close()
			renameToSize(t, victim)
		}, allBut3, 1, 1},
		{"size in the name wrong", func(t *testing.T, dir, victim string) {
			e, _ := parseName(filepath.Base(victim))
			e.size++
			rename(t, victim, filepath.Join(filepath.Dir(victim), e.name()))
		}, allBut3, 1, 1},
		{"garbage with a record name", func(t *testing.T, dir, victim string) {
			garbage := bytes.Repeat([]byte("garbage!"), 64)
			e := entry{id: ID{created: 1, uniq: 1}, size: int64(len(garbage))}
			write(t, filepath.Join(dir, pendingDir, e.name()), garbage)
		}, all, 1, 1},
		{"garbage with another name", func(t *testing.T, dir, victim string) {
			write(t, filepath.Join(dir, pendingDir, "notes.txt"), []byte("hello"))
		}, all, 1, 1},
		{"empty file with another name", func(t *testing.T, dir, victim string) {
			write(t, filepath.Join(dir, pendingDir, ".hidden"), nil)
		}, all, 1, 1},
		{"folder with a record name", func(t *testing.T, dir, victim string) {
			e := entry{id: ID{created: 2, uniq: 2}, size: 4096}
			if err := os.Mkdir(filepath.Join(dir, pendingDir, e.name()), 0o700); err != nil {
				t.Fatal(err)
			}
		}, all, 1, 1},
		{"leftover temp files of a dead owner", func(t *testing.T, dir, victim string) {
			tmp := filepath.Join(dir, ownersDir, deadOwner, tmpSub)
			mkdir(t, tmp)
			write(t, filepath.Join(dir, ownersDir, deadOwner+lockExt), nil)
			data, _ := os.ReadFile(victim)
			e, _ := parseName(filepath.Base(victim))
			e.id.uniq++
			write(t, filepath.Join(tmp, e.name()), data[:len(data)/3])
			e.id.uniq++
			write(t, filepath.Join(tmp, e.name()), nil)
		}, all, 0, 0},
		{"dead owner's claimed records", func(t *testing.T, dir, victim string) {
			claimed := filepath.Join(dir, ownersDir, deadOwner, claimedSub)
			mkdir(t, claimed)
			mkdir(t, filepath.Join(dir, ownersDir, deadOwner, tmpSub))
			write(t, filepath.Join(dir, ownersDir, deadOwner+lockExt), nil)
			rename(t, victim, filepath.Join(claimed, filepath.Base(victim)))
			moveSeq(t, dir, 5, claimed)
		}, all, 0, 0},
		{"dead owner's claimed records, no lock file", func(t *testing.T, dir, victim string) {
			claimed := filepath.Join(dir, ownersDir, deadOwner, claimedSub)
			mkdir(t, claimed)
			rename(t, victim, filepath.Join(claimed, filepath.Base(victim)))
		}, all, 0, 0},
		{"dead owner's claimed record corrupt", func(t *testing.T, dir, victim string) {
			claimed := filepath.Join(dir, ownersDir, deadOwner, claimedSub)
			mkdir(t, claimed)
			write(t, filepath.Join(dir, ownersDir, deadOwner+lockExt), nil)
			flip(t, victim, func(data []byte) int { return metaEnd(t, data) + 7 })
			rename(t, victim, filepath.Join(claimed, filepath.Base(victim)))
			moveSeq(t, dir, 1, claimed)
		}, allBut3, 1, 1},
		{"stray files in owners/ and quarantine/", func(t *testing.T, dir, victim string) {
			write(t, filepath.Join(dir, ownersDir, "stray"), []byte("x"))
			write(t, filepath.Join(dir, quarantineDir, "lone"+whyExt), []byte("why"))
			write(t, filepath.Join(dir, quarantineDir, "not-a-record"), []byte("x"))
		}, all, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir)
			var victim string
			for seq := 1; seq <= 5; seq++ {
				r := rec(seq, corruptSizes[seq])
				put(t, s, r)
				if seq == 3 {
					victim = filepath.Join(dir, pendingDir, entry{id: r.ID, size: r.Size()}.name())
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(victim); err != nil {
				t.Fatal(err)
			}

			c.damage(t, dir, victim)

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
			if c.name == "folder with a record name" {
				// Quarantined, but its size is not that of a file.
				if got := diskBytes(t, dir, pendingDir, ownersDir); st.Bytes != got {
					t.Errorf("Stats().Bytes = %d, files hold %d", st.Bytes, got)
				}
			} else {
				checkBytes(t, s)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			// What is left: the good records in pending/, nothing in owners/,
			// each quarantined file with its reason.
			if n := len(recordFiles(t, dir, pendingDir)); n != len(c.delivered) {
				t.Errorf("%d records in pending/, want %d", n, len(c.delivered))
			}
			if left := files(t, dir, ownersDir); slices.ContainsFunc(left, func(p string) bool { return !strings.HasSuffix(p, lockExt) }) {
				t.Errorf("left under owners/: %v", left)
			}
			if dead, err := os.Stat(filepath.Join(dir, ownersDir, deadOwner)); err == nil {
				t.Errorf("the dead owner's folder is still there: %v", dead.Mode())
			}
			why, quarantined := 0, 0
			for _, p := range files(t, dir, quarantineDir) {
				switch {
				case strings.HasSuffix(p, "lone"+whyExt):
				case strings.HasSuffix(p, whyExt):
					why++
					if data, _ := os.ReadFile(filepath.Join(dir, p)); len(data) == 0 {
						t.Errorf("%s is empty", p)
					}
				default:
					quarantined++
				}
			}
			if want := int(c.corrupt); why != want {
				t.Errorf("%d .why files for quarantined records, want %d", why, want)
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

func truncate(t *testing.T, p string, size int64, fixName bool) {
	t.Helper()
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	if fixName {
		renameToSize(t, p)
	}
}

// renameToSize makes the size in p's name match the file, as if it had
// been written that short.
func renameToSize(t *testing.T, p string) {
	t.Helper()
	e, ok := parseName(filepath.Base(p))
	if !ok {
		t.Fatalf("%s is not a record name", p)
	}
	e.size = fileSize(t, p)
	rename(t, p, filepath.Join(filepath.Dir(p), e.name()))
}

func flip(t *testing.T, p string, at func([]byte) int) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[at(data)] ^= 0x5a
	write(t, p, data)
}

// metaEnd is the offset of the body in a valid record.
func metaEnd(t *testing.T, data []byte) int {
	t.Helper()
	d, _, err := decodeMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	return d.metaEnd
}

// moveSeq moves the record with body number seq from pending/ to dst.
func moveSeq(t *testing.T, dir string, seq int, dst string) {
	t.Helper()
	for _, p := range recordFiles(t, dir, pendingDir) {
		data, _ := os.ReadFile(filepath.Join(dir, p))
		if r, err := decodeRecord(data); err == nil && seqOf(r.Body) == seq {
			rename(t, filepath.Join(dir, p), filepath.Join(dst, filepath.Base(p)))
			return
		}
	}
	t.Fatalf("no record %d in pending/", seq)
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
