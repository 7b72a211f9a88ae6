package otlpretry

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/metric"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// Defaults. Each can be changed by an Option and by the environment
// variable named beside it; an Option wins over the environment.
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
	DefaultAdoptWait           = time.Minute            // OTLPRETRY_ADOPT_WAIT
	DefaultMaxBytes            = spool.DefaultMaxBytes
)

type config struct {
	next                http.RoundTripper
	ownNext             bool // next was made here, so Shutdown may close its idle connections
	dir                 string
	spoolOpts           []spool.Option
	maxBytes            int64
	syncMode            spool.SyncMode
	fullPolicy          spool.FullPolicy
	maxAge              time.Duration
	maxHold             time.Duration
	immediateRetryDelay time.Duration
	maxImmediateWait    time.Duration
	slowAttempt         time.Duration
	concurrency         int
	backoffInitial      time.Duration
	backoffMax          time.Duration
	maxRetryAfter       time.Duration
	probeInterval       time.Duration
	probeTimeout        time.Duration
	busyProbeInterval   time.Duration
	logInterval         time.Duration
	adoptWait           time.Duration
	attemptTimeout      map[spool.Signal]time.Duration
	headers             http.Header
	logger              *slog.Logger
	meterProvider       metric.MeterProvider
	clock               clockwork.Clock
	jitter              func() float64
	onEvent             func(senderEvent) // tests observe the sender's decisions
}

// senderEvent reports a decision of the background sender to tests.
type senderEvent struct {
	kind      string // "wait", "probe", "idle"
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
// clone of http.DefaultTransport is used.
func WithTransport(rt http.RoundTripper) Option {
	return optionFunc(func(c *config) { c.next = rt })
}

// WithDir sets the spool folder. Default (OTLPRETRY_DIR): a folder per
// program under os.UserCacheDir(), so that what a stopped or crashed run
// left is sent by the next run of the same program.
func WithDir(dir string) Option { return optionFunc(func(c *config) { c.dir = dir }) }

// WithMaxBytes caps the spool on disk. Default 512 MiB (OTLPRETRY_MAX_BYTES).
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

// WithMaxAge drops spooled exports older than d. Default 0, never
// (OTLPRETRY_MAX_AGE).
func WithMaxAge(d time.Duration) Option { return optionFunc(func(c *config) { c.maxAge = d }) }

// WithSpoolOptions passes further options to spool.Open, such as
// spool.WithHeaderAllowList.
func WithSpoolOptions(opts ...spool.Option) Option {
	return optionFunc(func(c *config) { c.spoolOpts = append(c.spoolOpts, opts...) })
}

// WithMaxHold bounds how long an export call waits on the endpoint. When
// the attempts (first try, immediate retry) have not ended by then, the
// export is stored, the exporter answered with success, and the attempts
// go on in the background, settling the stored copy. So a slow or
// blackholed endpoint never holds the SDK's batch processor longer than
// this, which at 2,000 spans/s and the SDK's default queue of 2,048 spans
// is what keeps it from dropping spans. Default 500 ms (OTLPRETRY_MAX_HOLD);
// 0 waits for the attempts to end, as the reference SDK does.
func WithMaxHold(d time.Duration) Option { return optionFunc(func(c *config) { c.maxHold = d }) }

// WithImmediateRetryDelay sets the wait before the one immediate retry of a
// failed export. Default 1 s (OTLPRETRY_IMMEDIATE_RETRY_DELAY). A negative
// value turns the immediate retry off: failed exports go to the spool at
// once.
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
// longer than d. Default 10 s (OTLPRETRY_SLOW_ATTEMPT).
func WithSlowAttempt(d time.Duration) Option {
	return optionFunc(func(c *config) { c.slowAttempt = d })
}

// WithConcurrency sets how many spooled exports are sent at once while the
// endpoint answers. Default 4 (OTLPRETRY_CONCURRENCY).
func WithConcurrency(n int) Option { return optionFunc(func(c *config) { c.concurrency = n }) }

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
// (OTLPRETRY_PROBE_INTERVAL, OTLPRETRY_PROBE_TIMEOUT). One probe runs at a
// time, so a blackholed endpoint sees one connection attempt per timeout;
// an endpoint whose name does not resolve is probed at most once a second,
// to spare the resolver. An interval of 0 turns probes off.
func WithProbe(interval, timeout time.Duration) Option {
	return optionFunc(func(c *config) { c.probeInterval, c.probeTimeout = interval, timeout })
}

// WithBusyProbe sets how often a busy endpoint (408, 429, 5xx without
// Retry-After) is probed with an empty export while a backoff wait longer
// than that runs; only an accepted probe ends the wait early. Default 10 s
// (OTLPRETRY_BUSY_PROBE_INTERVAL); 0 turns these probes off.
func WithBusyProbe(interval time.Duration) Option {
	return optionFunc(func(c *config) { c.busyProbeInterval = interval })
}

// WithLogInterval sets the least time between two log messages of one kind.
// Default 60 s (OTLPRETRY_LOG_INTERVAL).
func WithLogInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.logInterval = d })
}

