package otlpretry

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/metric"

	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// Defaults. Each can be changed by an Option and by the environment
// variable named beside it; an Option wins over the environment.
//
// One rule holds for every numeric setting, Option and variable alike:
// zero (or not setting it) keeps the default, and a negative value turns
// off what can be off (the hold bound, the immediate retry, the slow-attempt
// skip, probes, busy probes, the maximum age, the log rate limit, the
// merging of stored exports into larger requests, and the in-flight
// budget). A negative value for a setting that cannot be off (sizes,
// counts, timeouts, backoff) is an error from New. A variable whose value
// cannot be read is logged and ignored, as the OTel SDK treats its own.
const (
	DefaultMaxHold             = 500 * time.Millisecond // OTLPRETRY_MAX_HOLD
	DefaultImmediateRetryDelay = time.Second            // OTLPRETRY_IMMEDIATE_RETRY_DELAY
	DefaultMaxImmediateWait    = 5 * time.Second        // OTLPRETRY_MAX_IMMEDIATE_WAIT
	DefaultSlowAttempt         = 10 * time.Second       // OTLPRETRY_SLOW_ATTEMPT
	DefaultConcurrency         = 4                      // OTLPRETRY_CONCURRENCY
	DefaultBackoffInitial      = time.Second            // OTLPRETRY_BACKOFF_INITIAL
	DefaultBackoffMax          = 128 * time.Second      // OTLPRETRY_BACKOFF_MAX
	DefaultMaxRetryAfter       = 10 * time.Minute       // OTLPRETRY_MAX_RETRY_AFTER
	DefaultProbeInterval       = 100 * time.Millisecond // OTLPRETRY_PROBE_INTERVAL
	DefaultProbeTimeout        = 2 * time.Second        // OTLPRETRY_PROBE_TIMEOUT
	DefaultBusyProbeInterval   = 10 * time.Second       // OTLPRETRY_BUSY_PROBE_INTERVAL
	DefaultLogInterval         = time.Minute            // OTLPRETRY_LOG_INTERVAL
	DefaultAttemptTimeout      = 10 * time.Second       // OTEL_EXPORTER_OTLP_TIMEOUT (ms)
	DefaultMaxBytes            = spool.DefaultMaxBytes  // OTLPRETRY_MAX_BYTES
	DefaultMaxRequestBytes     = batch.DefaultMaxBytes  // OTLPRETRY_MAX_REQUEST_BYTES
	DefaultMaxInflightBytes    = 16 << 20               // OTLPRETRY_MAX_INFLIGHT_BYTES
)

// config is what New runs with. Options and variables write the public
// values (zero: default; negative: off); resolve turns them into the
// values below, whose meaning the code relies on:
//   - maxHold 0: no bound, the export call waits for its attempts;
//   - immediateRetryDelay < 0: no immediate retry;
//   - slowAttempt 0: an attempt is never too slow for the immediate retry;
//   - probeInterval, busyProbeInterval 0: no such probes;
//   - maxAge 0: exports never expire;
//   - logInterval 0: every message is logged;
//   - maxRequestBytes 0: stored exports are sent one per request.
//   - maxInflightBytes 0: no bound on the stored exports in flight.
type config struct {
	next                http.RoundTripper
	ownNext             bool // next was made here, so Shutdown may close its idle connections
	dir                 string
	maxBytes            int64
	syncMode            spool.SyncMode
	fullPolicy          spool.FullPolicy
	maxAge              time.Duration
	maxHold             time.Duration
	immediateRetryDelay time.Duration
	maxImmediateWait    time.Duration
	slowAttempt         time.Duration
	concurrency         int
	maxRequestBytes     int64
	maxInflightBytes    int64
	backoffInitial      time.Duration
	backoffMax          time.Duration
	maxRetryAfter       time.Duration
	probeInterval       time.Duration
	probeTimeout        time.Duration
	busyProbeInterval   time.Duration
	logInterval         time.Duration
	callerRetry         bool // RoundTrip's errors are retried by its caller (WithCallerRetry)
	attemptTimeout      map[spool.Signal]time.Duration
	headers             []destinationHeaders
	logger              *slog.Logger
	meterProvider       metric.MeterProvider
	clock               clockwork.Clock
	jitter              func() float64
	onEvent             func(senderEvent) // tests observe the sender's decisions
	spoolOpts           []spool.Option    // tests reach spool settings the Options do not offer
	envWarnings         []string          // variables that could not be read, logged once the logger is known
	optionErrs          []string          // options that cannot hold, reported by New
}

