package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// systemLabel names each system in tables and plots.
var systemLabel = map[string]string{
	"A":       "A: SDK, plain exporter",
	"B-off":   "B-off: SDK + otlpretry, merging off",
	"B":       "B: SDK + otlpretry",
	"C":       "C: SDK → Collector, file_storage queue",
	"C-batch": "C-batch: C with sending_queue.batch",
	"D":       "D: SDK → otlpretry relay",
	"limit":   "limit: no layer, in-memory",
	"A-grpc":  "A-grpc: SDK, plain gRPC exporter",
	"B-grpc":  "B-grpc: SDK + otlpretry over gRPC",
	"C-grpc":  "C-grpc: SDK → Collector on gRPC, file_storage queue",
	"D-grpc":  "D-grpc: SDK → otlpretry relay on gRPC",
}

// grpcSuffix marks the systems that export over OTLP/gRPC end to end: the
// application, the Collector or relay, and the receiving end.
const grpcSuffix = "-grpc"

// isGRPC reports whether sys is a gRPC system.
func isGRPC(sys string) bool { return strings.HasSuffix(sys, grpcSuffix) }

// kind is the system sys is a variant of (A for A-grpc, C for C-batch),
// for what the report does alike for both.
func kind(sys string) string {
	if i := strings.IndexByte(sys, '-'); i > 0 {
		return sys[:i]
	}
	return sys
}

// env is what every scenario of a run shares.
type env struct {
	cfg   config
	bins  binaries
	dir   string // the run's temporary folder
	procs *group
	log   func(format string, a ...any)
}

// lane is one system in one scenario: its receiver and fault proxy, its
// application, and the Collector or relay between them for C and D.
//
// An HTTP lane's receiver is otlptest's Collector; a gRPC lane's is a
// grpcReceiver (grecv). Either sits behind an otlptest.Proxy, a TCP proxy,
// which plays the refused and blackholed outages for both protocols; the
// 503 outage is the proxy answering HTTP 503 on an HTTP lane and the
// receiver answering Unavailable on a gRPC lane (setFault).
type lane struct {
	sys     string
	dir     string
	recv    receiver
	grecv   *grpcReceiver // the same as recv on a gRPC lane, else nil
	proxy   *otlptest.Proxy
	app     *proc
	server  *proc  // the Collector (C) or the relay (D)
	diskDir string // what holds the backlog on disk, if anything does
	prefix  [8]byte

	baseApp, baseWorker usage // at the start of the load

	mu     sync.Mutex // guards series
	series []sample
}

// sample is one point of a lane's time series; T is seconds since the
// lane's origin (the start of the load).
type sample struct {
	T        float64 `json:"t"`
	Received int64   `json:"received"`
	Handed   int64   `json:"handed"`
	Produced int64   `json:"produced"`
	Disk     int64   `json:"disk"` // -1 when not sampled at this point
}

// appSpec is how a lane's application produces.
type appSpec struct {
	rate      int
	duration  time.Duration
	spans     int // if > 0: exactly this many, at rate
	batch     int
	blocking  bool
	attrBytes int
}

func (s appSpec) args() []string {
	a := []string{"-rate", strconv.Itoa(s.rate)}
	if s.spans > 0 {
		a = append(a, "-spans", strconv.Itoa(s.spans))
	} else {
		a = append(a, "-duration", s.duration.String())
	}
	if s.batch > 0 {
		a = append(a, "-batch", strconv.Itoa(s.batch))
	}
	if s.blocking {
		a = append(a, "-blocking")
	}
	if s.attrBytes > 0 {
		a = append(a, "-attr-bytes", strconv.Itoa(s.attrBytes))
	}
	return a
}

// tuning is what a scenario changes in a system beyond its defaults.
type tuning struct {
	env         []string // variables for the otlpretry process: the app for B and B-off, the relay for D
	limitWindow int      // the limit's posts in flight (0: benchapp's default, 4)
	limitMerge  int      // the limit's merge bound in bytes (0: one export per request)
}

