package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSmoke runs the whole harness in miniature (2 s steady, 2 s outages,
// a 200-export backlog) and checks what users of the benchmark rely on:
// that otlpretry, as a library (B) and as a relay (D), loses nothing in
// any scenario, that the backlog drains, and that the table and plots are
// written. About a minute, plus building the Collector (slow only the
// first time).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every system through every scenario for about a minute")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark measures through /proc")
	}
	c := defaultConfig()
	c.quick()
	// Half the full rate: five applications, the Collector, the relay and
	// the receivers share a 2-core CI machine.
	c.rate = 1000
	c.steady = 2 * time.Second
	c.outage = 2 * time.Second
	c.backlog = 200
	c.out = t.TempDir()
	c.work = t.TempDir()
	c.command = "go test (smoke)"

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	rep, err := run(ctx, c, tWriter{t})
	if err != nil {
		t.Fatal(err)
	}

	seen := map[string]bool{}
	for _, r := range rep.Results {
		seen[r.Scenario+"/"+r.System] = true
		if r.System != "B" && r.System != "D" {
			continue
		}
		if r.Lost != 0 {
			t.Errorf("%s, system %s: lost %d of %d spans", r.Scenario, r.System, r.Lost, r.Produced)
		}
		if r.Produced == 0 {
			t.Errorf("%s, system %s: produced nothing", r.Scenario, r.System)
		}
		if r.Scenario == "backlog" && (r.Drain < 0 || r.Handed != int64(c.backlog*c.batch)) {
			t.Errorf("backlog, system %s: stored %d spans, drain %v s; want %d stored and drained",
				r.System, r.Handed, r.Drain, c.backlog*c.batch)
		}
	}
	for _, sc := range defaultScenarios {
		for _, sys := range allSystems {
			if !seen[sc+"/"+sys] {
				t.Errorf("no result for %s, system %s", sc, sys)
			}
		}
	}

	md, err := os.ReadFile(filepath.Join(c.out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Steady", "## Outage: refused", "## Outage: HTTP 503", "## Outage: blackholed", "## Backlog", "## Targets", "| B: SDK + otlpretry |"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	for _, png := range []string{"received-steady.png", "received-refused.png", "received-503.png", "received-blackhole.png", "waiting-refused.png", "waiting-503.png", "waiting-blackhole.png", "backlog.png", "backlog-disk.png"} {
		b, err := os.ReadFile(filepath.Join(c.out, png))
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s is not a PNG", png)
		}
		if !bytes.Contains(md, []byte("("+png+")")) {
			t.Errorf("results.md does not link %s", png)
		}
	}
	var back report
	js, err := os.ReadFile(filepath.Join(c.out, "results.json"))
	if err == nil {
		err = json.Unmarshal(js, &back)
	}
	if err != nil || len(back.Results) != len(rep.Results) {
		t.Errorf("results.json: %v, %d results, want %d", err, len(back.Results), len(rep.Results))
	}
	// Nothing of the run is left behind: its folder is gone.
	left, _ := filepath.Glob(filepath.Join(c.work, "otlpretry-bench-*"))
	if len(left) > 0 {
		t.Errorf("temporary folders left: %v", left)
	}
}

