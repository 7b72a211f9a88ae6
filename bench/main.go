// Command bench runs otlpretry side by side with the OTel Go exporter and
// the OpenTelemetry Collector's persistent queue, on the same workload, and
// writes a markdown table and PNG plots of what each delivered, lost and
// cost.
//
//	GOWORK=off go -C bench run .             # the full run, about 15 minutes
//	GOWORK=off go -C bench run . -quick      # every scenario in miniature, about 1.5 minutes
//	GOWORK=off go -C bench run . -scenarios latency -rtt 0,20ms,100ms,150ms -full-spool -out results/latency
//	                                         # the latency scenario, opt-in: about an hour
//
// Results go to bench/results (-out, relative to bench/). Systems:
//
//	A      the OTel Go SDK (TracerProvider, BatchSpanProcessor, otlptracehttp), plain exporter
//	B      the same SDK with otlptracehttp over otlpretry.Transport
//	C      the SDK sending to a local Collector (otlpreceiver -> otlp_http exporter with a
//	       sending_queue on file_storage, retry_on_failure with max_elapsed_time 0)
//	D      the SDK sending to `otlpretry relay`
//	limit  the same payloads sent straight to the receiver by an in-memory buffer that
//	       is told when the endpoint is down and back, posting at the transport's
//	       concurrency: no layer in between, no disk
//
// The steady and outage scenarios also have the four systems over OTLP/gRPC,
// run only when named in -systems:
//
//	A-grpc  the SDK with otlptracegrpc, plain (its own in-memory retries on, as by default)
//	B-grpc  otlptracegrpc with otlpretrygrpc.DialOption
//	C-grpc  the SDK sending over gRPC to a local Collector (otlp receiver on gRPC ->
//	        otlp_grpc exporter, the same file_storage queue and retries as C)
//	D-grpc  the SDK sending to the relay's gRPC receiver, which forwards over gRPC
//	        (--protocol grpc)
//
// Their receiving end is a gRPC server counting spans as otlptest's
// Collector does, behind the same TCP fault proxy, which plays the refused
// and blackholed outages for both protocols; in the 503 scenario a gRPC
// lane's receiver answers Unavailable (without RetryInfo) instead. The
// gRPC systems through the steady and outage scenarios take about 10
// minutes (four systems at once, as the default run has five):
//
//	GOWORK=off go -C bench run . -scenarios steady,refused,503,blackhole \
//	    -systems A-grpc,B-grpc,C-grpc,D-grpc -out results/grpc
//
// Naming HTTP systems as well runs them in the same scenarios at the same
// time: nine systems then share the machine instead of five.
//
// The latency scenario adds two configurations and changes the limit:
//
//	B-off    B with merged backlog requests off (OTLPRETRY_MAX_REQUEST_BYTES=-1):
//	         one stored export per request
//	C-batch  C with the sending queue's batching on (sending_queue.batch: flush_timeout
//	         200ms, sizer items, min_size 8192, the Collector's values when enabled)
//	limit    the held exports packed into requests of -request-bytes (1 MiB), with
//	         the library's own adaptive window in flight (internal/batch: 4 to 32)
//
// Each application, the Collector and the relay run as processes of their
// own, built by the driver at start (the relay from ../cmd/otlpretry in the
// checkout's workspace, ../go.work, so that it runs the library of the
// working tree), so that CPU time and peak memory are measured for the
// process doing the export work. The receiving end is
// internal/otlptest's Collector, which decodes OTLP and counts unique spans
// and duplicates, behind an otlptest.Proxy that scripts the outages; one
// pair per system, all on 127.0.0.1.
//
// Scenarios: a steady run; an outage of each kind (refused connections,
// HTTP 503, blackholed connections) in the middle third of a run; and a
// backlog of exports built while the endpoint refuses connections, then
// drained once it is back. The latency scenario, run only when named in
// -scenarios, is the backlog drained through a fault proxy that holds
// every answer back by a round-trip time (each of -rtt; 0 is loopback),
// with systems B-off, B, D, C, C-batch and the limit; -full-spool adds the
// drain of a full spool (65,536 exports of 8 KiB, 512 MiB) for B and D at
// 100 ms. In the time-based scenarios the systems
// run at the same time, so that a change in machine load hits them alike;
// backlogs are built and drained one system at a time, since their drains
// would compete for the CPU.
//
// This module measures what is delivered over time and what whole
// processes cost: loss, recovery after an outage, the drain rate of a
// backlog, CPU and memory, each system beside the others. What one export
// costs inside the Transport (the happy path against a bare
// http.Transport, an export call while the circuit is open) is measured by
// the root module's micro-benchmarks, bench_test.go (go test -bench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is one run's settings; defaultConfig has the full run's.
type config struct {
	out         string        // results folder
	work        string        // parent of the run's temporary folder ("" = os.TempDir)
	keep        bool          // keep the temporary folder (spools, logs, configs)
	rate        int           // spans per second in the time-based scenarios
	steady      time.Duration // length of the steady run
	outage      time.Duration // outage length; the run is three times as long, the outage in its middle third
	settle      time.Duration // longest wait for delivery once the load has ended
	backlog     int           // exports in the backlog
	exportBytes int           // target size of one backlog export
	batch       int           // spans per backlog export
	backlogRate int           // exports per second offered while the backlog builds
	drainLimit  time.Duration // longest wait for a backlog to drain
	rounds      int           // backlog rounds; the order of systems alternates
	dropCaches  bool          // sync and drop the kernel's caches before each scenario and backlog lane
	scenarios   []string
	systems     []string        // nil: each scenario's own systems
	rtts        []time.Duration // latency scenario: round-trip times (0: loopback)
	reqBytes    int             // latency scenario: the merge bound for the limit, and for B and D when set (0: theirs)
	fullSpool   int             // latency scenario: exports in the full-spool drain (0: none)
	command     string          // the command line, for the report
}