// senderEvent reports a decision of the background sender to tests.
type senderEvent struct {
	kind      string // "wait", "probe", "idle"
	dest      destination
	wait      time.Duration
	out       retry.Outcome
	reachable bool
}

func (c *config) event(e senderEvent) {
	if c.onEvent != nil {
		c.onEvent(e)
	}
}

// Option configures New.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTransport sets the RoundTripper that carries requests. If nil, a
// clone of http.DefaultTransport is used, keeping enough idle connections
// per host for the sends in flight.
func WithTransport(rt http.RoundTripper) Option {
	return optionFunc(func(c *config) { c.next = rt })
}

// WithDir sets the spool folder. Default (OTLPRETRY_DIR): a folder per
// program under os.UserCacheDir(), so that what a stopped or crashed run
// left is sent by the next run of the same program.
func WithDir(dir string) Option { return optionFunc(func(c *config) { c.dir = dir }) }

// WithMaxBytes caps the spool on disk, quarantine included. Default 512 MiB
// (OTLPRETRY_MAX_BYTES).
func WithMaxBytes(n int64) Option { return optionFunc(func(c *config) { c.maxBytes = n }) }

// WithSync sets what a spooled export survives. Default spool.SyncProcess:
// the death of the process at any instant, not a power loss
// (OTLPRETRY_SYNC=process|durable).
func WithSync(m spool.SyncMode) Option { return optionFunc(func(c *config) { c.syncMode = m }) }

// WithFullPolicy sets what is dropped when the spool is full. Default
// spool.DropNewest (OTLPRETRY_FULL_POLICY=drop-newest|drop-oldest).
func WithFullPolicy(p spool.FullPolicy) Option {
	return optionFunc(func(c *config) { c.fullPolicy = p })
}

// WithMaxAge drops spooled exports older than d when they come up to be
// sent. Default: never (OTLPRETRY_MAX_AGE).
func WithMaxAge(d time.Duration) Option { return optionFunc(func(c *config) { c.maxAge = d }) }

// WithMaxHold bounds how long an export call waits on the endpoint. When
// the attempts (first try, immediate retry) have not ended by then, the
// export is stored, the exporter answered with success, and the attempts
// go on in the background, settling the stored copy. So a slow or
// blackholed endpoint never holds the SDK's batch processor longer than
// this, which at 2,000 spans/s and the SDK's default queue of 2,048 spans
// is what keeps it from dropping spans. Default 500 ms (OTLPRETRY_MAX_HOLD);
// negative: no bound, the call waits for the attempts to end, as the
// reference SDK does.
func WithMaxHold(d time.Duration) Option { return optionFunc(func(c *config) { c.maxHold = d }) }

// WithImmediateRetryDelay sets the wait before the one immediate retry of a
// failed export. Default 1 s (OTLPRETRY_IMMEDIATE_RETRY_DELAY); negative:
// no immediate retry, failed exports go to the spool at once.
func WithImmediateRetryDelay(d time.Duration) Option {
	return optionFunc(func(c *config) { c.immediateRetryDelay = d })
}

// WithMaxImmediateWait bounds the server's Retry-After that the immediate
// retry will wait for; a longer one sends the export to the spool at once.
// Default 5 s (OTLPRETRY_MAX_IMMEDIATE_WAIT).
func WithMaxImmediateWait(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxImmediateWait = d })
}

// WithSlowAttempt skips the immediate retry when the first attempt took
// longer than d. Default 10 s (OTLPRETRY_SLOW_ATTEMPT); negative: never
// skip it for slowness.
func WithSlowAttempt(d time.Duration) Option {
	return optionFunc(func(c *config) { c.slowAttempt = d })
}

