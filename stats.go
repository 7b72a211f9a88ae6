package otlpretry

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/otlpretry/otlpretry/spool"
)

// Stats is a snapshot of what the transport has done since New.
//
// Every export RoundTrip takes (a POST with a body) ends in exactly one of
// Direct, Rejected, Spooled, Quarantined (refused at the end of its hold),
// a Refused reason or a Dropped reason at the door (Full, Disk, TooLarge,
// Closed); a Spooled export then ends in Delivered, Quarantined or a
// Dropped reason of the spool (Evicted, Expired, Corrupt), or still waits.
// Exports an earlier process left in the spool add to Delivered,
// Quarantined and the spool's reasons without having been counted here.
type Stats struct {
	// Waiting exports in the spool (as this process sees it), their bytes
	// on disk, and the age of the oldest.
	Records   int
	Bytes     int64
	OldestAge time.Duration
	// CircuitOpen is true while some destination fails and new exports
	// to it go straight to the spool.
	CircuitOpen bool
	// Destinations is the state of delivery to each destination that has
	// failed, or for which exports were stored, since New, sorted by URL.
	// A destination whose exports have all gone direct is not listed: its
	// exports never needed a lane, and the hot path does not make one.
	Destinations []DestinationStats

	// Direct exports were delivered by their own attempts: the first, the
	// immediate retry, or one that outlived the exporter's hold.
	Direct uint64
	// Spooled exports were answered as stored and left to the background
	// sender; Delivered ones were then sent by it.
	Spooled, Delivered uint64
	// Retried counts failed attempts that will be tried again.
	Retried uint64
	// Rejected exports got a definite refusal (a 4xx other than 408 and
	// 429) while the exporter waited for them, and were returned to it as
	// they came; nothing of them is stored.
	Rejected uint64
	// Quarantined exports were answered as stored and then got a definite
	// refusal, from the background sender or from their own attempt after
	// the hold; each was moved to the spool's quarantine folder, where it
	// stays until the quarantine's bound evicts it
	// (Dropped.QuarantineEvicted).
	Quarantined uint64
	// PartialRejected counts the items (spans, data points, log records)
	// that endpoints said they dropped, in the partial_success of a 2xx
	// answer to the background sender, from exports counted Delivered. They
	// are logged and never sent again, as the OTLP specification requires.
	PartialRejected uint64
	// Refused exports could not be stored (the spool full, a disk error,
	// too large, closed) and RoundTrip returned an error for them, which
	// the caller retries (WithCallerRetry): they are not lost here. Only
	// Full, Disk, TooLarge and Closed are counted in Refused.
	Refused Drops
	// Dropped exports are lost, by reason. Without WithCallerRetry an
	// export the spool cannot take is lost when RoundTrip returns its
	// error: the OTel OTLP/HTTP exporters do not retry an error from
	// their client's transport.
	Dropped Drops
}

// Drops counts exports lost, by reason. It is spool.Drops: one type for
// every view of the losses (the spool's Stats, the transport's Stats, the
// OTel metrics and the relay's /status and /metrics).
//
// In the transport's Stats, Full, Disk, TooLarge and Closed count the
// exports RoundTrip returned an error for, once each: those the spool
// refused, and bodies it never saw (over spool.MaxBodySize, or unreadable,
// counted as TooLarge). The spool's own counts of these reasons include
// refusals the transport recovered from (an export the spool could not
// take at the end of its hold, then delivered by its own attempt), so they
// may be higher. Evicted, Expired, Corrupt and QuarantineEvicted are the
// spool's.
type Drops = spool.Drops

type counters struct {
	direct, spooled, delivered, retried, rejected, quarantined atomic.Uint64
	partialRejected                                            atomic.Uint64
	// lost counts the exports RoundTrip returned an error for, by reason;
	// refused the same with WithCallerRetry.
	lost, refused doorCounts
}

// doorCounts counts the exports the spool could not take, by reason.
type doorCounts struct {
	full, disk, tooLarge, closed atomic.Uint64
}

// add counts the export that err kept out of the spool: an error from
// spool.Put, or from reading the body (counted as too large).
func (c *doorCounts) add(err error) {
	var serr *spool.Error
	switch {
	case errors.Is(err, spool.ErrFull):
		c.full.Add(1)
	case errors.Is(err, spool.ErrClosed):
		c.closed.Add(1)
	case errors.As(err, &serr):
		c.disk.Add(1)
	default:
		c.tooLarge.Add(1)
	}
}

// into sets d's door reasons from c.
func (c *doorCounts) into(d *Drops) {
	d.Full, d.Disk, d.TooLarge, d.Closed = c.full.Load(), c.disk.Load(), c.tooLarge.Load(), c.closed.Load()
}

// Stats returns a snapshot.
func (t *Transport) Stats() Stats {
	sp := t.spool.Stats()
	dropped := sp.Dropped
	t.counters.lost.into(&dropped)
	var refused Drops
	t.counters.refused.into(&refused)
	return Stats{
		Records:         sp.Records,
		Bytes:           sp.Bytes,
		OldestAge:       sp.OldestAge(t.cfg.clock.Now()),
		CircuitOpen:     t.circuits.anyOpen(),
		Destinations:    t.circuits.stats(),
		Direct:          t.counters.direct.Load(),
		Spooled:         t.counters.spooled.Load(),
		Delivered:       t.counters.delivered.Load(),
		Retried:         t.counters.retried.Load(),
		Rejected:        t.counters.rejected.Load(),
		Quarantined:     t.counters.quarantined.Load(),
		PartialRejected: t.counters.partialRejected.Load(),
		Refused:         refused,
		Dropped:         dropped,
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