func defaultConfig() config {
	return config{
		out:         "results",
		rate:        2000,
		steady:      60 * time.Second,
		outage:      30 * time.Second,
		settle:      2 * time.Minute,
		backlog:     10000,
		exportBytes: 8 << 10,
		batch:       8,
		backlogRate: 1000,
		drainLimit:  5 * time.Minute,
		rounds:      3,
		scenarios:   defaultScenarios,
		rtts:        []time.Duration{100 * time.Millisecond},
	}
}

// limitRequestBytes is the limit's merge bound unless -request-bytes is
// given: the library's default bound for merged backlog requests.
const limitRequestBytes = 1 << 20

// fullSpoolExports fill the library's default spool bound, 512 MiB, with
// exports of 8 KiB.
const fullSpoolExports = 65536

// quickFullSpool is the full-spool drain's size under -quick.
const quickFullSpool = 2000

// fullSpoolRTT is the round trip of the full-spool drain.
const fullSpoolRTT = 100 * time.Millisecond

// quick shrinks every duration and the backlog for a smoke run; the rate
// and the shapes stay the same.
func (c *config) quick() {
	c.steady = 3 * time.Second
	c.outage = 3 * time.Second
	c.settle = 60 * time.Second
	c.backlog = 300
	c.drainLimit = 90 * time.Second
	c.rounds = 1
}

var (
	allScenarios     = []string{"steady", "refused", "503", "blackhole", "backlog", "latency"}
	defaultScenarios = []string{"steady", "refused", "503", "blackhole", "backlog"}
	// allSystems are the systems of every scenario but latency, and
	// those run by default.
	allSystems = []string{"A", "B", "C", "D", "limit"}
	// grpcSystems run in the steady and outage scenarios when named in
	// -systems: the same four over OTLP/gRPC.
	grpcSystems = []string{"A-grpc", "B-grpc", "C-grpc", "D-grpc"}
	// latencySystems are the latency scenario's.
	latencySystems = []string{"B-off", "B", "D", "C", "C-batch", "limit"}
	// knownSystems is every system, in the order of tables and legends.
	knownSystems = []string{"A", "B-off", "B", "C", "C-batch", "D", "limit", "A-grpc", "B-grpc", "C-grpc", "D-grpc"}
)

// ownSystems are the systems scenario can run.
func ownSystems(scenario string) []string {
	switch scenario {
	case "latency":
		return slices.Clone(latencySystems)
	case "backlog":
		return slices.Clone(allSystems)
	}
	return slices.Concat(allSystems, grpcSystems)
}

