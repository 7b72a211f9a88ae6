package spoolinfo

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/spool"
)

// The reader agrees with what spool.Put writes: names, sizes, meta.
func TestInspectMatchesSpool(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.WithLogger(slog.New(slog.DiscardHandler)),
		spool.WithHeaderAllowList("X-Tenant"))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	recs := []*spool.Record{
		{URL: "http://user:pw@a:4318/v1/traces?token=x", ContentType: "application/x-protobuf", ContentEncoding: "gzip",
			Signal: spool.SignalTraces, Body: make([]byte, 1000), Header: map[string][]string{"X-Tenant": {"t1"}}},
		{URL: "http://a:4318/v1/metrics", ContentType: "application/json", Signal: spool.SignalMetrics, Body: []byte("{}")},
		{URL: "http://a:4318/v1/traces", ContentType: "application/x-protobuf", Signal: spool.SignalTraces, Body: make([]byte, 10)},
	}
	for _, r := range recs {
		if err := sp.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	claimed, err := sp.Claim(1)
	if err != nil || len(claimed) != 1 {
		t.Fatal(claimed, err)
	}
	// A stray file and a record whose meta is damaged: Close puts the
	// segment in pending/, where a second spool takes it over.
	sp.Close()
	var victim spool.StoredRecord
	spool.Walk(dir, func(r spool.StoredRecord, err error) error {
		if err == nil && r.Record.Signal == spool.SignalMetrics {
			victim = r
		}
		return nil
	})
	data, _ := os.ReadFile(victim.Segment)
	data[victim.Offset+40] ^= 0xff
	os.WriteFile(victim.Segment, data, 0o600)
	sp, err = spool.Open(dir, spool.WithLogger(slog.New(slog.DiscardHandler)), spool.WithRescanInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	st := sp.Stats()
	os.WriteFile(filepath.Join(dir, "pending", "notes.txt"), []byte("x"), 0o600)

	now := time.Now()
	rep, err := Inspect(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Held.Records != 0 || rep.Waiting.Records != 2 || rep.Unreadable != 2 || len(rep.Processes) != 1 || rep.Attempted != 0 {
		t.Errorf("held %d, waiting %d, unreadable %d, processes %+v, attempted %d; want 0, 2, 2, 1, 0",
			rep.Held.Records, rep.Waiting.Records, rep.Unreadable, rep.Processes, rep.Attempted)
	}
	if p := rep.Processes[0]; !p.Alive || p.PID != os.Getpid() || p.Records != 0 {
		t.Errorf("process %+v, want this one (pid %d), alive, holding nothing", p, os.Getpid())
	}
	if rep.Total.Records != 2 || rep.Total.Bytes >= st.Bytes {
		t.Errorf("total %+v; the spool has %d bytes in 3 records, one unreadable", rep.Total, st.Bytes)
	}
	// The first record had credentials in its URL, which the spool strips
	// before writing.
	found := false
	for _, e := range rep.Endpoints {
		if e.URL == "http://a:4318/v1/traces" && e.Signal == "traces" {
			found = true
		}
		if e.URL != "http://a:4318/v1/traces" && e.URL != "http://a:4318/v1/metrics" {
			t.Errorf("unexpected endpoint %q", e.URL)
		}
	}
	if !found {
		t.Errorf("endpoints %+v", rep.Endpoints)
	}

	// A spool that starts sending holds the segment in its folder.
	if rs, err := sp.Claim(1); err != nil || len(rs) != 1 {
		t.Fatal(rs, err)
	}
	rep, err = Inspect(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Held.Records != 2 || rep.Waiting.Records != 0 || rep.Orphaned.Records != 0 || len(rep.Processes) != 1 ||
		rep.Processes[0].Records != 2 || !rep.Processes[0].Alive {
		t.Errorf("after a claim: held %d, waiting %d, orphaned %d, processes %+v; want 2, 0, 0, one alive holding 2",
			rep.Held.Records, rep.Waiting.Records, rep.Orphaned.Records, rep.Processes)
	}
}

func TestInspectNotASpool(t *testing.T) {
	if _, err := Inspect(t.TempDir(), time.Now()); err == nil {
		t.Error("no error for an empty folder")
	}
}