// WithConcurrency sets how many requests of stored exports a destination
// has in flight when its backlog starts to be sent: its window. While the
// destination accepts them the window doubles each round trip (slow
// start), up to 32 (or n, if larger); a 408, 429, 5xx, timeout or reset
// halves it, down to 1, after which it grows by one per round trip, and
// the wait that follows the failure (Retry-After, else the backoff) comes
// first. Default 4 (OTLPRETRY_CONCURRENCY).
func WithConcurrency(n int) Option { return optionFunc(func(c *config) { c.concurrency = n }) }

// WithMaxRequestBytes bounds the requests in which stored exports are sent:
// consecutive stored exports of one destination, signal, Content-Type and
// Content-Encoding are merged into one request of at most n bytes before
// compression (protobuf bodies back to back, gzip and deflate bodies
// decompressed, merged and compressed again, OTLP/JSON bodies into one
// array), so that a backlog drains at the link's bandwidth rather than
// one export per round trip. An export larger than n, or whose body
// cannot be merged, is sent alone as stored. A merged request the endpoint
// refuses (a 4xx other than 408 and 429, or a 413) is split in halves
// until the exports it refuses are found: only those are quarantined.
// Default 1 MiB (OTLPRETRY_MAX_REQUEST_BYTES), below what common receivers
// take (the Collector's OTLP/HTTP receiver 20 MiB, its gRPC receiver 4
// MiB); negative turns merging off, each stored export is then sent alone.
// Live exports are never held back to be merged.
func WithMaxRequestBytes(n int64) Option {
	return optionFunc(func(c *config) { c.maxRequestBytes = n })
}

// WithMaxInflightBytes bounds the memory background delivery holds: the
// stored exports of the requests in flight, summed over every
// destination. A backlog request starts only while the sum is under n,
// except that a destination with nothing in flight may always start one,
// so that a slow or silent destination holding the budget slows a healthy
// one's backlog but never stops it. The most held is therefore n plus one
// request (WithMaxRequestBytes) per destination. At a round trip of r, one
// destination drains at most about n/r bytes a second: 16 MiB across
// 100 ms is 160 MiB/s, more than most links carry. The budget is also
// what keeps several destinations draining at once within that memory.
// Default 16 MiB (OTLPRETRY_MAX_INFLIGHT_BYTES);
// negative: no bound but the windows'.
func WithMaxInflightBytes(n int64) Option {
	return optionFunc(func(c *config) { c.maxInflightBytes = n })
}

// WithBackoff sets the first and the largest wait between retries of
// spooled exports after failures. Defaults 1 s and 128 s
// (OTLPRETRY_BACKOFF_INITIAL, OTLPRETRY_BACKOFF_MAX). Jitter takes each wait
// down by up to half, never above max.
func WithBackoff(initial, max time.Duration) Option {
	return optionFunc(func(c *config) { c.backoffInitial, c.backoffMax = initial, max })
}

// WithMaxRetryAfter bounds how long a server's Retry-After is obeyed.
// Default 10 min (OTLPRETRY_MAX_RETRY_AFTER).
func WithMaxRetryAfter(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxRetryAfter = d })
}

// WithProbe sets how often an unreachable endpoint (refused, reset or
// timed-out connections) is probed with an empty export while the backoff
// waits, and how long a probe may take. Defaults 100 ms and 2 s
// (OTLPRETRY_PROBE_INTERVAL, OTLPRETRY_PROBE_TIMEOUT); a negative interval
// turns these probes off. One probe runs at a time, so a blackholed
// endpoint sees one connection attempt per timeout; an endpoint whose name
// does not resolve is probed at most once a second, to spare the resolver.
func WithProbe(interval, timeout time.Duration) Option {
	return optionFunc(func(c *config) { c.probeInterval, c.probeTimeout = interval, timeout })
}

// WithBusyProbe sets how often a busy endpoint (408, 429, 5xx without
// Retry-After) is probed with an empty export while a backoff wait longer
// than that runs; only an accepted probe ends the wait early. Default 10 s
// (OTLPRETRY_BUSY_PROBE_INTERVAL); negative turns these probes off.
func WithBusyProbe(interval time.Duration) Option {
	return optionFunc(func(c *config) { c.busyProbeInterval = interval })
}

// WithLogInterval sets the least time between two log messages of one kind.
// Default 60 s (OTLPRETRY_LOG_INTERVAL); negative logs every message.
func WithLogInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.logInterval = d })
}

