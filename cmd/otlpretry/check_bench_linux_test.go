package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/relay"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// BenchmarkRelayBodyCheck weighs the body check against what the relay
// costs per export, as users run it: the relay binary as its own process
// (durable sync, its default), forwarding every export to an upstream that
// accepts it, its CPU time (user and system) read from /proc before and
// after b.N exports; and the check of the same body, timed in this
// process. The check-% metric is the check's share of the relay's CPU per
// export; the target is at most 5 %. /proc counts CPU in clock ticks
// (10 ms), so give it a few thousand exports:
//
//	go test -run '^$' -bench '^BenchmarkRelayBodyCheck$' -benchtime 3000x ./cmd/otlpretry/
func BenchmarkRelayBodyCheck(b *testing.B) {
	if raceEnabled {
		b.Skip("the relay built with the race detector is not the relay users run")
	}
	for _, spans := range []int{20, 512} {
		pb, _ := otlptest.TraceBody(spans)
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write(pb)
		_ = zw.Close()
		for _, c := range []struct {
			name, enc string
			body      []byte
		}{{"protobuf", "", pb}, {"gzip", "gzip", gz.Bytes()}} {
			b.Run(fmt.Sprintf("%s/%d-spans", c.name, spans), func(b *testing.B) {
				benchmarkRelayBodyCheck(b, c.enc, c.body)
			})
		}
	}
}

func benchmarkRelayBodyCheck(b *testing.B, enc string, body []byte) {
	col := otlptest.StartCollector(b)
	r := startRelay(b, cleanEnv(b), "--endpoint", col.URL(), "--dir", b.TempDir())
	pid := r.Cmd.Process.Pid
	header := http.Header{}
	if enc != "" {
		header.Set("Content-Encoding", enc)
	}
	send := func() {
		req, _ := http.NewRequest(http.MethodPost, r.url("/v1/traces"), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Otlpretry-Spooled") != "" {
			b.Fatalf("export answered %d (spooled %q), want 200 forwarded", resp.StatusCode, resp.Header.Get("Otlpretry-Spooled"))
		}
	}
	for range 200 { // connections, buffers and the relay's pools warm
		send()
	}
	before := procCPU(b, pid)
	b.ResetTimer()
	for range b.N {
		send()
	}
	b.StopTimer()
	relayCPU := procCPU(b, pid) - before

	start := time.Now()
	for range b.N {
		if err := relay.CheckBody(spool.SignalTraces, "application/x-protobuf", enc, body, relay.DefaultMaxBodyBytes); err != nil {
			b.Fatal(err)
		}
	}
	check := time.Since(start)
	perExport := float64(relayCPU.Nanoseconds()) / float64(b.N)
	b.ReportMetric(perExport, "relay-cpu-ns/export")
	b.ReportMetric(float64(check.Nanoseconds())/float64(b.N), "check-ns/export")
	if relayCPU > 0 {
		b.ReportMetric(100*float64(check)/float64(relayCPU), "check-%")
	}
}

// procCPU is the user and system CPU time of process pid so far.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skip("no /proc:", err)
	}
	// The command name, field 2, may hold spaces: count from its end.
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond
}