// newLane starts everything for sys. The proxy starts in mode, so a
// backlog can be built against an endpoint that is down from the first
// export. On error, whatever was started is stopped.
func (e *env) newLane(ctx context.Context, scenario, sys string, spec appSpec, mode otlptest.Mode, tune tuning) (_ *lane, err error) {
	l := &lane{sys: sys, dir: filepath.Join(e.dir, scenario, sys)}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return nil, err
	}
	if _, err := rand.Read(l.prefix[:]); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if isGRPC(sys) {
		if l.grecv, err = newGRPCReceiver(); err != nil {
			return nil, err
		}
		l.recv = l.grecv
		l.proxy, err = otlptest.NewProxy(l.grecv.Addr())
	} else {
		var coll *otlptest.Collector
		if coll, err = otlptest.NewCollector(); err != nil {
			return nil, err
		}
		l.recv = httpReceiver{coll}
		l.proxy, err = otlptest.NewProxy(coll.URL())
	}
	if err != nil {
		return nil, err
	}
	if mode != otlptest.Pass && sys != "limit" {
		if err := l.proxy.SetMode(mode); err != nil {
			return nil, err
		}
	}
	// The gRPC exporter takes the endpoint's scheme, host and port only;
	// http:// makes its connection insecure.
	exporter, endpoint := "plain", l.proxy.URL()+"/v1/traces"
	var extra, appEnv []string
	if isGRPC(sys) {
		endpoint = l.proxy.URL()
		extra = []string{"-protocol", "grpc"}
	}
	switch sys {
	case "B", "B-off", "B-grpc":
		exporter = "otlpretry"
		l.diskDir = filepath.Join(l.dir, "spool")
		extra = append(extra, "-dir", l.diskDir)
		appEnv = tune.env
	case "C", "C-batch", "C-grpc":
		if endpoint, err = e.startCollector(ctx, l, sys); err != nil {
			return nil, err
		}
	case "D", "D-grpc":
		if endpoint, err = e.startRelay(ctx, l, tune.env); err != nil {
			return nil, err
		}
	case "limit":
		exporter = "limit"
		if tune.limitWindow > 0 {
			extra = append(extra, "-limit-concurrency", strconv.Itoa(tune.limitWindow))
		}
		if tune.limitMerge > 0 {
			extra = append(extra, "-limit-merge-bytes", strconv.Itoa(tune.limitMerge))
		}
	}
	argv := append([]string{e.bins.app,
		"-exporter", exporter,
		"-endpoint", endpoint,
		"-prefix", hex.EncodeToString(l.prefix[:]),
	}, extra...)
	argv = append(argv, spec.args()...)
	if l.app, err = startApp(ctx, e.procs, "app-"+sys, l.dir, appEnv, argv...); err != nil {
		return nil, err
	}
	return l, nil
}

// collectorConfig is system C as the Collector's documentation sets up
// durable delivery: the otlp_http exporter's sending queue on the
// file_storage extension (defaults: fsync off, 10 consumers), retries that
// never give up (max_elapsed_time 0; the default of 5 min would drop data
// in a long outage), and a queue that holds the whole backlog (the default
// is 1,000 requests). Everything else is left at its default, gzip
// compression to the upstream and the internal metrics included (their
// Prometheus endpoint moved to a free loopback port).
//
// C-batch has the queue's batching on, with the values the Collector
// gives it when enabled without settings (exporterhelper's
// NewDefaultBatchConfig): a batch is sent once it holds 8,192 spans
// (min_size in items, no max_size) or 200 ms after it started.
//
// C-grpc is the same agent on OTLP/gRPC: the otlp receiver's grpc
// protocol, and the otlp_grpc exporter (insecure, to the loopback
// receiver) with the same queue and retries; upstream is then host:port.
func collectorConfig(sys, receiverAddr, upstream, storage string, queueSize, metricsPort int) string {
	protocol, exporter, tls := "http", "otlp_http", ""
	if isGRPC(sys) {
		protocol, exporter = "grpc", "otlp_grpc"
		tls = `
    tls:
      insecure: true`
	}
	batchConfig := ""
	if sys == "C-batch" {
		batchConfig = `
      batch:
        flush_timeout: 200ms
        sizer: items
        min_size: 8192`
	}
	return fmt.Sprintf(`extensions:
  file_storage:
    directory: %s
receivers:
  otlp:
    protocols:
      %s:
        endpoint: %s
exporters:
  %s:
    endpoint: %s%s
    retry_on_failure:
      enabled: true
      max_elapsed_time: 0
    sending_queue:
      enabled: true
      storage: file_storage
      queue_size: %d%s
service:
  extensions: [file_storage]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [%s]
  telemetry:
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: %d
`, strconv.Quote(storage), protocol, receiverAddr, exporter, strconv.Quote(upstream), tls, queueSize, batchConfig, exporter, metricsPort)
}