// WithAttemptTimeout bounds each attempt to send an export. Default: the
// OTLP exporter's own setting, OTEL_EXPORTER_OTLP_TIMEOUT and its
// per-signal variants (milliseconds), else 10 s.
func WithAttemptTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d == 0 {
			return
		}
		for _, s := range []spool.Signal{spool.SignalUnknown, spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs} {
			c.attemptTimeout[s] = d
		}
	})
}

// WithEndpointHeaders sets the headers (typically credentials) that
// stored exports to one destination are sent with when this process has
// made no live request to it, typically exports a previous process left.
// endpoint is the destination's URL: "https://collector:4318/v1/traces"
// for one signal's endpoint, or a base such as "https://collector:4318",
// which covers every path under it; the longest match wins. The headers
// are never sent anywhere else, and are kept in memory only. Give it once
// per destination, as the OTel SDK's OTEL_EXPORTER_OTLP_{SIGNAL}_HEADERS
// give each signal's endpoint its own; empty (or nil) headers say that the
// destination needs none. Default none: stored exports are sent only with
// the headers of this process's latest live request to their own
// destination, and those for a destination it has not reached yet wait
// for one ("waiting for credentials" in Stats), at most the maximum age
// when one is set (WithMaxAge).
func WithEndpointHeaders(endpoint string, h http.Header) Option {
	return optionFunc(func(c *config) {
		u, err := url.Parse(endpoint)
		if err != nil || u.Scheme == "" || u.Host == "" {
			c.optionErrs = append(c.optionErrs, fmt.Sprintf("WithEndpointHeaders: %q is not an absolute URL", endpoint))
			return
		}
		c.headers = append(c.headers, destinationHeaders{
			scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Host),
			path: strings.TrimSuffix(u.Path, "/"), header: h.Clone(),
		})
	})
}

// destinationHeaders are headers configured for the destinations under one
// URL (WithEndpointHeaders).
type destinationHeaders struct {
	scheme, host, path string
	header             http.Header
}

// headersFor returns the configured headers of the destination of u: the
// entry with the same scheme and host whose path is u's path or a parent of
// it, the longest such; ok is false when none is configured.
func (c *config) headersFor(u *url.URL) (h http.Header, ok bool) {
	best := -1
	for _, d := range c.headers {
		if d.scheme != strings.ToLower(u.Scheme) || d.host != strings.ToLower(u.Host) {
			continue
		}
		if u.Path != d.path && !strings.HasPrefix(u.Path, d.path+"/") {
			continue
		}
		if len(d.path) > best {
			best, h, ok = len(d.path), d.header, true
		}
	}
	return h, ok
}

// WithCallerRetry tells the Transport that its caller retries an export
// RoundTrip returns an error for, as the otlpretry relay does by answering
// its client 503 with Retry-After. Such an export, one the spool cannot
// take (full, a disk error, too large, or closed), is then counted in
// Stats.Refused and logged at WARN. Without it, it is counted in
// Stats.Dropped and logged at ERROR: the OTel OTLP/HTTP exporters do not
// retry an error from their client's transport, so it is lost. Default off.
func WithCallerRetry() Option { return optionFunc(func(c *config) { c.callerRetry = true }) }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// WithMeterProvider publishes Stats as OTel metrics. Default none.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// withClock and withJitter make tests deterministic.
func withClock(c clockwork.Clock) Option { return optionFunc(func(cfg *config) { cfg.clock = c }) }
func withJitter(f func() float64) Option { return optionFunc(func(cfg *config) { cfg.jitter = f }) }
func withSpoolOptions(opts ...spool.Option) Option {
	return optionFunc(func(cfg *config) { cfg.spoolOpts = append(cfg.spoolOpts, opts...) })
}
func withEvents(f func(senderEvent)) Option {
	return optionFunc(func(cfg *config) { cfg.onEvent = f })
}

