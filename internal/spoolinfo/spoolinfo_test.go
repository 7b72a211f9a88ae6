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
	// A stray file and a record whose meta is damaged.
	pending := filepath.Join(dir, "pending")
	os.WriteFile(filepath.Join(pending, "notes.txt"), []byte("x"), 0o600)
	names, _ := os.ReadDir(pending)
	var victim string
	for _, n := range names {
		if _, ok := ParseName(n.Name()); ok {
			victim = filepath.Join(pending, n.Name())
		}
	}
	data, _ := os.ReadFile(victim)
	data[30] ^= 0xff
	os.WriteFile(victim, data, 0o600)

	now := time.Now()
	rep, err := Inspect(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	st := sp.Stats()
	if rep.Claimed.Records != 1 || rep.Waiting.Records != 1 || rep.Unreadable != 2 || rep.Processes != 1 {
		t.Errorf("claimed %d, waiting %d, unreadable %d, processes %d; want 1, 1, 2, 1",
			rep.Claimed.Records, rep.Waiting.Records, rep.Unreadable, rep.Processes)
	}
	if rep.Total.Records != 2 || rep.Total.Bytes >= st.Bytes {
		t.Errorf("total %+v; the spool has %d bytes in 3 records, one unreadable", rep.Total, st.Bytes)
	}
	// The claimed record is the oldest: the one with credentials in its
	// URL, which the spool strips before writing.
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

	m, err := ReadMeta(filepath.Join(dir, "owners"))
	if err == nil {
		t.Errorf("ReadMeta of a folder: %+v", m)
	}
}

func TestReadMeta(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.WithLogger(slog.New(slog.DiscardHandler)), spool.WithHeaderAllowList("X-Tenant"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &spool.Record{URL: "https://c.example/otlp/v1/logs", ContentType: "application/x-protobuf",
		ContentEncoding: "gzip", Signal: spool.SignalLogs, Body: []byte("body"),
		Header: map[string][]string{"X-Tenant": {"a", "b"}}}
	if err := sp.Put(rec); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	entries, _ := os.ReadDir(filepath.Join(dir, "pending"))
	if len(entries) != 1 {
		t.Fatalf("%d files", len(entries))
	}
	n, ok := ParseName(entries[0].Name())
	if !ok || n.ID != rec.ID.String() || n.Size != rec.Size() || n.Attempts != 0 || !n.Created.Equal(rec.Created) {
		t.Errorf("ParseName = %+v, %v; record %s, %d bytes, created %v", n, ok, rec.ID, rec.Size(), rec.Created)
	}
	m, err := ReadMeta(filepath.Join(dir, "pending", entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	want := Meta{URL: rec.URL, ContentType: rec.ContentType, ContentEncoding: "gzip", Signal: spool.SignalLogs,
		Created: rec.Created, Headers: 2, BodySize: 4}
	if m.URL != want.URL || m.ContentType != want.ContentType || m.ContentEncoding != want.ContentEncoding ||
		m.Signal != want.Signal || !m.Created.Equal(want.Created) || m.Headers != want.Headers || m.BodySize != want.BodySize {
		t.Errorf("ReadMeta = %+v, want %+v", *m, want)
	}
	for _, bad := range []string{"x.rec", "0000000000000001-0000000000000002-10.rec", "0000000000000001-0000000000000002-10-1.tmp", "zz00000000000001-0000000000000002-10-1.rec"} {
		if _, ok := ParseName(bad); ok {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

func TestInspectNotASpool(t *testing.T) {
	if _, err := Inspect(t.TempDir(), time.Now()); err == nil {
		t.Error("no error for an empty folder")
	}
}
