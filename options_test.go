package otlpretry

import (
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
	if err := c.fromEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
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

func TestBadConfigIsAClearError(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		opts []Option
		want string
	}{
		{"bad duration", map[string]string{"OTLPRETRY_MAX_HOLD": "soon"}, nil, "OTLPRETRY_MAX_HOLD"},
		{"bad sync", map[string]string{"OTLPRETRY_SYNC": "always"}, nil, "unknown sync mode"},
		{"bad timeout", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, nil, "want milliseconds"},
		{"zero concurrency", nil, []Option{WithConcurrency(0)}, "concurrency"},
		{"backoff inverted", nil, []Option{WithBackoff(time.Minute, time.Second)}, "backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := New(append([]Option{WithDir(t.TempDir())}, tc.opts...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
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
