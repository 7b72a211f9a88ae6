package spool

import "time"

// Stats is a snapshot of a spool, as this process sees it.
type Stats struct {
	// Records and Bytes waiting or being sent. Bytes is estimated, in
	// proportion to their records, for segments another process left part
	// sent until this one starts on them.
	Records int
	Bytes   int64
	// DiskBytes is what the spool's files take, delivered records in
	// segments not yet fully delivered included: what the cap counts,
	// with QuarantineBytes.
	DiskBytes int64
	// Claimed records are being sent now.
	Claimed int
	// Oldest is the creation time of the oldest record; zero when empty.
	Oldest time.Time
	// Quarantined records and their bytes (with the .why files) on disk.
	Quarantined     int
	QuarantineBytes int64
	// Stored, Acked and Released count successful operations since Open.
	Stored, Acked, Released uint64
	// Dropped counts records lost, by reason, since Open.
	Dropped Drops
}

// Drops counts records lost, by reason. It is the one type for every view
// of a spool's losses: the spool's Stats, the transport's Stats and the
// metrics built on them.
type Drops struct {
	// Full: refused at the cap (DropNewest), Put returned ErrFull.
	Full uint64
	// Evicted: deleted at the cap to make room (DropOldest).
	Evicted uint64
	// Disk: Put failed on a disk error (full disk, read-only, a failed
	// sync) and returned an *Error. In SyncDurable mode a record whose
	// write succeeded and whose sync failed is counted here, yet stays
	// stored and may still be delivered.
	Disk uint64
	// Expired: older than the maximum age when claimed.
	Expired uint64
	// Corrupt: unreadable on disk; quarantined.
	Corrupt uint64
	// TooLarge: larger than the cap or MaxBodySize; Put returned
	// ErrTooLarge.
	TooLarge uint64
	// Closed: Put after Close, which returned ErrClosed.
	Closed uint64
	// QuarantineEvicted: quarantined, then deleted from a quarantine at
	// its bound (WithQuarantineMaxBytes), oldest first.
	QuarantineEvicted uint64
}

// Total adds every reason up.
func (d Drops) Total() uint64 {
	return d.Full + d.Evicted + d.Disk + d.Expired + d.Corrupt + d.TooLarge + d.Closed + d.QuarantineEvicted
}

// OldestAge is how long the oldest record has waited, at now.
func (st Stats) OldestAge(now time.Time) time.Duration {
	if st.Oldest.IsZero() {
		return 0
	}
	return now.Sub(st.Oldest)
}

// Stats returns a snapshot.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.counts
	st.Claimed = len(s.claimed)
	st.DiskBytes = s.diskBytes
	st.Quarantined = len(s.quarantined)
	st.QuarantineBytes = s.quarantineBytes
	for _, seg := range s.segs {
		if seg.gone || seg.records <= seg.settled {
			continue
		}
		st.Records += seg.records - seg.settled
		st.Bytes += seg.live
		if !st.Oldest.IsZero() {
			continue
		}
		st.Oldest = seg.key.Created()
		if seg.oldest != (ID{}) {
			st.Oldest = seg.oldest.Created()
		}
		if seg.slots != nil {
			for seg.firstLive < len(seg.slots) && seg.slots[seg.firstLive].state == slotSettled {
				seg.firstLive++
			}
			if seg.firstLive < len(seg.slots) {
				st.Oldest = seg.slots[seg.firstLive].id.Created()
			}
		}
	}
	return st
}