func newConfig(opts []Option) (*config, error) {
	c := &config{
		attemptTimeout: map[spool.Signal]time.Duration{},
		clock:          clockwork.NewRealClock(),
		jitter:         rand.Float64,
	}
	c.fromEnv(os.Getenv)
	for _, o := range opts {
		o.apply(c)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	for _, w := range c.envWarnings {
		c.logger.Warn("otlpretry: ignoring an environment variable that cannot be read; the default or the Option applies", "variable", w)
	}
	if err := c.resolve(); err != nil {
		return nil, err
	}
	if c.next == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// The default keeps 2 idle connections a host: fewer than the
		// sends in flight while draining, which would then reconnect for
		// every request.
		tr.MaxIdleConnsPerHost = max(16, 2*c.maxWindow())
		c.next, c.ownNext = tr, true
	}
	if c.dir == "" {
		dir, err := defaultDir()
		if err != nil {
			return nil, err
		}
		c.dir = dir
	}
	return c, nil
}

// resolve applies the rule of the Defaults: zero keeps the default,
// negative turns off what can be off and is an error elsewhere. It leaves
// the values the config type documents.
func (c *config) resolve() error {
	bad := append([]string(nil), c.optionErrs...)
	// can be off: zero is the default, negative is off (internal zero, or
	// the value named).
	offable := func(v *time.Duration, def, off time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = off
		}
	}
	offable(&c.maxHold, DefaultMaxHold, 0)
	offable(&c.immediateRetryDelay, DefaultImmediateRetryDelay, -1)
	offable(&c.slowAttempt, DefaultSlowAttempt, 0)
	offable(&c.probeInterval, DefaultProbeInterval, 0)
	offable(&c.busyProbeInterval, DefaultBusyProbeInterval, 0)
	offable(&c.maxAge, 0, 0)
	offable(&c.logInterval, DefaultLogInterval, 0)
	// cannot be off: zero is the default, negative an error.
	required := func(name string, v *time.Duration, def time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			bad = append(bad, fmt.Sprintf("%s must not be negative, got %v", name, *v))
		}
	}
	required("max immediate wait", &c.maxImmediateWait, DefaultMaxImmediateWait)
	required("backoff initial", &c.backoffInitial, DefaultBackoffInitial)
	required("backoff max", &c.backoffMax, DefaultBackoffMax)
	required("max retry-after", &c.maxRetryAfter, DefaultMaxRetryAfter)
	required("probe timeout", &c.probeTimeout, DefaultProbeTimeout)
	for _, s := range []spool.Signal{spool.SignalUnknown, spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs} {
		d := c.attemptTimeout[s]
		required("attempt timeout", &d, DefaultAttemptTimeout)
		c.attemptTimeout[s] = d
	}
	switch {
	case c.maxBytes == 0:
		c.maxBytes = DefaultMaxBytes
	case c.maxBytes < 0:
		bad = append(bad, fmt.Sprintf("max bytes must not be negative, got %d", c.maxBytes))
	}
	switch {
	case c.maxRequestBytes == 0:
		c.maxRequestBytes = DefaultMaxRequestBytes
	case c.maxRequestBytes < 0:
		c.maxRequestBytes = 0
	}
	switch {
	case c.maxInflightBytes == 0:
		c.maxInflightBytes = DefaultMaxInflightBytes
	case c.maxInflightBytes < 0:
		c.maxInflightBytes = 0
	}
	switch {
	case c.concurrency == 0:
		c.concurrency = DefaultConcurrency
	case c.concurrency < 0:
		bad = append(bad, fmt.Sprintf("concurrency must not be negative, got %d", c.concurrency))
	}
	if len(bad) == 0 && c.backoffMax < c.backoffInitial {
		bad = append(bad, fmt.Sprintf("backoff must satisfy initial (%v) <= max (%v)", c.backoffInitial, c.backoffMax))
	}
	if len(bad) > 0 {
		return fmt.Errorf("otlpretry: %s", strings.Join(bad, "; "))
	}
	return nil
}

// maxWindow is the most requests of stored exports one destination has
// in flight.
func (c *config) maxWindow() int { return max(batch.DefaultMaxWindow, c.concurrency) }