// WithAttemptTimeout bounds each attempt to send an export. Default: the
// OTLP exporter's own setting, OTEL_EXPORTER_OTLP_TIMEOUT and its
// per-signal variants (milliseconds), else 10 s.
func WithAttemptTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		for _, s := range []spool.Signal{spool.SignalUnknown, spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs} {
			c.attemptTimeout[s] = d
		}
	})
}

// WithHeaders sets headers for sending spooled exports when no live request
// to the same endpoint has been seen, typically those a previous process
// left. They are kept in memory only. Default none.
func WithHeaders(h http.Header) Option {
	return optionFunc(func(c *config) { c.headers = h.Clone() })
}

// WithAdoptWait sets how long exports left by an earlier process wait for a
// live request to their endpoint, whose headers (credentials) they are then
// sent with. Default 60 s, the OTel metric reader's default interval
// (OTLPRETRY_ADOPT_WAIT). Exports are sent sooner when WithHeaders is given.
func WithAdoptWait(d time.Duration) Option {
	return optionFunc(func(c *config) { c.adoptWait = d })
}

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// WithMeterProvider publishes Stats as OTel metrics. Default none.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// withClock and withJitter make tests deterministic.
func withClock(c clockwork.Clock) Option { return optionFunc(func(cfg *config) { cfg.clock = c }) }
func withJitter(f func() float64) Option { return optionFunc(func(cfg *config) { cfg.jitter = f }) }
func withEvents(f func(senderEvent)) Option {
	return optionFunc(func(cfg *config) { cfg.onEvent = f })
}

func newConfig(opts []Option) (*config, error) {
	c := &config{
		maxBytes:            DefaultMaxBytes,
		maxHold:             DefaultMaxHold,
		immediateRetryDelay: DefaultImmediateRetryDelay,
		maxImmediateWait:    DefaultMaxImmediateWait,
		slowAttempt:         DefaultSlowAttempt,
		concurrency:         DefaultConcurrency,
		backoffInitial:      DefaultBackoffInitial,
		backoffMax:          DefaultBackoffMax,
		maxRetryAfter:       DefaultMaxRetryAfter,
		probeInterval:       DefaultProbeInterval,
		probeTimeout:        DefaultProbeTimeout,
		busyProbeInterval:   DefaultBusyProbeInterval,
		logInterval:         DefaultLogInterval,
		adoptWait:           DefaultAdoptWait,
		attemptTimeout:      map[spool.Signal]time.Duration{},
		clock:               clockwork.NewRealClock(),
		jitter:              rand.Float64,
	}
	if err := c.fromEnv(os.Getenv); err != nil {
		return nil, err
	}
	for _, o := range opts {
		o.apply(c)
	}
	if c.next == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// The default keeps 2 idle connections a host: fewer than the
		// sends in flight while draining, which would then reconnect for
		// every request.
		tr.MaxIdleConnsPerHost = max(16, 2*c.concurrency)
		c.next, c.ownNext = tr, true
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if c.dir == "" {
		dir, err := defaultDir()
		if err != nil {
			return nil, err
		}
		c.dir = dir
	}
	switch {
	case c.concurrency < 1:
		return nil, fmt.Errorf("otlpretry: concurrency must be at least 1, got %d", c.concurrency)
	case c.backoffInitial <= 0 || c.backoffMax < c.backoffInitial:
		return nil, fmt.Errorf("otlpretry: backoff must satisfy 0 < initial (%v) <= max (%v)", c.backoffInitial, c.backoffMax)
	case c.maxHold < 0 || c.logInterval < 0 || c.slowAttempt < 0 || c.probeInterval < 0 || c.busyProbeInterval < 0 || c.maxRetryAfter < 0:
		return nil, fmt.Errorf("otlpretry: durations must not be negative")
	}
	return c, nil
}

// fromEnv reads OTLPRETRY_* and the OTLP exporter timeouts; it runs before
// the options, which therefore win.
func (c *config) fromEnv(getenv func(string) string) error {
	var errs []string
	dur := func(name string, dst *time.Duration) {
		if v := getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
				return
			}
			*dst = d
		}
	}
	integer := func(name string, dst *int64) {
		if v := getenv(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
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
	if v := getenv("OTLPRETRY_SYNC"); v != "" {
		m, err := spool.ParseSyncMode(v)
		if err != nil {
			errs = append(errs, "OTLPRETRY_SYNC: "+err.Error())
		}
		c.syncMode = m
	}
	if v := getenv("OTLPRETRY_FULL_POLICY"); v != "" {
		p, err := spool.ParseFullPolicy(v)
		if err != nil {
			errs = append(errs, "OTLPRETRY_FULL_POLICY: "+err.Error())
		}
		c.fullPolicy = p
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
	dur("OTLPRETRY_ADOPT_WAIT", &c.adoptWait)

	// The OTLP exporters' own timeout, in milliseconds, general then per
	// signal, as the exporters read it.
	ms := func(name string) (time.Duration, bool) {
		v := getenv(name)
		if v == "" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("%s=%q: want milliseconds", name, v))
			return 0, false
		}
		return time.Duration(n) * time.Millisecond, true
	}
	general := DefaultAttemptTimeout
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
	if len(errs) > 0 {
		return fmt.Errorf("otlpretry: bad environment: %s", strings.Join(errs, "; "))
	}
	return nil
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
