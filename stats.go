package otlpretry

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/otlpretry/otlpretry/spool"
)

// Stats is a snapshot of what the transport has done since New.
type Stats struct {
	// Waiting exports in the spool (as this process sees it), their bytes
	// on disk, and the age of the oldest.
	Records   int
	Bytes     int64
	OldestAge time.Duration
	// CircuitOpen is true while the endpoint fails and new exports go
	// straight to the spool.
	CircuitOpen bool

	// Direct exports delivered by the first attempt or the immediate retry.
	Direct uint64
	// Spooled exports handed to the spool, and Delivered ones sent from it.
	Spooled, Delivered uint64
	// Retried counts failed attempts that will be tried again.
	Retried uint64
	// Rejected exports got a definite refusal (a 4xx other than 408 and
	// 429) on the direct path and were returned to the exporter as they
	// came; Quarantined spooled ones got one from the background sender.
	Rejected, Quarantined uint64
	// Dropped exports, by reason.
	Dropped Drops
}

// Drops counts exports lost, by reason.
type Drops struct {
	// Full: the spool was at its cap (policy drop-newest); Evicted: deleted
	// at the cap to make room (drop-oldest).
	Full, Evicted uint64
	// Disk: the spool could not store the export (full disk, read-only).
	Disk uint64
	// Expired: older than the maximum age. Corrupt: unreadable on disk.
	Expired, Corrupt uint64
	// TooLarge: over the spool's size limits, or a body that could not be
	// read again to be stored.
	TooLarge uint64
	// Closed: arrived while shutting down.
	Closed uint64
}

// Total adds every reason up.
func (d Drops) Total() uint64 {
	return d.Full + d.Evicted + d.Disk + d.Expired + d.Corrupt + d.TooLarge + d.Closed
}

type counters struct {
	direct, spooled, delivered, retried, rejected, quarantined atomic.Uint64
	dropDisk, dropClosed                                       atomic.Uint64
	// dropUnstorable: a body over the spool's limit or unreadable, which
	// the spool never saw and so did not count.
	dropUnstorable atomic.Uint64
}

// countDrop counts a failed Put whose reason the spool does not count
// itself (it counts full, too-large, evicted, expired and corrupt).
func (c *counters) countDrop(err error) {
	switch {
	case errors.Is(err, spool.ErrClosed):
		c.dropClosed.Add(1)
	case errors.Is(err, spool.ErrFull), errors.Is(err, spool.ErrTooLarge):
	default:
		c.dropDisk.Add(1)
	}
}

// Stats returns a snapshot.
func (t *Transport) Stats() Stats {
	sp := t.spool.Stats()
	return Stats{
		Records:     sp.Records,
		Bytes:       sp.Bytes,
		OldestAge:   sp.OldestAge(t.cfg.clock.Now()),
		CircuitOpen: t.circuitOpen.Load(),
		Direct:      t.counters.direct.Load(),
		Spooled:     t.counters.spooled.Load(),
		Delivered:   t.counters.delivered.Load(),
		Retried:     t.counters.retried.Load(),
		Rejected:    t.counters.rejected.Load(),
		Quarantined: t.counters.quarantined.Load(),
		Dropped: Drops{
			Full:     sp.Dropped.Full,
			Evicted:  sp.Dropped.Evicted,
			Disk:     t.counters.dropDisk.Load(),
			Expired:  sp.Dropped.Expired,
			Corrupt:  sp.Dropped.Corrupt,
			TooLarge: sp.Dropped.TooLarge + t.counters.dropUnstorable.Load(),
			Closed:   t.counters.dropClosed.Load(),
		},
	}
}
