//go:build unix

package spool

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSpoolChild is a second process on a shared folder.
//
//	claim-ack:  prints READY, waits for a line on stdin, then claims and
//	            acks until nothing is left, printing "ACK <id>" after each
//	            ack; then closes and prints DONE.
//	claim-hold: claims SPOOL_TEST_ARG records, prints "CLAIMED <id>
//	            <attempts>" for each and HELD, and waits to be killed.
var heldSpool *Spool

func TestSpoolChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode != "claim-ack" && mode != "claim-hold" {
		t.Skip("child process of TestTwoProcesses")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := Open(os.Getenv(childDirEnv), WithLogger(quiet), WithRescanInterval(-1))
	if err != nil {
		fail(err)
	}
	out := bufio.NewWriter(os.Stdout)
	switch mode {
	case "claim-ack":
		fmt.Println("READY")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fail(err)
		}
		exitOnEOF()
		for {
			rs, err := s.Claim(3)
			if err != nil {
				fail(err)
			}
			if len(rs) == 0 {
				break
			}
			for _, r := range rs {
				if err := s.Ack(r.ID); err != nil {
					fail(err)
				}
				fmt.Fprintf(out, "ACK %s\n", r.ID)
			}
		}
		if err := s.Close(); err != nil {
			fail(err)
		}
		fmt.Fprintln(out, "DONE")
		out.Flush()
		os.Exit(0)
	case "claim-hold":
		exitOnEOF()
		n, _ := strconv.Atoi(os.Getenv(childArgEnv))
		rs, err := s.Claim(n)
		if err != nil {
			fail(err)
		}
		for _, r := range rs {
			fmt.Fprintf(out, "CLAIMED %s %d\n", r.ID, r.Attempts)
		}
		fmt.Fprintln(out, "HELD")
		out.Flush()
		// Referenced from a global, or the collector may finalize the lock
		// file and let the parent take the held records for a dead child's.
		heldSpool = s
		select {} // until killed; exitOnEOF ends it if the parent goes
	}
}

// readLines reads a child's lines until one equal to end, which must come.
func readLines(t *testing.T, r *bufio.Reader, end string, stderr fmt.Stringer) []string {
	t.Helper()
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("child ended without %s: %v\nstdout: %q\nstderr: %s", end, err, lines[max(0, len(lines)-5):], stderr)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == end {
			return lines
		}
		lines = append(lines, line)
	}
}

// TestTwoProcesses: two processes claim and ack from one folder at once;
// no record is claimed twice and none is missed.
func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	const n = 600
	want := map[string]bool{}
	for seq := range n {
		r := rec(seq, 200)
		put(t, s, r)
		want[r.ID.String()] = true
	}
	s.Close()

	type child struct {
		out   *bufio.Reader
		errs  fmt.Stringer
		start func()
	}
	var children []child
	for range 2 {
		cmd, out, stdin, stderr := startChild(t, "TestSpoolChild", "claim-ack", dir, "")
		if line, err := out.ReadString('\n'); line != "READY\n" {
			cmd.Wait()
			t.Fatalf("child: %q, %v\n%s", line, err, stderr)
		}
		children = append(children, child{out, stderr, func() { stdin.Write([]byte("go\n")) }})
	}
	for _, c := range children {
		c.start() // both have opened the folder and read its listing
	}
	claimedBy := map[string]int{}
	for i, c := range children {
		lines := readLines(t, c.out, "DONE", c.errs)
		acks := 0
		for _, line := range lines {
			id, ok := strings.CutPrefix(line, "ACK ")
			if !ok {
				t.Fatalf("child %d: %q\n%s", i, line, c.errs)
			}
			if prev, dup := claimedBy[id]; dup {
				t.Errorf("%s claimed by child %d and child %d", id, prev, i)
			}
			if !want[id] {
				t.Errorf("child %d acked %s, never put", i, id)
			}
			claimedBy[id] = i
			acks++
		}
		t.Logf("child %d acked %d", i, acks)
	}
	if len(claimedBy) != n {
		t.Errorf("%d records acked in all, want %d", len(claimedBy), n)
	}
	s = open(t, dir)
	if st := s.Stats(); st.Records != 0 {
		t.Errorf("after both: %+v", st)
	}
	if left := files(t, dir, pendingDir, ownersDir); len(left) != 1 { // our lock
		t.Errorf("%d files left: %v...", len(left), left[:min(len(left), 5)])
	}
}