// TestGRPCSmoke runs the gRPC systems through the steady and outage
// scenarios in miniature (2 s steady, 2 s outages, 500 spans/s) and checks
// what users of the benchmark rely on: that otlpretry over gRPC, as a
// library (B-grpc) and as a relay (D-grpc), and the Collector on gRPC
// (C-grpc) lose nothing in any of them, that what they delivered reached
// the gRPC receiver, and that the table names the gRPC fault.
func TestGRPCSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the four gRPC systems through four scenarios")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark measures through /proc")
	}
	c := defaultConfig()
	c.quick()
	c.rate = 500
	c.steady = 2 * time.Second
	c.outage = 2 * time.Second
	c.scenarios = []string{"steady", "refused", "503", "blackhole"}
	c.systems = grpcSystems
	c.out = t.TempDir()
	c.work = t.TempDir()
	c.command = "go test (gRPC smoke)"

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	rep, err := run(ctx, c, tWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		seen[r.Scenario+"/"+r.System] = true
		if r.Produced == 0 {
			t.Errorf("%s, system %s: produced nothing", r.Scenario, r.System)
		}
		if r.System == "A-grpc" {
			continue
		}
		if r.Lost != 0 {
			t.Errorf("%s, system %s: lost %d of %d spans", r.Scenario, r.System, r.Lost, r.Produced)
		}
		if r.Requests == 0 || r.WireBytes == 0 {
			t.Errorf("%s, system %s: %d calls, %d bytes at the receiver", r.Scenario, r.System, r.Requests, r.WireBytes)
		}
	}
	for _, sc := range c.scenarios {
		for _, sys := range grpcSystems {
			if !seen[sc+"/"+sys] {
				t.Errorf("no result for %s, system %s", sc, sys)
			}
		}
	}
	md, err := os.ReadFile(filepath.Join(c.out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Outage: HTTP 503, gRPC Unavailable for", "| B-grpc: SDK + otlpretry over gRPC |", "| C-grpc: SDK → Collector on gRPC, file_storage queue |",
		"B-grpc and D-grpc lose nothing in every scenario", "(received-503.png)"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("results.md lacks %q", want)
		}
	}
}

// TestLatencySmoke runs the latency scenario in miniature (100 exports
// drained through a 20 ms round trip, and a 300-export full spool) and
// checks what its users rely on: that every system drains the backlog,
// that B and D lose nothing, that the limit merges its exports into fewer
// requests than one per export while B-off sends one per export, and that
// the tables and the plot of drain rate against round trip are written.
func TestLatencySmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six systems through a latency backlog")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark measures through /proc")
	}
	c := defaultConfig()
	c.quick()
	c.scenarios = []string{"latency"}
	c.backlog = 100
	c.rtts = []time.Duration{20 * time.Millisecond}
	c.fullSpool = 300
	c.out = t.TempDir()
	c.work = t.TempDir()
	c.command = "go test (latency smoke)"

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	rep, err := run(ctx, c, tWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		seen[r.Scenario+"/"+r.System] = true
		want := int64(c.backlog * c.batch)
		if r.Scenario == "full-spool" {
			want = int64(c.fullSpool * c.batch)
		}
		if r.Drain < 0 || r.Handed != want {
			t.Errorf("%s, system %s: stored %d spans, drain %v s; want %d stored and drained", r.Scenario, r.System, r.Handed, r.Drain, want)
		}
		if (r.System == "B" || r.System == "D" || r.System == "B-off") && r.Lost != 0 {
			t.Errorf("%s, system %s: lost %d of %d spans", r.Scenario, r.System, r.Lost, r.Produced)
		}
		if r.Scenario == "latency" && r.RTT != 0.02 {
			t.Errorf("system %s: round trip %v s, want 0.02", r.System, r.RTT)
		}
		switch {
		case r.System == "limit" && r.Requests >= c.backlog:
			t.Errorf("the limit sent %d requests for %d exports: not merged", r.Requests, c.backlog)
		case r.System == "B-off" && r.Requests < c.backlog:
			t.Errorf("B-off sent %d requests for %d exports: merged", r.Requests, c.backlog)
		}
	}
	for _, sys := range latencySystems {
		if !seen["latency/"+sys] {
			t.Errorf("no result for system %s", sys)
		}
	}
	for _, sys := range []string{"B", "D"} {
		if !seen["full-spool/"+sys] {
			t.Errorf("no full-spool result for system %s", sys)
		}
	}
	md, err := os.ReadFile(filepath.Join(c.out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Latency", "### Round trip: 20 ms", "### A full spool", "| B-off: SDK + otlpretry, merging off |", "| C-batch: C with sending_queue.batch |", "Latency: B and D deliver every span", "(latency.png)"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	b, err := os.ReadFile(filepath.Join(c.out, "latency.png"))
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("latency.png: %v, not a PNG", err)
	}
}

