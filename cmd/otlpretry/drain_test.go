package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/spoolinfo"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// deadURL is a URL on 127.0.0.1 where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// prepareSpool stores traces and logs records addressed to base and
// returns the folder and the number of spans.
func prepareSpool(t *testing.T, base string, traces, logs int) (dir string, spans int) {
	t.Helper()
	dir = t.TempDir()
	sp, err := spool.Open(dir, spool.WithLogger(quietLogger))
	if err != nil {
		t.Fatal(err)
	}
	putRecords(t, sp, base+"/v1/traces", spool.SignalTraces, traces)
	putRecords(t, sp, base+"/v1/logs", spool.SignalLogs, logs)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, traces * 5
}

func TestDrainToOtherEndpoint(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	// Stored for a host that is gone; --endpoint sends them elsewhere.
	dir, spans := prepareSpool(t, deadURL(t), 30, 5)
	env := cleanEnv(t, "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20xyz")
	res := runCmd(t, env, "drain", "--dir", dir, "--endpoint", col.URL())
	if res.code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "Sent 35 of 35 exports") {
		t.Errorf("stdout %q", res.stdout)
	}
	if col.Spans() != spans || col.UniqueLogRecords() != 15 {
		t.Errorf("collector got %d spans and %d log records, want %d and 15", col.Spans(), col.UniqueLogRecords(), spans)
	}
	if h := col.LastHeader("/v1/traces"); h.Get("Authorization") != "Bearer xyz" {
		t.Errorf("Authorization %q, want the one from OTEL_EXPORTER_OTLP_HEADERS", h.Get("Authorization"))
	}
	rep, err := spoolinfo.Inspect(dir, time.Now())
	if err != nil || rep.Total.Records != 0 || rep.Quarantined.Records != 0 {
		t.Errorf("spool after the drain: %+v, %v", rep, err)
	}
}

func TestDrainCountsRefused(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	dir, _ := prepareSpool(t, col.URL(), 10, 0)
	col.Script(otlptest.Answer{Status: http.StatusBadRequest}, otlptest.Answer{Status: http.StatusBadRequest})
	// One export per request, so that each scripted refusal is one export's.
	res := runCmd(t, cleanEnv(t, "OTLPRETRY_MAX_REQUEST_BYTES=-1"), "drain", "--dir", dir)
	if res.code != exitFailure {
		t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", res.code, exitFailure, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "Sent 8 of 10") || !strings.Contains(res.stdout, "2 export(s) could not be sent: 2 refused") {
		t.Errorf("stdout %q", res.stdout)
	}
	rep, err := spoolinfo.Inspect(dir, time.Now())
	if err != nil || rep.Total.Records != 0 || rep.Quarantined.Records != 2 {
		t.Errorf("spool after the drain: %+v, %v", rep, err)
	}
}

func TestDrainEndpointDown(t *testing.T) {
	t.Parallel()
	dir, _ := prepareSpool(t, deadURL(t), 12, 0)
	res := runCmd(t, cleanEnv(t), "drain", "--dir", dir, "--retries", "1")
	if res.code != exitFailure {
		t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", res.code, exitFailure, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "12 export(s) could not be sent: 0 refused") ||
		!strings.Contains(res.stdout, "12 left in the spool") || !strings.Contains(res.stdout, "connection refused") {
		t.Errorf("stdout %q", res.stdout)
	}
	rep, err := spoolinfo.Inspect(dir, time.Now())
	if err != nil || rep.Total.Records != 12 {
		t.Errorf("spool after the drain: %+v, %v", rep, err)
	}
	if rep.Attempted == 0 {
		t.Error("no record counts a failed attempt")
	}
}

func TestDrainNotASpool(t *testing.T) {
	t.Parallel()
	res := runCmd(t, cleanEnv(t), "drain", "--dir", t.TempDir())
	if res.code != exitFailure || !strings.Contains(res.stderr, "not a spool folder") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}