// TestKilledWhileClaiming: a process killed while it holds claimed records
// does not lose them: they stay its own while it lives, and a spool opened
// or rescanning afterwards adopts them, attempts unchanged.
func TestKilledWhileClaiming(t *testing.T) {
	t.Parallel()
	// A segment a record, so that the child claims records, not the lot:
	// a process holds a whole segment while it sends from it.
	clock := newClock()
	dir := t.TempDir()
	s := open(t, dir, withSegmentBytes(1), WithClock(clock.Now))
	for seq := range 20 {
		put(t, s, rec(seq, 300))
	}
	// Records 0-4 have failed once.
	rs, _ := s.Claim(5)
	for _, r := range rs {
		s.Release(r.ID)
	}
	s.Close()

	cmd, out, _, stderr := startChild(t, "TestSpoolChild", "claim-hold", dir, "7")
	lines := readLines(t, out, "HELD", stderr)
	held := map[ID]int{}
	for _, line := range lines {
		var id string
		var attempts int
		if _, err := fmt.Sscanf(line, "CLAIMED %s %d", &id, &attempts); err != nil {
			t.Fatalf("child: %q\n%s", line, stderr)
		}
		for _, r := range rs {
			if r.ID.String() == id && attempts != 1 {
				t.Errorf("%s claimed with %d attempts, want 1", id, attempts)
			}
		}
		held[parseID(t, id)] = attempts
	}
	if len(held) != 7 {
		t.Fatalf("child claimed %d, want 7\n%s", len(held), stderr)
	}

	// While it lives, its records are its own.
	live := open(t, dir, withSegmentBytes(1), WithClock(clock.Now), WithRescanInterval(time.Second))
	got := claimAll(t, live)
	if len(got) != 13 {
		t.Fatalf("with the child alive: claimed %d, want 13", len(got))
	}
	for _, r := range got {
		if _, ok := held[r.ID]; ok {
			t.Fatalf("%v claimed by both processes", r.ID)
		}
		live.Ack(r.ID)
	}
	clock.Advance(2 * time.Second)
	if rs, _ := live.Claim(10); len(rs) != 0 {
		t.Fatalf("a rescan took %d records from a live process", len(rs))
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	owner := filepath.Join(dir, ownersDir, fmt.Sprintf("%d-", cmd.Process.Pid))
	var inDead int
	for _, r := range stored(t, dir, ownersDir) {
		if strings.HasPrefix(r.Segment, owner) {
			inDead++
		}
	}
	if inDead != 7 {
		t.Fatalf("the dead child's folder holds %d records, want 7", inDead)
	}

	// A new Open adopts them, attempts unchanged.
	s = open(t, dir, withSegmentBytes(1), WithClock(clock.Now))
	if st := s.Stats(); st.Records != 7 {
		t.Errorf("new Open sees %d records, want the 7 adopted", st.Records)
	}
	adopted := claimAll(t, s)
	checkAdopted(t, adopted, held)
	for _, r := range adopted {
		s.Release(r.ID) // back with one more attempt, for the rescan below
		held[r.ID]++
	}
	s.Close()
	if left := files(t, dir, ownersDir); slices.ContainsFunc(left, func(p string) bool { return strings.HasPrefix(filepath.Join(dir, p), owner) }) {
		t.Errorf("the dead child's files are still there: %v", left)
	}

	// The live spool finds them by its rescan once it runs out of work.
	clock.Advance(2 * time.Second)
	checkAdopted(t, claimAll(t, live), held)
}

func checkAdopted(t *testing.T, got []*Record, held map[ID]int) {
	t.Helper()
	if len(got) != len(held) {
		t.Errorf("adopted %d records, want %d", len(got), len(held))
	}
	for _, r := range got {
		attempts, ok := held[r.ID]
		if !ok {
			t.Errorf("%v adopted, was not held", r.ID)
		} else if r.Attempts != attempts {
			t.Errorf("%v adopted with %d attempts, want %d", r.ID, r.Attempts, attempts)
		}
		if r.Body == nil || seqOf(r.Body) >= 20 {
			t.Errorf("%v: bad body", r.ID)
		}
	}
}

func parseID(t *testing.T, s string) ID {
	t.Helper()
	e, ok := parseName(s + "-0-0" + recordExt)
	if !ok {
		t.Fatalf("bad ID %q", s)
	}
	return e.id
}
