package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/spoolinfo"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

var quietLogger = slog.New(slog.DiscardHandler)

// putRecords stores n records for url in sp and returns their total size.
func putRecords(t *testing.T, sp *spool.Spool, url string, signal spool.Signal, n int) int64 {
	t.Helper()
	var total int64
	for range n {
		var body []byte
		switch signal {
		case spool.SignalTraces:
			body, _ = otlptest.TraceBody(5)
		case spool.SignalMetrics:
			body = otlptest.MetricsBody(2)
		default:
			body = otlptest.LogsBody(3)
		}
		rec := &spool.Record{URL: url, ContentType: "application/x-protobuf", Signal: signal, Body: body}
		if err := sp.Put(rec); err != nil {
			t.Fatal(err)
		}
		total += rec.Size()
	}
	return total
}

// snapshot lists every path under dir with its size and modification time.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		out[path] = fmt.Sprint(fi.Mode(), fi.ModTime(), fi.Size())
		return nil
	})
	return out
}

func TestStatus(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.WithLogger(quietLogger))
	if err != nil {
		t.Fatal(err)
	}
	// One record refused and quarantined, then what stays.
	putRecords(t, sp, "http://a.example:4318/v1/traces", spool.SignalTraces, 1)
	recs, err := sp.Claim(1)
	if err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	if err := sp.Quarantine(recs[0].ID, "HTTP 400: test"); err != nil {
		t.Fatal(err)
	}
	putRecords(t, sp, "http://a.example:4318/v1/traces", spool.SignalTraces, 3)
	putRecords(t, sp, "http://a.example:4318/v1/metrics", spool.SignalMetrics, 2)
	putRecords(t, sp, "http://b.example:4318/v1/logs", spool.SignalLogs, 1)
	// One being sent by this live process.
	if recs, err := sp.Claim(1); err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	defer sp.Close()
	sp.Flush() // what it settled, on disk now rather than within a second
	want := sp.Stats()

	before := snapshot(t, dir)
	res := runCmd(t, cleanEnv(t), "status", "--dir", dir, "--json")
	if res.code != 0 {
		t.Fatalf("status --json: exit %d: %s", res.code, res.stderr)
	}
	var rep spoolinfo.Report
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, res.stdout)
	}
	if rep.Total.Records != want.Records || rep.Total.Bytes != want.Bytes {
		t.Errorf("total %d records, %d bytes; the spool says %d, %d", rep.Total.Records, rep.Total.Bytes, want.Records, want.Bytes)
	}
	// Everything this live process wrote is in its own folder.
	if rep.Waiting.Records != 0 || rep.Held.Records != 6 || rep.Processes != 1 {
		t.Errorf("waiting %d, held %d, processes %d; want 0, 6, 1", rep.Waiting.Records, rep.Held.Records, rep.Processes)
	}
	if rep.Quarantined.Records != 1 || rep.Quarantined.Bytes != want.QuarantineBytes {
		t.Errorf("quarantined %+v, want 1 record of %d bytes", rep.Quarantined, want.QuarantineBytes)
	}
	if !rep.Total.Oldest.Equal(want.Oldest) || rep.Total.OldestAgeSeconds <= 0 {
		t.Errorf("oldest %v (%.3fs), want %v", rep.Total.Oldest, rep.Total.OldestAgeSeconds, want.Oldest)
	}
	type key struct {
		url, signal string
		n           int
	}
	var got []key
	for _, e := range rep.Endpoints {
		got = append(got, key{e.URL, e.Signal, e.Records})
	}
	wantKeys := []key{
		{"http://a.example:4318/v1/metrics", "metrics", 2},
		{"http://a.example:4318/v1/traces", "traces", 3},
		{"http://b.example:4318/v1/logs", "logs", 1},
	}
	if !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("by endpoint %v, want %v", got, wantKeys)
	}

	text := runCmd(t, cleanEnv(t, "OTLPRETRY_DIR="+dir), "status")
	if text.code != 0 {
		t.Fatalf("status: exit %d: %s", text.code, text.stderr)
	}
	for _, s := range []string{"waiting", "held by a process", "quarantined", "http://a.example:4318/v1/traces", "metrics", "ENDPOINT"} {
		if !strings.Contains(text.stdout, s) {
			t.Errorf("status output lacks %q:\n%s", s, text.stdout)
		}
	}
	if after := snapshot(t, dir); !reflect.DeepEqual(before, after) {
		t.Errorf("status changed the folder:\nbefore %v\nafter  %v", before, after)
	}
}

func TestStatusNotASpool(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nothing-here")
	res := runCmd(t, cleanEnv(t), "status", "--dir", dir)
	if res.code != exitFailure || !strings.Contains(res.stderr, "not a spool folder") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("status created %s", dir)
	}
}