// systemsFor is the systems scenario runs: by default its own but the
// gRPC ones, or those of its own named in -systems.
func (c config) systemsFor(scenario string) []string {
	own := ownSystems(scenario)
	if c.systems == nil {
		return slices.DeleteFunc(own, isGRPC)
	}
	var out []string
	for _, s := range own {
		if contains(c.systems, s) {
			out = append(out, s)
		}
	}
	return out
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := defaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: GOWORK=off go -C bench run . [flags]\n\nRuns otlpretry side by side with the OTel exporter and the Collector's\npersistent queue and writes results.md, results.json and PNG plots.\n\nFlags:")
		fs.PrintDefaults()
	}
	quick := fs.Bool("quick", false, "every scenario in miniature (3 s steady, 3 s outages, 300-export backlogs, a 2,000-export full spool, 1 round)")
	fs.StringVar(&c.out, "out", c.out, "results folder (relative to bench/ under go -C bench)")
	fs.StringVar(&c.work, "work", "", "where to make the run's temporary folder (default: the system's)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary folder: spools, Collector storage, logs")
	fs.IntVar(&c.rate, "rate", c.rate, "spans per second in the time-based scenarios")
	fs.DurationVar(&c.steady, "steady", c.steady, "length of the steady run")
	fs.DurationVar(&c.outage, "outage", c.outage, "outage length; each outage run is 3x this, the outage in its middle third")
	fs.DurationVar(&c.settle, "settle", c.settle, "longest wait for delivery after the load ends")
	fs.IntVar(&c.backlog, "backlog", c.backlog, "exports in the backlog")
	fs.IntVar(&c.exportBytes, "export-bytes", c.exportBytes, "approximate size of one backlog export")
	fs.IntVar(&c.batch, "batch", c.batch, "spans per backlog export")
	fs.IntVar(&c.backlogRate, "backlog-rate", c.backlogRate, "exports per second offered while the backlog builds")
	fs.DurationVar(&c.drainLimit, "drain-limit", c.drainLimit, "longest wait for a backlog to drain")
	fs.IntVar(&c.rounds, "rounds", c.rounds, "backlog rounds (the order of systems alternates)")
	fs.BoolVar(&c.dropCaches, "drop-caches", false, "before each scenario and each backlog lane, sync, drop the kernel's caches and wait 5 s (root only; see docs/BENCHMARKS.md, Machine)")
	rtts := fs.String("rtt", "100ms", "latency scenario: round-trip times the proxy adds, comma-separated (0: loopback)")
	fs.IntVar(&c.reqBytes, "request-bytes", 0, "latency scenario: merge bound of B and D (OTLPRETRY_MAX_REQUEST_BYTES; 0: their default) and of the limit (0: 1 MiB)")
	fullSpool := fs.Bool("full-spool", false, "latency scenario: also drain a full spool (65,536 exports of 8 KiB) with B and D at 100 ms round trip")
	render := fs.String("render", "", "write results.md and the plots from this results.json (of an earlier run) into -out, running nothing")
	scen := fs.String("scenarios", strings.Join(defaultScenarios, ","), "scenarios to run (latency only when named: "+strings.Join(allScenarios, ", ")+")")
	sys := fs.String("systems", "", "systems to run (default: each scenario's own, gRPC ones only when named; have "+strings.Join(knownSystems, ", ")+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *quick {
		q := defaultConfig()
		q.quick()
		// Flags given explicitly win over the preset.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["steady"] {
			c.steady = q.steady
		}
		if !set["outage"] {
			c.outage = q.outage
		}
		if !set["settle"] {
			c.settle = q.settle
		}
		if !set["backlog"] {
			c.backlog = q.backlog
		}
		if !set["drain-limit"] {
			c.drainLimit = q.drainLimit
		}
		if !set["rounds"] {
			c.rounds = q.rounds
		}
	}
	if *render != "" {
		if err := rerender(*render, c.out); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "results in %s\n", c.out)
		return 0
	}
	c.scenarios = splitList(*scen)
	if *sys != "" {
		c.systems = splitList(*sys)
	}
	var err error
	if c.rtts, err = parseDurations(*rtts); err != nil {
		fmt.Fprintf(stderr, "bench: -rtt: %v\n", err)
		return 2
	}
	if *fullSpool {
		c.fullSpool = fullSpoolExports
		if *quick {
			c.fullSpool = quickFullSpool
		}
	}
	c.command = "GOWORK=off go -C bench run . " + strings.Join(args, " ")
	if err := c.validate(); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if _, err := run(ctx, c, stderr); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "results in %s\n", c.out)
	return 0
}

// parseDurations reads a comma-separated list of durations; a bare 0 is
// allowed.
func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range splitList(s) {
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, err
		}
		if d < 0 {
			return nil, fmt.Errorf("negative round trip %v", d)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, errors.New("no round-trip time")
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (c config) validate() error {
	if runtime.GOOS != "linux" {
		return errors.New("the benchmark measures processes through /proc: Linux only")
	}
	for _, s := range c.scenarios {
		if !contains(allScenarios, s) {
			return fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(allScenarios, ", "))
		}
	}
	for _, s := range c.systems {
		if !contains(knownSystems, s) {
			return fmt.Errorf("unknown system %q (have %s)", s, strings.Join(knownSystems, ", "))
		}
	}
	for _, s := range c.scenarios {
		if len(c.systemsFor(s)) == 0 {
			return fmt.Errorf("no system of scenario %s in -systems (it runs %s)", s, strings.Join(ownSystems(s), ", "))
		}
	}
	switch {
	case len(c.scenarios) == 0 || (c.systems != nil && len(c.systems) == 0):
		return errors.New("no scenario or no system to run")
	case len(c.rtts) == 0:
		return errors.New("-rtt: no round-trip time")
	case c.reqBytes < -1:
		return errors.New("-request-bytes must be -1 (merging off), 0 (the default) or positive")
	case c.out == "":
		return errors.New("-out must not be empty")
	case c.rate <= 0 || c.backlog <= 0 || c.batch <= 0 || c.backlogRate <= 0 || c.rounds <= 0:
		return errors.New("-rate, -backlog, -batch, -backlog-rate and -rounds must be positive")
	case c.steady <= 0 || c.outage <= 0 || c.settle <= 0 || c.drainLimit <= 0:
		return errors.New("-steady, -outage, -settle and -drain-limit must be positive")
	case c.exportBytes < 512*c.batch/8 || c.exportBytes > 4<<20:
		return fmt.Errorf("-export-bytes must be between %d and 4 MiB for %d spans per export", 512*c.batch/8, c.batch)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