// fromEnv reads OTLPRETRY_* and the OTLP exporters' timeouts; it runs
// before the options, which therefore win. A value that cannot be read is
// ignored and kept in envWarnings, never an error: a typo in the
// environment must not stop the application, and an Option may set the
// same thing anyway.
func (c *config) fromEnv(getenv func(string) string) {
	warn := func(name, v string, why any) {
		c.envWarnings = append(c.envWarnings, fmt.Sprintf("%s=%q: %v", name, v, why))
	}
	dur := func(name string, dst *time.Duration) {
		if v := getenv(name); v != "" {
			// A bare zero or negative number needs no unit: "0" keeps the
			// default and "-1" turns the setting off, as for Options.
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n <= 0 {
				*dst = time.Duration(n)
				return
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				warn(name, v, err)
				return
			}
			*dst = d
		}
	}
	integer := func(name string, dst *int64) {
		if v := getenv(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				warn(name, v, err)
				return
			}
			*dst = n
		}
	}
	if v := getenv("OTLPRETRY_DIR"); v != "" {
		c.dir = v
	}
	integer("OTLPRETRY_MAX_BYTES", &c.maxBytes)
	conc := int64(c.concurrency)
	integer("OTLPRETRY_CONCURRENCY", &conc)
	c.concurrency = int(conc)
	integer("OTLPRETRY_MAX_REQUEST_BYTES", &c.maxRequestBytes)
	integer("OTLPRETRY_MAX_INFLIGHT_BYTES", &c.maxInflightBytes)
	if v := getenv("OTLPRETRY_SYNC"); v != "" {
		if m, err := spool.ParseSyncMode(v); err != nil {
			warn("OTLPRETRY_SYNC", v, err)
		} else {
			c.syncMode = m
		}
	}
	if v := getenv("OTLPRETRY_FULL_POLICY"); v != "" {
		if p, err := spool.ParseFullPolicy(v); err != nil {
			warn("OTLPRETRY_FULL_POLICY", v, err)
		} else {
			c.fullPolicy = p
		}
	}
	dur("OTLPRETRY_MAX_AGE", &c.maxAge)
	dur("OTLPRETRY_MAX_HOLD", &c.maxHold)
	dur("OTLPRETRY_IMMEDIATE_RETRY_DELAY", &c.immediateRetryDelay)
	dur("OTLPRETRY_MAX_IMMEDIATE_WAIT", &c.maxImmediateWait)
	dur("OTLPRETRY_SLOW_ATTEMPT", &c.slowAttempt)
	dur("OTLPRETRY_BACKOFF_INITIAL", &c.backoffInitial)
	dur("OTLPRETRY_BACKOFF_MAX", &c.backoffMax)
	dur("OTLPRETRY_MAX_RETRY_AFTER", &c.maxRetryAfter)
	dur("OTLPRETRY_PROBE_INTERVAL", &c.probeInterval)
	dur("OTLPRETRY_PROBE_TIMEOUT", &c.probeTimeout)
	dur("OTLPRETRY_BUSY_PROBE_INTERVAL", &c.busyProbeInterval)
	dur("OTLPRETRY_LOG_INTERVAL", &c.logInterval)

	// The OTLP exporters' own timeout, in milliseconds, general then per
	// signal, as the exporters read it.
	ms := func(name string) (time.Duration, bool) {
		v := getenv(name)
		if v == "" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			warn(name, v, "want milliseconds")
			return 0, false
		}
		return time.Duration(n) * time.Millisecond, true
	}
	var general time.Duration // zero: the default, applied by resolve
	if d, ok := ms("OTEL_EXPORTER_OTLP_TIMEOUT"); ok {
		general = d
	}
	c.attemptTimeout[spool.SignalUnknown] = general
	for sig, name := range map[spool.Signal]string{
		spool.SignalTraces:  "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
		spool.SignalMetrics: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
		spool.SignalLogs:    "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
	} {
		c.attemptTimeout[sig] = general
		if d, ok := ms(name); ok {
			c.attemptTimeout[sig] = d
		}
	}
}

// defaultDir is per program, so that two programs of one user do not send
// each other's exports with the wrong credentials.
func defaultDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("otlpretry: no spool folder given and no user cache folder: %w", err)
	}
	name := "default"
	if exe, err := os.Executable(); err == nil {
		name = sanitizeName(filepath.Base(exe))
	}
	return filepath.Join(base, "otlpretry", name), nil
}

func sanitizeName(s string) string {
	s = strings.TrimSuffix(s, ".exe")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 || strings.Trim(b.String(), ".") == "" {
		return "default"
	}
	return b.String()
}
