package spool

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// SyncMode says which failures a stored record survives.
type SyncMode int

const (
	// SyncProcess: a record survives the death of the process at any
	// instant, kill -9 included, but not a power loss or kernel crash. Each
	// record is appended to its segment, and Put returns once the write is
	// done; nothing is fsynced. A write cut short by the
	// death of the process leaves a torn record at the end of the segment,
	// which the next process cuts off. This is the default.
	SyncProcess SyncMode = iota
	// SyncDurable: a record also survives power loss. Put returns only once
	// the segment's data is on stable storage, and a new segment's folder
	// entry too. Concurrent puts share one sync (group commit).
	SyncDurable
)

func (m SyncMode) String() string {
	switch m {
	case SyncProcess:
		return "process"
	case SyncDurable:
		return "durable"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// ParseSyncMode reads "process" or "durable".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "process":
		return SyncProcess, nil
	case "durable":
		return SyncDurable, nil
	}
	return 0, fmt.Errorf("unknown sync mode %q (want process or durable)", s)
}

// FullPolicy decides what goes when a new record would take the spool over
// its byte cap.
type FullPolicy int

const (
	// DropNewest refuses the new record with ErrFull, keeping what is
	// stored. This is the default, as in the reference SDK.
	DropNewest FullPolicy = iota
	// DropOldest deletes the oldest waiting records until the new one fits.
	DropOldest
)

func (p FullPolicy) String() string {
	switch p {
	case DropNewest:
		return "drop-newest"
	case DropOldest:
		return "drop-oldest"
	}
	return fmt.Sprintf("FullPolicy(%d)", int(p))
}

// ParseFullPolicy reads "drop-newest" or "drop-oldest".
func ParseFullPolicy(s string) (FullPolicy, error) {
	switch s {
	case "drop-newest":
		return DropNewest, nil
	case "drop-oldest":
		return DropOldest, nil
	}
	return 0, fmt.Errorf("unknown full policy %q (want drop-newest or drop-oldest)", s)
}

// Defaults.
const (
	DefaultMaxBytes           = 512 << 20
	DefaultQuarantineMaxBytes = 64 << 20
	DefaultRescanInterval     = 5 * time.Second
)

// neverStored are credential headers that are refused even when allow-listed:
// a configuration mistake must not put a token on disk.
var neverStored = map[string]bool{
	"Authorization":       true,
	"Proxy-Authorization": true,
	"Cookie":              true,
}

type config struct {
	sync            SyncMode
	maxBytes        int64
	policy          FullPolicy
	maxAge          time.Duration
	quarantineBytes int64
	allowHeaders    map[string]bool
	now             func() time.Time
	fs              FS
	logger          *slog.Logger
	rescanInterval  time.Duration
	segmentBytes    int64 // 0: DefaultSegmentBytes, or a sixteenth of the cap
}

func newConfig(opts []Option) (config, error) {
	c := config{
		sync:            SyncProcess,
		maxBytes:        DefaultMaxBytes,
		policy:          DropNewest,
		quarantineBytes: DefaultQuarantineMaxBytes,
		allowHeaders:    map[string]bool{},
		now:             time.Now,
		fs:              OSFS{},
		rescanInterval:  DefaultRescanInterval,
	}
	for _, o := range opts {
		o.apply(&c)
	}
	switch {
	case c.maxBytes <= 0:
		return c, fmt.Errorf("spool: max bytes must be positive, got %d", c.maxBytes)
	case c.quarantineBytes < 0:
		return c, fmt.Errorf("spool: quarantine max bytes must not be negative, got %d", c.quarantineBytes)
	case c.maxAge < 0:
		return c, fmt.Errorf("spool: max age must not be negative, got %v", c.maxAge)
	case c.sync != SyncProcess && c.sync != SyncDurable:
		return c, fmt.Errorf("spool: unknown sync mode %d", c.sync)
	case c.policy != DropNewest && c.policy != DropOldest:
		return c, fmt.Errorf("spool: unknown full policy %d", c.policy)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, nil
}

// Option configures Open.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithSync sets what a stored record survives. Default SyncProcess.
func WithSync(m SyncMode) Option { return optionFunc(func(c *config) { c.sync = m }) }

// WithMaxBytes caps the bytes the spool keeps on disk: waiting records,
// records being sent and the quarantine, headers included. Default 512 MiB.
func WithMaxBytes(n int64) Option { return optionFunc(func(c *config) { c.maxBytes = n }) }

// WithFullPolicy sets what is dropped at the cap. Default DropNewest.
func WithFullPolicy(p FullPolicy) Option { return optionFunc(func(c *config) { c.policy = p }) }

// WithMaxAge drops records older than d when they are claimed, counted as
// expired. Default 0: records never expire.
func WithMaxAge(d time.Duration) Option { return optionFunc(func(c *config) { c.maxAge = d }) }

// WithQuarantineMaxBytes bounds the dead-letter folder; past it the oldest
// quarantined files are deleted (counted). Default 64 MiB, within the
// overall cap.
func WithQuarantineMaxBytes(n int64) Option {
	return optionFunc(func(c *config) { c.quarantineBytes = n })
}

// WithHeaderAllowList names the request headers stored with a record, for
// example a tenant header that routes data. Default none. Authorization,
// Proxy-Authorization and Cookie are never stored, even when listed.
func WithHeaderAllowList(names ...string) Option {
	return optionFunc(func(c *config) {
		for _, n := range names {
			n = http.CanonicalHeaderKey(n)
			if !neverStored[n] {
				c.allowHeaders[n] = true
			}
		}
	})
}

// WithClock sets the clock used for creation times and expiry. Default
// time.Now.
func WithClock(now func() time.Time) Option { return optionFunc(func(c *config) { c.now = now }) }

// WithFS sets the file system. Default OSFS.
func WithFS(fsys FS) Option { return optionFunc(func(c *config) { c.fs = fsys }) }

// WithLogger sets where corrupt files and adoptions are reported. Default
// slog.Default().
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// WithRescanInterval sets how often, at most, a spool with nothing left to
// claim looks at the folder again for records that other processes left
// behind (a process that died while this one runs). Default 5 s; a negative
// value turns rescans off, leaving adoption to Open only.
func WithRescanInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.rescanInterval = d })
}

// withSegmentBytes sets the size at which segments are sealed, for tests.
func withSegmentBytes(n int64) Option { return optionFunc(func(c *config) { c.segmentBytes = n }) }
