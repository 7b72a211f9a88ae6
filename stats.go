package otlpretry

import (
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
	// CircuitOpen is true while some destination fails and new exports
	// to it go straight to the spool.
	CircuitOpen bool
	// Destinations is the state of delivery to each destination this
	// process has sent to or found exports for, sorted by URL.
	Destinations []DestinationStats

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

// Drops counts exports lost, by reason. It is spool.Drops: one type for
// every view of the losses (the spool's Stats, the transport's Stats, the
// OTel metrics and the relay's /status and /metrics). The transport adds to
// TooLarge the bodies the spool never saw: over its limit, or unreadable.
type Drops = spool.Drops

type counters struct {
	direct, spooled, delivered, retried, rejected, quarantined atomic.Uint64
	// dropUnstorable: a body over the spool's limit or unreadable, which
	// the spool never saw and so did not count.
	dropUnstorable atomic.Uint64
}

// Stats returns a snapshot.
func (t *Transport) Stats() Stats {
	sp := t.spool.Stats()
	dropped := sp.Dropped
	dropped.TooLarge += t.counters.dropUnstorable.Load()
	return Stats{
		Records:      sp.Records,
		Bytes:        sp.Bytes,
		OldestAge:    sp.OldestAge(t.cfg.clock.Now()),
		CircuitOpen:  t.circuits.anyOpen(),
		Destinations: t.circuits.stats(),
		Direct:       t.counters.direct.Load(),
		Spooled:      t.counters.spooled.Load(),
		Delivered:    t.counters.delivered.Load(),
		Retried:      t.counters.retried.Load(),
		Rejected:     t.counters.rejected.Load(),
		Quarantined:  t.counters.quarantined.Load(),
		Dropped:      dropped,
	}
}

// waiting lists the destinations that are not healthy.
func (st Stats) waiting() []DestinationStats {
	var out []DestinationStats
	for _, d := range st.Destinations {
		if d.State != stateHealthy {
			out = append(out, d)
		}
	}
	return out
}