func (e *env) startCollector(ctx context.Context, l *lane, sys string) (string, error) {
	storage := filepath.Join(l.dir, "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	mAddr, err := freeAddr()
	if err != nil {
		return "", err
	}
	_, mPort, _ := net.SplitHostPort(mAddr)
	metricsPort, _ := strconv.Atoi(mPort)
	cfgPath := filepath.Join(l.dir, "collector.yaml")
	queue := max(1000, 2*e.cfg.backlog)
	upstream := l.proxy.URL()
	if isGRPC(sys) {
		upstream = l.proxy.Addr()
	}
	cfg := collectorConfig(sys, addr, upstream, storage, queue, metricsPort)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return "", err
	}
	l.diskDir = storage
	if l.server, err = startServer(ctx, e.procs, "collector", l.dir, nil, e.bins.collector, "--config", "file:"+cfgPath); err != nil {
		return "", err
	}
	if err := waitListening(ctx, l.server, addr, 60*time.Second); err != nil {
		return "", err
	}
	if isGRPC(sys) {
		return "http://" + addr, nil
	}
	return "http://" + addr + "/v1/traces", nil
}

// startRelay starts the relay of system D, or of D-grpc: its gRPC
// receiver then takes the application's exports and it forwards them over
// gRPC (--protocol grpc); the HTTP receiver stays on for /healthz.
func (e *env) startRelay(ctx context.Context, l *lane, env []string) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	grpcAddr := "off"
	var protocol []string
	if isGRPC(l.sys) {
		if grpcAddr, err = freeAddr(); err != nil {
			return "", err
		}
		protocol = []string{"--protocol", "grpc"}
	}
	l.diskDir = filepath.Join(l.dir, "spool")
	argv := append([]string{e.bins.relay, "relay", "--listen", addr, "--grpc-listen", grpcAddr},
		append(protocol, "--endpoint", l.proxy.URL(), "--dir", l.diskDir)...)
	if l.server, err = startServer(ctx, e.procs, "relay", l.dir, env, argv...); err != nil {
		return "", err
	}
	if err := waitHealthy(ctx, l.server, "http://"+addr+"/healthz", 30*time.Second); err != nil {
		return "", err
	}
	if isGRPC(l.sys) {
		if err := waitListening(ctx, l.server, grpcAddr, 30*time.Second); err != nil {
			return "", err
		}
		return "http://" + grpcAddr, nil
	}
	return "http://" + addr + "/v1/traces", nil
}

// setFault starts (on) or ends the outage of scenario at the lane's
// receiving end: the fault proxy's mode, except for the 503 outage of a
// gRPC lane, which its receiver plays by answering Unavailable (a TCP
// proxy cannot answer gRPC calls).
func (l *lane) setFault(scenario string, on bool) error {
	if l.grecv != nil && scenario == "503" {
		l.grecv.setRefusing(on)
		return nil
	}
	if !on {
		return l.proxy.SetMode(otlptest.Pass)
	}
	return l.proxy.SetMode(faultMode(scenario))
}

