package e2e

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// relayBin is the otlpretry binary, built once by TestMain from the working
// tree (with the race detector when the tests have it).
var relayBin string

func TestMain(m *testing.M) {
	if isChild() {
		os.Exit(m.Run()) // a process of a scenario: no relay, no table
	}
	bin, remove, err := otlptest.BuildOtlpretry("..", raceEnabled) // the root module: the working tree under test
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = bin
	code := m.Run()
	remove()
	passed, failed, skipped := printTable(os.Stdout)
	if skipped > 0 {
		fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	} else {
		fmt.Printf("%d passed, %d failed\n", passed, failed)
	}
	os.Exit(code)
}

// row is one scenario's line in the table TestMain prints.
type row struct {
	scenario string
	counted  bool // the counts apply (not for checks without load)
	produced int  // spans ended in the SDK
	acked    int  // spans whose export the producer saw succeed
	received int  // distinct spans the Collector's receiver accepted
	lost     int  // produced, never received
	dups     int  // received more than once
	backlog  int  // longest backlog, in exports on disk
	took     time.Duration
	state    string // pass, FAIL, skip; baseline for a row that is only reported
}

var (
	rowsMu sync.Mutex
	rows   []*row
)

// scenario registers t as a scenario of the table; its state is taken when
// the test ends.
func scenario(t *testing.T, name string) *row {
	r := &row{scenario: name}
	start := time.Now()
	rowsMu.Lock()
	rows = append(rows, r)
	rowsMu.Unlock()
	t.Cleanup(func() {
		rowsMu.Lock()
		defer rowsMu.Unlock()
		r.took = time.Since(start)
		switch {
		case t.Failed():
			r.state = "FAIL"
		case t.Skipped():
			r.state = "skip"
		default:
			r.state = "pass"
		}
	})
	return r
}

// baseline registers a row that is reported and never checked: the plain
// exporter's counts beside a scenario. It counts neither as passed nor as
// failed.
func baseline(t *testing.T, name string) *row {
	r := &row{scenario: name, state: "baseline"}
	start := time.Now()
	rowsMu.Lock()
	rows = append(rows, r)
	rowsMu.Unlock()
	t.Cleanup(func() {
		rowsMu.Lock()
		defer rowsMu.Unlock()
		r.took = time.Since(start)
	})
	return r
}

func (r *row) set(f func(r *row)) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	f(r)
}

func printTable(w *os.File) (passed, failed, skipped int) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return 0, 0, 0
	}
	slices.SortStableFunc(rows, func(a, b *row) int { return rank(a.scenario) - rank(b.scenario) })
	fmt.Fprintln(w, "\ne2e against the OpenTelemetry Collector OTLP receiver (spans; backlog: most exports on disk at once;")
	fmt.Fprintln(w, "plain/<kind>: the OTel exporter without otlpretry, beside library/<kind> in the same run, reported only)")
	// The scenario column is as wide as its longest name.
	width := len("scenario")
	for _, r := range rows {
		width = max(width, len(r.scenario))
	}
	fmt.Fprintf(w, "%-*s %8s %8s %8s %6s %6s %8s %7s %s\n", width,
		"scenario", "produced", "acked", "received", "lost", "dups", "backlog", "took", "result")
	for _, r := range rows {
		if r.counted {
			fmt.Fprintf(w, "%-*s %8d %8d %8d %6d %6d %8d %7s %s\n", width,
				r.scenario, r.produced, r.acked, r.received, r.lost, r.dups, r.backlog, r.took.Round(100*time.Millisecond), r.state)
		} else {
			fmt.Fprintf(w, "%-*s %8s %8s %8s %6s %6s %8s %7s %s\n", width,
				r.scenario, "-", "-", "-", "-", "-", "-", r.took.Round(100*time.Millisecond), r.state)
		}
		switch r.state {
		case "pass":
			passed++
		case "skip":
			skipped++
		case "baseline":
		default:
			failed++
		}
	}
	return passed, failed, skipped
}

// rank orders the table: the library's fault kinds (each followed by the
// plain exporter's baseline, where it runs), the relay's, flapping, kills,
// disk faults, metrics and logs, two destinations, two processes, gRPC,
// the relay over gRPC, security.
func rank(scenario string) int {
	var order []string
	for _, k := range libraryFaults {
		order = append(order, "library/"+k.name)
		if slices.Contains(baselineFaults, k.name) {
			order = append(order, "plain/"+k.name)
		}
	}
	for _, k := range relayFaults {
		order = append(order, "relay/"+k.name)
	}
	order = append(order, flappingScenario, "library/flapping-2s-60s",
		"relay/sigkill-10x-20s", "relay/sigkill-20x-60s",
		"library/disk-full-outage", "library/corrupt-spool",
		"library/metrics-refuse", "library/logs-refuse",
		"dest/A-traces-down-60s", "dest/B-metrics-up", "dest/B-logs-up",
		"2proc/live-credentials", "2proc/configured-creds")
	order = append(order, grpcRows()...)
	order = append(order, relayGRPCRows()...)
	order = append(order,
		"security/spool", "security/relay-loopback", "security/read-only-spool")
	if i := slices.Index(order, scenario); i >= 0 {
		return i
	}
	return len(order)
}
