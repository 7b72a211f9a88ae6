package otlpretry

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/spool"
)

func TestConfigFromEnvironment(t *testing.T) {
	env := map[string]string{
		"OTLPRETRY_DIR":                      "/tmp/x",
		"OTLPRETRY_MAX_BYTES":                "1048576",
		"OTLPRETRY_SYNC":                     "durable",
		"OTLPRETRY_FULL_POLICY":              "drop-oldest",
		"OTLPRETRY_MAX_AGE":                  "24h",
		"OTLPRETRY_MAX_HOLD":                 "250ms",
		"OTLPRETRY_IMMEDIATE_RETRY_DELAY":    "2s",
		"OTLPRETRY_CONCURRENCY":              "8",
		"OTLPRETRY_BACKOFF_INITIAL":          "500ms",
		"OTLPRETRY_BACKOFF_MAX":              "1m",
		"OTLPRETRY_PROBE_INTERVAL":           "3s",
		"OTEL_EXPORTER_OTLP_TIMEOUT":         "5000",
		"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "7000",
	}
	c := &config{attemptTimeout: map[spool.Signal]time.Duration{}}
	c.fromEnv(func(k string) string { return env[k] })
	if len(c.envWarnings) != 0 {
		t.Fatalf("warnings for good values: %v", c.envWarnings)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"dir", c.dir, "/tmp/x"},
		{"maxBytes", c.maxBytes, int64(1 << 20)},
		{"sync", c.syncMode, spool.SyncDurable},
		{"policy", c.fullPolicy, spool.DropOldest},
		{"maxAge", c.maxAge, 24 * time.Hour},
		{"maxHold", c.maxHold, 250 * time.Millisecond},
		{"immediate", c.immediateRetryDelay, 2 * time.Second},
		{"concurrency", c.concurrency, 8},
		{"backoffInitial", c.backoffInitial, 500 * time.Millisecond},
		{"backoffMax", c.backoffMax, time.Minute},
		{"probe", c.probeInterval, 3 * time.Second},
		{"traces timeout", c.attemptTimeout[spool.SignalTraces], 5 * time.Second},
		{"metrics timeout", c.attemptTimeout[spool.SignalMetrics], 7 * time.Second},
		{"logs timeout", c.attemptTimeout[spool.SignalLogs], 5 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestOptionsWinOverEnvironment(t *testing.T) {
	t.Setenv("OTLPRETRY_CONCURRENCY", "9")
	t.Setenv("OTLPRETRY_DIR", t.TempDir())
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3000")
	c, err := newConfig([]Option{WithConcurrency(2), WithAttemptTimeout(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if c.concurrency != 2 || c.attemptTimeout[spool.SignalTraces] != time.Second {
		t.Fatalf("concurrency %d timeout %v: options must win", c.concurrency, c.attemptTimeout[spool.SignalTraces])
	}
	c, err = newConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.concurrency != 9 || c.attemptTimeout[spool.SignalLogs] != 3*time.Second {
		t.Fatalf("environment ignored: concurrency %d timeout %v", c.concurrency, c.attemptTimeout[spool.SignalLogs])
	}
}

// TestBadOptionIsAClearError: an Option that cannot hold (a negative value
// for a setting that cannot be off, an inverted backoff) fails New and
// says which setting.
func TestBadOptionIsAClearError(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"negative concurrency", []Option{WithConcurrency(-1)}, "concurrency"},
		{"negative max bytes", []Option{WithMaxBytes(-1)}, "max bytes"},
		{"negative attempt timeout", []Option{WithAttemptTimeout(-time.Second)}, "attempt timeout"},
		{"negative retry-after bound", []Option{WithMaxRetryAfter(-time.Second)}, "retry-after"},
		{"backoff inverted", []Option{WithBackoff(time.Minute, time.Second)}, "backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(append([]Option{WithDir(t.TempDir())}, tc.opts...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestBadEnvironmentIsLoggedAndIgnored: a variable that cannot be read
// never fails New (the OTel SDK treats its own variables so); it is logged,
// naming the variable, and the default or the Option applies.
func TestBadEnvironmentIsLoggedAndIgnored(t *testing.T) {
	for _, tc := range []struct {
		name, variable, value string
		opts                  []Option
		check                 func(*config) bool
	}{
		{"bad duration, default applies", "OTLPRETRY_MAX_HOLD", "soon", nil,
			func(c *config) bool { return c.maxHold == DefaultMaxHold }},
		{"bad duration, option applies", "OTLPRETRY_MAX_HOLD", "soon", []Option{WithMaxHold(time.Second)},
			func(c *config) bool { return c.maxHold == time.Second }},
		{"bad sync", "OTLPRETRY_SYNC", "always", nil,
			func(c *config) bool { return c.syncMode == spool.SyncProcess }},
		{"bad integer", "OTLPRETRY_CONCURRENCY", "many", []Option{WithConcurrency(3)},
			func(c *config) bool { return c.concurrency == 3 }},
		{"number without a unit", "OTLPRETRY_MAX_HOLD", "5", nil,
			func(c *config) bool { return c.maxHold == DefaultMaxHold }},
		{"bad timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", "10s", nil,
			func(c *config) bool { return c.attemptTimeout[spool.SignalTraces] == DefaultAttemptTimeout }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.variable, tc.value)
			var logged strings.Builder
			opts := append([]Option{WithDir(t.TempDir()), WithLogger(slog.New(slog.NewTextHandler(&logged, nil)))}, tc.opts...)
			c, err := newConfig(opts)
			if err != nil {
				t.Fatalf("New must not fail on a bad variable: %v", err)
			}
			if !tc.check(c) {
				t.Errorf("the bad value was not ignored: %+v", c)
			}
			if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), tc.variable) {
				t.Errorf("no warning naming %s; logged:\n%s", tc.variable, logged.String())
			}
			tr, err := New(opts...)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			tr.Shutdown(context.Background())
		})
	}
}

// TestZeroIsDefaultNegativeIsOff: the one rule for numeric settings.
func TestZeroIsDefaultNegativeIsOff(t *testing.T) {
	t.Setenv("OTLPRETRY_DIR", t.TempDir())
	zero, err := newConfig([]Option{WithMaxHold(0), WithImmediateRetryDelay(0), WithProbe(0, 0),
		WithBusyProbe(0), WithSlowAttempt(0), WithLogInterval(0), WithConcurrency(0),
		WithMaxBytes(0), WithAttemptTimeout(0), WithBackoff(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []struct {
		name      string
		got, want any
	}{
		{"max hold", zero.maxHold, DefaultMaxHold},
		{"immediate retry", zero.immediateRetryDelay, DefaultImmediateRetryDelay},
		{"probe", zero.probeInterval, DefaultProbeInterval},
		{"probe timeout", zero.probeTimeout, DefaultProbeTimeout},
		{"busy probe", zero.busyProbeInterval, DefaultBusyProbeInterval},
		{"slow attempt", zero.slowAttempt, DefaultSlowAttempt},
		{"log interval", zero.logInterval, DefaultLogInterval},
		{"concurrency", zero.concurrency, DefaultConcurrency},
		{"max bytes", zero.maxBytes, int64(DefaultMaxBytes)},
		{"attempt timeout", zero.attemptTimeout[spool.SignalLogs], DefaultAttemptTimeout},
		{"backoff", zero.backoffMax, DefaultBackoffMax},
	} {
		if ch.got != ch.want {
			t.Errorf("zero %s: got %v, want the default %v", ch.name, ch.got, ch.want)
		}
	}
	t.Setenv("OTLPRETRY_PROBE_INTERVAL", "-1") // a bare negative number needs no unit
	if c, err := newConfig(nil); err != nil || c.probeInterval != 0 {
		t.Errorf("OTLPRETRY_PROBE_INTERVAL=-1: probe interval %v, err %v; want off", c.probeInterval, err)
	}
	off, err := newConfig([]Option{WithMaxHold(-1), WithImmediateRetryDelay(-1), WithProbe(-1, 0),
		WithBusyProbe(-1), WithSlowAttempt(-1), WithLogInterval(-1), WithMaxAge(-1)})
	if err != nil {
		t.Fatal(err)
	}
	if off.maxHold != 0 || off.immediateRetryDelay >= 0 || off.probeInterval != 0 || off.busyProbeInterval != 0 ||
		off.slowAttempt != 0 || off.logInterval != 0 || off.maxAge != 0 {
		t.Errorf("negative must turn off: %+v", off)
	}
}

func TestDefaultDirIsPerProgramUnderUserCache(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	dir, err := defaultDir()
	if err != nil {
		t.Skip("no user cache dir here:", err)
	}
	if !strings.Contains(dir, "otlpretry") || strings.ContainsAny(dir[strings.LastIndex(dir, "otlpretry"):], " *?") {
		t.Fatalf("default dir %q", dir)
	}
	if got := sanitizeName("my app*.exe"); got != "my_app_" {
		t.Fatalf("sanitizeName: %q", got)
	}
	if got := sanitizeName(".."); got != "default" {
		t.Fatalf("sanitizeName(..) = %q", got)
	}
}

// TestMaxRequestBytes: zero keeps the default of 1 MiB, a negative value
// turns merging off, and the variable is read as the Option is.
func TestMaxRequestBytes(t *testing.T) {
	t.Setenv("OTLPRETRY_DIR", t.TempDir())
	for _, tc := range []struct {
		name string
		env  string
		opts []Option
		want int64
	}{
		{"default", "", nil, DefaultMaxRequestBytes},
		{"zero", "", []Option{WithMaxRequestBytes(0)}, DefaultMaxRequestBytes},
		{"option", "", []Option{WithMaxRequestBytes(4 << 20)}, 4 << 20},
		{"negative is off", "", []Option{WithMaxRequestBytes(-1)}, 0},
		{"variable", "65536", nil, 65536},
		{"variable off", "-1", nil, 0},
		{"option wins", "-1", []Option{WithMaxRequestBytes(2 << 20)}, 2 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OTLPRETRY_MAX_REQUEST_BYTES", tc.env)
			c, err := newConfig(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.maxRequestBytes != tc.want {
				t.Errorf("max request bytes %d, want %d", c.maxRequestBytes, tc.want)
			}
		})
	}
	if DefaultMaxRequestBytes != 1<<20 {
		t.Errorf("default %d, want 1 MiB", DefaultMaxRequestBytes)
	}
}