// freeAddr returns a loopback address with a port free at this moment.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitListening waits until addr accepts connections, the child exits, or
// the deadline passes. The kernel offers no notice of a port starting to
// listen, so it polls.
func waitListening(ctx context.Context, p *proc, addr string, limit time.Duration) error {
	return poll(ctx, p, limit, func() bool {
		c, err := net.DialTimeout("tcp4", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, "listening on "+addr)
}

func waitHealthy(ctx context.Context, p *proc, url string, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	return poll(ctx, p, limit, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "healthy at "+url)
}

func poll(ctx context.Context, p *proc, limit time.Duration, ok func() bool, what string) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		select {
		case <-p.done:
			return p.failure("exited before " + what)
		case <-deadline.C:
			return p.failure(fmt.Sprintf("not %s after %v", what, limit))
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// measure reads the CPU time and peak memory of the lane's processes. CPU
// is counted from the start of the load (baseline), memory is the peak
// since the process started.
func (l *lane) measure() (app, work usage, err error) {
	app, err1 := l.app.usage()
	work = app
	var err2 error
	if l.server != nil {
		work, err2 = l.server.usage()
	}
	app.cpu -= l.baseApp.cpu
	work.cpu -= l.baseWorker.cpu
	return app, work, errors.Join(err1, err2)
}

func (l *lane) baseline() error {
	var err1, err2 error
	l.baseApp, err1 = l.app.usage()
	l.baseWorker = l.baseApp
	if l.server != nil {
		l.baseWorker, err2 = l.server.usage()
	}
	return errors.Join(err1, err2)
}

// stop ends the application (which flushes its SDK and shuts otlpretry
// down) and then the Collector or relay, each with SIGTERM first.
func (l *lane) stop() error {
	var errs []error
	if l.app != nil && l.app.running() {
		errs = append(errs, l.app.stopApp(45*time.Second))
	}
	if l.server != nil && l.server.running() {
		errs = append(errs, l.server.stopServer(20*time.Second))
	}
	return errors.Join(errs...)
}

// close releases everything the lane holds; processes are killed if they
// are still running.
func (l *lane) close() {
	if l.app != nil {
		l.app.kill()
	}
	if l.server != nil {
		l.server.kill()
	}
	if l.proxy != nil {
		l.proxy.Close()
	}
	if l.recv != nil {
		l.recv.Close()
	}
}

// spanKey is the ID of span seq of this lane, as benchapp makes them.
func (l *lane) spanKey(seq uint64) (t [16]byte, s [8]byte) {
	copy(t[:8], l.prefix[:])
	putUint64(t[8:], seq)
	putUint64(s[:], seq+1)
	return t, s
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func (l *lane) addSample(s sample) {
	l.mu.Lock()
	l.series = append(l.series, s)
	l.mu.Unlock()
}

func (l *lane) samples() []sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sample(nil), l.series...)
}

// sampler records every lane's time series every 250 ms (disk every
// 500 ms: walking a spool of thousands of files is not free) until stop is
// closed.
func sampler(lanes []*lane, origin time.Time, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			for _, l := range lanes {
				l.sampleNow(origin, n%2 == 0)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return &wg
}

func (l *lane) sampleNow(origin time.Time, withDisk bool) {
	st := l.app.lastStat()
	s := sample{
		T:        math.Round(time.Since(origin).Seconds()*1000) / 1000,
		Received: int64(l.recv.Spans()),
		Handed:   st.ok,
		Produced: st.produced,
		Disk:     -1,
	}
	if withDisk && l.diskDir != "" {
		s.Disk = diskBytes(l.diskDir)
	}
	l.addSample(s)
}

func (l *lane) peakDisk() int64 {
	var peak int64
	for _, s := range l.samples() {
		peak = max(peak, s.Disk)
	}
	return peak
}

// lastDisk is the last disk sample: what is left once the backlog is gone.
func (l *lane) lastDisk() int64 {
	ss := l.samples()
	for i := len(ss) - 1; i >= 0; i-- {
		if ss[i].Disk >= 0 {
			return ss[i].Disk
		}
	}
	return 0
}
