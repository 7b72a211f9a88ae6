package spool

import "time"

// Stats is a snapshot of a spool, as this process sees it.
type Stats struct {
	// Records and Bytes waiting or being sent.
	Records int
	Bytes   int64
	// Claimed records are being sent now.
	Claimed int
	// Oldest is the creation time of the oldest record; zero when empty.
	Oldest time.Time
	// Quarantined records and their bytes (with the .why files) on disk.
	Quarantined     int
	QuarantineBytes int64
	// Stored, Acked and Released count successful operations since Open.
	Stored, Acked, Released uint64
	// PutErrors counts puts that failed on the disk (full disk, read-only).
	PutErrors uint64
	Dropped   Drops
}

// Drops counts records lost, by reason.
type Drops struct {
	Full               uint64 // refused at the cap (DropNewest)
	Evicted            uint64 // deleted at the cap to make room (DropOldest)
	Expired            uint64 // older than the maximum age when claimed
	Corrupt            uint64 // unreadable on disk; quarantined
	TooLarge           uint64 // larger than the cap or MaxBodySize
	QuarantineOverflow uint64 // deleted from a full quarantine
}

// Total adds every reason up.
func (d Drops) Total() uint64 {
	return d.Full + d.Evicted + d.Expired + d.Corrupt + d.TooLarge + d.QuarantineOverflow
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
	st.Records = s.queue.Len() + len(s.claimed)
	st.Claimed = len(s.claimed)
	st.Bytes = s.bytes
	st.Quarantined = len(s.quarantined)
	st.QuarantineBytes = s.quarantineBytes
	var oldest ID
	if s.queue.Len() > 0 {
		oldest = s.queue.peek().id
	}
	for id := range s.claimed {
		if oldest == (ID{}) || id.less(oldest) {
			oldest = id
		}
	}
	if oldest != (ID{}) {
		st.Oldest = oldest.Created()
	}
	return st
}
