package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/relay"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/spoolinfo"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// TestCountsAgreeAcrossViews drives one scripted run through the relay
// and checks every counter of /status, /metrics and, once the relay has
// stopped, `otlpretry status --json` on its folder, against what the run
// did: two exports delivered directly, one refused and answered as it
// came, one held past the hold (answered 200, stored) and then refused
// (quarantined), an outage whose two exports are stored, one of them
// refused from the spool (quarantined) and one delivered after it, and
// one export the full spool cannot take (503, refused as full, not
// dropped). Quarantine evictions are 0 here: the relay's quarantine bound
// is 64 MiB (the root package's TestCountsAgree counts them).
func TestCountsAgreeAcrossViews(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	dir := t.TempDir()
	body, _ := otlptest.TraceBody(20)
	size := (&spool.Record{URL: col.Endpoint(otlptest.Traces), ContentType: "application/x-protobuf", Signal: spool.SignalTraces, Body: body}).Size()
	// Room for the quarantined export and two stored ones, not three.
	maxBytes := size*7/2 + 256
	env := cleanEnv(t,
		"OTLPRETRY_IMMEDIATE_RETRY_DELAY=-1", // a failed attempt is stored at once
		"OTLPRETRY_PROBE_INTERVAL=-1",        // only exports reach the collector
		"OTLPRETRY_BUSY_PROBE_INTERVAL=-1",
		"OTLPRETRY_CONCURRENCY=1", // the sender sends one export at a time
	)
	r := startRelay(t, env, "--endpoint", col.URL(), "--dir", dir, "--sync", "process", "--max-bytes", fmt.Sprint(maxBytes))
	export := func(want string) {
		t.Helper()
		b, _ := otlptest.TraceBody(20)
		resp, _ := post(t, r.url("/v1/traces"), b, nil)
		got := fmt.Sprint(resp.StatusCode)
		if resp.Header.Get("Otlpretry-Spooled") == "1" {
			got += " stored"
		}
		if got != want {
			t.Fatalf("export answered %s, want %s", got, want)
		}
	}
	waitStatus := func(what string, cond func(relay.Status) bool) relay.Status {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := relayStatus(t, r)
			if cond(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 20 s: %+v", what, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	export("200")
	export("200")
	col.Script(otlptest.Answer{Status: http.StatusBadRequest})
	export("400")
	// Held past the 500 ms hold, answered as stored, then refused.
	col.Script(otlptest.Answer{Status: http.StatusBadRequest, Delay: 1500 * time.Millisecond})
	export("200 stored")
	waitStatus("quarantine of the held export", func(st relay.Status) bool { return st.Quarantined == 1 })

	// Outage: the circuit is open, so both exports are stored without an
	// attempt; the sender's one attempt gets 503 and waits the 2 s its
	// Retry-After asks, while the third export finds the spool full.
	col.SetDefault(otlptest.Answer{Status: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"2"}}})
	export("200 stored")
	export("200 stored")
	export("503")
	st := waitStatus("the sender's failed attempt", func(st relay.Status) bool { return st.Retried == 1 })
	// /status names the failing destination and the cause.
	if len(st.Destinations) != 1 || st.Destinations[0].URL != col.Endpoint(otlptest.Traces) ||
		st.Destinations[0].State != "waiting" || !st.Destinations[0].CircuitOpen || st.Destinations[0].Cause != "HTTP 503 Service Unavailable" {
		t.Errorf("/status destinations during the outage: %+v", st.Destinations)
	}
	// Recovery: the first export sent from the spool is refused, the
	// second delivered.
	col.Script(otlptest.Answer{Status: http.StatusBadRequest})
	col.ResetDefault()
	waitStatus("the backlog settled", func(st relay.Status) bool {
		return st.Backlog.Records == 0 && st.Delivered.FromSpool+st.Quarantined == 3
	})

	st = relayStatus(t, r)
	st.UptimeSeconds = 0
	want := relay.Status{
		Upstream:  col.URL(),
		Dir:       dir,
		Upstreams: st.Upstreams,
		// The traces destination failed during the outage and is back.
		Destinations: []relay.Destination{{URL: col.Endpoint(otlptest.Traces), State: "healthy"}},
		Receivers: map[string]relay.Receiver{
			"http": {Addr: r.Addr, Requests: map[string]uint64{"200": 5, "400": 1, "503": 1}},
			"grpc": {Addr: r.grpcAddr, Requests: map[string]uint64{}},
		},
		Circuit:   "closed",
		Delivered: relay.Delivered{Direct: 2, FromSpool: 1, Total: 3},
		Spooled:   2, Retried: 1, Rejected: 1, Quarantined: 2,
		Refused: relay.Refused{Full: 1, Total: 1},
	}
	if fmt.Sprintf("%+v", st) != fmt.Sprintf("%+v", want) {
		t.Errorf("/status\n%+v, want\n%+v", st, want)
	}
	_, text := get(t, r.url("/metrics"))
	for _, line := range []string{
		"otlpretry_spool_records 0",
		"otlpretry_circuit_open 0",
		`otlpretry_exports_total{outcome="direct"} 2`,
		`otlpretry_exports_total{outcome="spooled"} 2`,
		`otlpretry_exports_total{outcome="delivered"} 1`,
		`otlpretry_exports_total{outcome="retried"} 1`,
		`otlpretry_exports_total{outcome="rejected"} 1`,
		`otlpretry_exports_total{outcome="quarantined"} 2`,
		`otlpretry_exports_refused_total{reason="full"} 1`,
		`otlpretry_exports_refused_total{reason="disk"} 0`,
		`otlpretry_exports_refused_total{reason="too_large"} 0`,
		`otlpretry_exports_refused_total{reason="closed"} 0`,
		`otlpretry_exports_dropped_total{reason="full"} 0`,
		`otlpretry_exports_dropped_total{reason="quarantine_evicted"} 0`,
		`otlpretry_relay_requests_total{code="200",signal="traces"} 5`,
		`otlpretry_relay_requests_total{code="400",signal="traces"} 1`,
		`otlpretry_relay_requests_total{code="503",signal="traces"} 1`,
	} {
		if !strings.Contains(string(text), line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if n := strings.Count(string(text), "otlpretry_exports_dropped_total{"); n != 8 {
		t.Errorf("/metrics has %d drop reasons, want 8", n)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "otlpretry_exports_dropped_total{") && !strings.HasSuffix(line, " 0") {
			t.Errorf("/metrics counts a drop: %s", line)
		}
	}
	if spans := col.Spans(); spans != 3*20 {
		t.Errorf("the collector has %d spans, want 60 (3 exports of 20)", spans)
	}

	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	logs := r.Stderr.String()
	if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "refused, for the caller to retry") ||
		strings.Contains(logs, "dropping") || strings.Contains(logs, "level=ERROR") {
		t.Errorf("the relay's log: want a WARN that the export is refused for the client to retry, no ERROR, no \"dropping\":\n%s", logs)
	}
	res := runCmd(t, env, "status", "--dir", dir, "--json")
	if res.code != 0 {
		t.Fatalf("status --json: exit %d: %s", res.code, res.stderr)
	}
	var rep spoolinfo.Report
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, res.stdout)
	}
	// On disk: the two quarantined exports, nothing waiting, no process.
	if rep.Quarantined.Records != 2 || rep.Total.Records != 0 || len(rep.Processes) != 0 || rep.Unreadable != 0 {
		t.Errorf("status --json after the relay stopped: %+v; want 2 quarantined, nothing else", rep)
	}
}
