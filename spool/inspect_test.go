package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestWalk: a tool reads what a spool holds without opening it: each
// record's addressing and attempts, not its body, waiting or held by a
// process; settled records are not listed, damaged regions are reported.
func TestWalk(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, WithHeaderAllowList("X-Tenant"))
	r := &Record{URL: "https://127.0.0.1:4318/v1/logs", ContentType: "application/x-protobuf", ContentEncoding: "gzip",
		Signal: SignalLogs, Header: map[string][]string{"X-Tenant": {"a"}}, Body: make([]byte, 1000)}
	put(t, s, r, rec(2, 300), rec(3, 400))
	rs, _ := s.Claim(2)
	s.Release(rs[0].ID) // r: one attempt
	s.Ack(rs[1].ID)     // 2: delivered

	s.flushSidecars() // as the spool does within a second
	got := stored(t, dir, ownersDir)
	if len(got) != 2 || len(stored(t, dir, pendingDir)) != 0 {
		t.Fatalf("Walk while open: %+v", got)
	}
	w := got[0]
	if w.Record.ID != r.ID || w.Record.URL != r.URL || w.Record.ContentEncoding != "gzip" || w.Record.Signal != SignalLogs ||
		w.Record.Header.Get("X-Tenant") != "a" || w.BodySize != 1000 || w.Record.Body != nil ||
		!w.Record.Created.Equal(r.Created) || w.Attempts != 1 || w.Size != r.Size() || w.Owner != s.owner || w.Offset != 0 {
		t.Fatalf("Walk: %+v, record %+v", w, w.Record)
	}
	if seqOf(body(3, 400)) != 3 || got[1].BodySize != 400 {
		t.Fatalf("second: %+v", got[1])
	}
	s.Close()
	got = stored(t, dir, pendingDir)
	if len(got) != 2 || got[0].Owner != "" || got[0].Attempts != 1 {
		t.Fatalf("Walk after Close: %+v", got)
	}

	// A damaged record is reported, the others still are.
	data, _ := os.ReadFile(got[1].Segment)
	data[got[1].Offset+3] ^= 1
	os.WriteFile(got[1].Segment, data, 0o600)
	var good, bad int
	err := Walk(dir, func(r StoredRecord, err error) error {
		var ce *CorruptionError
		switch {
		case errors.As(err, &ce):
			bad++
			if ce.Path != got[1].Segment || ce.Offset != got[1].Offset || r.Offset != got[1].Offset {
				t.Errorf("CorruptionError at %s offset %d, want %s offset %d", ce.Path, ce.Offset, got[1].Segment, got[1].Offset)
			}
			if want := fmt.Sprintf("%s at offset %d: ", ce.Path, ce.Offset); !strings.Contains(ce.Error(), want) || !errors.Is(err, errCorrupt) {
				t.Errorf("CorruptionError %q, want it to name %q and unwrap to the decoder's error", ce.Error(), want)
			}
		case err == nil:
			good++
		}
		return nil
	})
	if err != nil || good != 1 || bad != 1 {
		t.Fatalf("Walk of a damaged segment: %d good, %d bad, %v", good, bad, err)
	}
	// fn's error ends the walk.
	stop := errors.New("stop")
	if err := Walk(dir, func(StoredRecord, error) error { return stop }); err != stop {
		t.Fatalf("Walk = %v, want fn's error", err)
	}
}

// TestQuarantineInspection: a quarantined record is a file of its own,
// named after it, whose meta tools read without its body.
func TestQuarantineInspection(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r := rec(1, 1000)
	put(t, s, r)
	rs, _ := s.Claim(1)
	s.Quarantine(rs[0].ID, "HTTP 400")
	names := quarantinedRecords(t, dir)
	if len(names) != 1 {
		t.Fatalf("quarantine %v", names)
	}
	path := filepath.Join(dir, names[0])
	base := filepath.Base(path)
	n, ok := ParseRecordName(base[17:]) // after the time prefix
	fi, _ := os.Stat(path)
	if !ok || n.ID != r.ID || n.Size != fi.Size() || n.Attempts != 0 {
		t.Fatalf("name %+v ok %v, want ID %s size %d", n, ok, r.ID, fi.Size())
	}
	got, bodySize, err := ReadRecordMeta(path)
	if err != nil || got.URL != r.URL || bodySize != 1000 || got.Body != nil {
		t.Fatalf("meta %+v body %d: %v", got, bodySize, err)
	}
	// A torn meta is refused as corruption; a torn body is not read at all.
	data, _ := os.ReadFile(path)
	torn := filepath.Join(t.TempDir(), "torn.rec")
	os.WriteFile(torn, data[:headerSize+5], 0o600)
	var ce *CorruptionError
	if _, _, err := ReadRecordMeta(torn); !errors.As(err, &ce) {
		t.Fatalf("torn meta: %v", err)
	}
	os.WriteFile(torn, data[:len(data)-100], 0o600)
	if _, bs, err := ReadRecordMeta(torn); err != nil || bs != 1000 {
		t.Fatalf("torn body: %v %d", err, bs)
	}
	if _, ok := ParseRecordName("notes.txt"); ok {
		t.Fatal("parsed a foreign name")
	}
}

// TestOwners: a process with the spool open is alive, with its PID; an
// owner folder whose lock is free, or missing, is a process that is gone.
func TestOwners(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	put(t, s, rec(1, 100))
	gone := filepath.Join(dir, ownersDir, "4242-0badf00d")
	if err := os.MkdirAll(gone, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gone+lockExt, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noLock := filepath.Join(dir, ownersDir, "77-00000001")
	if err := os.MkdirAll(noLock, 0o700); err != nil {
		t.Fatal(err)
	}

	got, err := Owners(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Owner{
		s.owner:         {Name: s.owner, PID: os.Getpid(), Alive: true},
		"4242-0badf00d": {Name: "4242-0badf00d", PID: 4242},
		"77-00000001":   {Name: "77-00000001", PID: 77},
	}
	if len(got) != len(want) {
		t.Fatalf("Owners = %+v, want %+v", got, want)
	}
	for _, o := range got {
		if !reflect.DeepEqual(o, want[o.Name]) {
			t.Errorf("owner %+v, want %+v", o, want[o.Name])
		}
	}
	// Asking left the live owner's lock with it, and the free ones free.
	if _, err := tryLock(s.mine+lockExt, false); !errors.Is(err, errLocked) {
		t.Errorf("the live owner's lock: %v, want it still held", err)
	}
	if _, err := os.Stat(noLock + lockExt); !os.IsNotExist(err) {
		t.Errorf("Owners created a lock: %v", err)
	}
	var alive []bool
	Walk(dir, func(r StoredRecord, err error) error {
		alive = append(alive, r.OwnerAlive)
		return err
	})
	if len(alive) != 1 || !alive[0] {
		t.Errorf("Walk: OwnerAlive %v, want [true]", alive)
	}
}
