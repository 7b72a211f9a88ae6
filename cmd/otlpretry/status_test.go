package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

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
	if rep.Waiting.Records != 0 || rep.Held.Records != 6 || rep.Orphaned.Records != 0 || len(rep.Processes) != 1 {
		t.Errorf("waiting %d, held %d, orphaned %d, processes %+v; want 0, 6, 0, 1", rep.Waiting.Records, rep.Held.Records, rep.Orphaned.Records, rep.Processes)
	} else if p := rep.Processes[0]; p.PID != os.Getpid() || !p.Alive || p.Records != 6 {
		t.Errorf("process %+v; want pid %d, alive, 6 exports", p, os.Getpid())
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
	for _, s := range []string{"waiting", "held by a running process", fmt.Sprintf("pid %d  running  6", os.Getpid()), "quarantined", "http://a.example:4318/v1/traces", "metrics", "ENDPOINT"} {
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

// TestStatusTellsRunningFromGone: exports stored by a running relay are
// shown held by it, with its PID; once it is killed with SIGKILL, status
// says it is gone and that its exports wait for the next process that
// opens the folder, which delivers them.
func TestStatusTellsRunningFromGone(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	col.Stop() // the upstream is down: every export is stored
	dir := t.TempDir()
	env := cleanEnv(t)
	r := startRelay(t, env, "--endpoint", col.URL(), "--dir", dir, "--sync", "process")
	for i := range 3 {
		body, _ := otlptest.TraceBody(2)
		if resp, _ := post(t, r.url("/v1/traces"), body, nil); resp.StatusCode != http.StatusOK || resp.Header.Get("Otlpretry-Spooled") != "1" {
			t.Fatalf("export %d: %d, spooled %q; want 200 stored", i, resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
		}
	}
	pid := r.Cmd.Process.Pid

	status := func() spoolinfo.Report {
		t.Helper()
		res := runCmd(t, env, "status", "--dir", dir, "--json")
		if res.code != 0 {
			t.Fatalf("status --json: exit %d: %s", res.code, res.stderr)
		}
		var rep spoolinfo.Report
		if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
			t.Fatalf("%v: %s", err, res.stdout)
		}
		return rep
	}
	rep := status()
	if rep.Held.Records != 3 || rep.Orphaned.Records != 0 || rep.Waiting.Records != 0 ||
		len(rep.Processes) != 1 || rep.Processes[0].PID != pid || !rep.Processes[0].Alive || rep.Processes[0].Records != 3 {
		t.Fatalf("while the relay runs: held %d, orphaned %d, waiting %d, processes %+v; want 3 held by pid %d, running",
			rep.Held.Records, rep.Orphaned.Records, rep.Waiting.Records, rep.Processes, pid)
	}
	// The running relay's note says why its exports wait: the destination
	// and the cause. It is written right after the failure is taken in, so
	// it may lag the export's answer by a moment.
	traces := col.Endpoint(otlptest.Traces)
	for deadline := time.Now().Add(10 * time.Second); ; {
		ds := rep.Processes[0].Destinations
		if len(ds) == 1 && ds[0].URL == traces && ds[0].State == "waiting" && ds[0].Cause == "connection refused" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status names no waiting destination with its cause: %+v", ds)
		}
		time.Sleep(20 * time.Millisecond)
		rep = status()
	}
	text := runCmd(t, env, "status", "--dir", dir)
	if want := fmt.Sprintf("pid %d  %s  waiting: connection refused", pid, traces); !strings.Contains(text.stdout, want) {
		t.Errorf("status lacks %q:\n%s", want, text.stdout)
	}
	if want := fmt.Sprintf("pid %d  running  3", pid); !strings.Contains(text.stdout, want) || strings.Contains(text.stdout, fmt.Sprintf("pid %d  gone", pid)) {
		t.Errorf("status while the relay runs lacks %q or says gone:\n%s", want, text.stdout)
	}
	// Asking did not disturb the running relay: it still stores.
	body, _ := otlptest.TraceBody(2)
	if resp, _ := post(t, r.url("/v1/traces"), body, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("export after status: %d", resp.StatusCode)
	}

	if code := r.signal(syscall.SIGKILL, 10*time.Second); code != -1 {
		t.Fatalf("exit code %d, want death by SIGKILL", code)
	}
	rep = status()
	if rep.Held.Records != 0 || rep.Orphaned.Records != 4 || rep.Total.Records != 4 ||
		len(rep.Processes) != 1 || rep.Processes[0].PID != pid || rep.Processes[0].Alive || rep.Processes[0].Records != 4 {
		t.Fatalf("after SIGKILL: held %d, orphaned %d, total %d, processes %+v; want 4 orphaned by pid %d, gone",
			rep.Held.Records, rep.Orphaned.Records, rep.Total.Records, rep.Processes, pid)
	}
	text = runCmd(t, env, "status", "--dir", dir)
	for _, want := range []string{
		fmt.Sprintf("pid %d  gone", pid),
		"4 export(s) of a process that is gone are delivered by the next process that opens this folder",
	} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("status after SIGKILL lacks %q:\n%s", want, text.stdout)
		}
	}

	// The next process to open the folder takes them over.
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	r2 := startRelay(t, env, "--endpoint", col.URL(), "--dir", dir, "--sync", "process")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := col.WaitSpans(ctx, 8); err != nil {
		t.Fatal(err)
	}
	// Settled by the relay, not only received by the collector.
	for st := relayStatus(t, r2); st.Backlog.Records != 0 || st.Delivered.FromSpool != 4; st = relayStatus(t, r2) {
		if ctx.Err() != nil {
			t.Fatalf("the next relay did not settle the 4 exports: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := r2.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if rep := status(); rep.Total.Records != 0 || len(rep.Processes) != 0 {
		t.Errorf("after the next relay delivered them: %+v", rep)
	}
}