// TestCancelKillsChildren interrupts a run in its first scenario and
// checks that it returns promptly, that every child it started has been
// waited for, and that its temporary folder is gone.
func TestCancelKillsChildren(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the programs")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark measures through /proc")
	}
	c := defaultConfig()
	c.quick()
	c.rate = 500
	c.steady = time.Hour // cancelled long before
	c.scenarios = []string{"steady"}
	c.out = t.TempDir()
	c.work = t.TempDir()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &watchWriter{t: t, match: "steady, round 1: ", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, c, w)
		done <- err
	}()
	select {
	case <-w.seen:
	case err := <-done:
		t.Fatalf("run ended before its scenario started: %v", err)
	case <-time.After(5 * time.Minute):
		t.Fatal("the scenario did not start within 5 minutes")
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a cancelled run returned no error")
		}
	case <-time.After(time.Minute):
		t.Fatal("a cancelled run did not return within a minute")
	}
	left, _ := filepath.Glob(filepath.Join(c.work, "otlpretry-bench-*"))
	if len(left) > 0 {
		t.Errorf("temporary folders left: %v", left)
	}
	// The children were started from the run's folder, now removed; any
	// survivor would still show its executable there.
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && strings.HasPrefix(exe, c.work) {
			t.Errorf("child still running: %s (%s)", p, exe)
		}
	}
}

func TestNum(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 180000: "180,000", -1234567: "-1,234,567"} {
		if got := num(n); got != want {
			t.Errorf("num(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPerSecond(t *testing.T) {
	ss := []sample{{T: 0, Received: 0}, {T: 0.5, Received: 100}, {T: 1.0, Received: 300}, {T: 1.5, Received: 300}, {T: 2.25, Received: 700}}
	got := perSecond(ss)
	if len(got) != 2 || got[0].Y != 300 || got[1].Y != 0 {
		t.Fatalf("perSecond = %v, want [{1 300} {2 0}]", got)
	}
}

func TestReadUsageOfSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc")
	}
	u, err := readUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.peakRSS < 1<<20 || u.peakRSS > 64<<30 {
		t.Errorf("peak RSS %d bytes is implausible", u.peakRSS)
	}
	if u.cpu < 0 {
		t.Errorf("CPU %v", u.cpu)
	}
	if _, err := readUsage(-1); err == nil {
		t.Error("readUsage(-1) succeeded")
	}
}

func TestCLIRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"-systems", "A,Z"},
		{"-scenarios", "nap"},
		{"-rate", "0"},
		{"-out", ""},
		{"extra"},
		{"-batch", "8", "-export-bytes", "10"},
		{"-scenarios", "latency", "-rtt", "soon"},
		{"-scenarios", "latency", "-rtt", "-20ms"},
		{"-scenarios", "latency", "-systems", "A"}, // A has no latency lane
		{"-systems", "A-grpc,B-grpc"},              // nor has the backlog, run by default, a gRPC one
		{"-scenarios", "steady", "-systems", "E-grpc"},
		{"-scenarios", "latency", "-request-bytes", "-2"},
	} {
		var out, errs bytes.Buffer
		if code := cli(t.Context(), args, &out, &errs); code != 2 {
			t.Errorf("cli(%q) = %d, want 2; stderr: %s", args, code, errs.String())
		}
	}
}

// tWriter sends the run's progress to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// watchWriter logs and signals the first line containing match.
type watchWriter struct {
	t     *testing.T
	match string
	seen  chan struct{}

	mu   sync.Mutex // guards done
	done bool
}

func (w *watchWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	if !w.done && strings.Contains(string(b), w.match) {
		w.done = true
		close(w.seen)
	}
	return len(b), nil
}
