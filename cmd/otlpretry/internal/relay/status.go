package relay

import (
	"time"

	"github.com/otlpretry/otlpretry"
)

// Status is the JSON document served on /status.
type Status struct {
	Upstream      string  `json:"upstream"`
	Dir           string  `json:"dir"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Upstreams is each forwarded signal's URL; Upstream above is the base
	// endpoint, empty when every signal has its own.
	Upstreams map[string]string `json:"upstreams"`
	// Receivers are the relay's OTLP receivers that are on, by protocol
	// ("http", "grpc").
	Receivers map[string]Receiver `json:"receivers"`
	// Circuit is "open" while the upstream fails and new exports go
	// straight to the spool, else "closed".
	Circuit string `json:"circuit"`
	// Destinations is the delivery state of each destination that has
	// failed or had exports stored: its state ("healthy", "waiting",
	// "waiting for credentials"), whether its circuit is open, and the
	// cause of its last failure (connection refused, name not found, TLS
	// handshake failed and why, timeout, connection reset, HTTP status).
	Destinations []Destination `json:"destinations"`
	Backlog      Backlog       `json:"backlog"`
	// Delivered counts exports the upstream accepted: Direct on the first
	// attempt or the immediate retry, FromSpool by the background sender.
	Delivered Delivered `json:"delivered"`
	Spooled   uint64    `json:"spooled"`
	Retried   uint64    `json:"retried"`
	// Rejected exports got a definite refusal while the client waited and
	// were answered to it as they came. Quarantined ones had been answered
	// 200 (stored) and were refused later; they are in the spool's
	// quarantine folder until its bound evicts them
	// (Dropped.QuarantineEvicted).
	Rejected    uint64 `json:"rejected"`
	Quarantined uint64 `json:"quarantined"`
	// PartialRejected counts the spans, data points and log records the
	// upstream rejected in the partial_success of delivered backlog
	// requests; they are never retried.
	PartialRejected uint64 `json:"partial_rejected"`
	// Refused exports could be neither delivered nor stored and were
	// answered 503 with Retry-After: the client keeps and retries them, so
	// they are not dropped.
	Refused Refused `json:"refused"`
	Dropped Dropped `json:"dropped"`
}

// Refused counts the exports answered 503 for the client to retry, by
// why they could not be stored; see otlpretry.Stats.Refused.
type Refused struct {
	Full     uint64 `json:"full"`
	Disk     uint64 `json:"disk"`
	TooLarge uint64 `json:"too_large"`
	Closed   uint64 `json:"closed"`
	Total    uint64 `json:"total"`
}

// Receiver is one of the relay's OTLP receivers.
type Receiver struct {
	// Addr is where it listens.
	Addr string `json:"addr"`
	// Requests counts the export requests it answered, by the code
	// answered: the HTTP status ("200", "503", ...) or the gRPC code
	// ("OK", "Unavailable", ...).
	Requests map[string]uint64 `json:"requests"`
}

// Backlog is what waits in the spool.
type Backlog struct {
	Records          int     `json:"records"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Delivered splits deliveries by path.
type Delivered struct {
	Direct    uint64 `json:"direct"`
	FromSpool uint64 `json:"from_spool"`
	Total     uint64 `json:"total"`
}

// Dropped counts lost exports by reason; see otlpretry.Drops.
type Dropped struct {
	Full     uint64 `json:"full"`
	Evicted  uint64 `json:"evicted"`
	Disk     uint64 `json:"disk"`
	Expired  uint64 `json:"expired"`
	Corrupt  uint64 `json:"corrupt"`
	TooLarge uint64 `json:"too_large"`
	Closed   uint64 `json:"closed"`
	// QuarantineEvicted were quarantined, then deleted from a quarantine
	// at its bound.
	QuarantineEvicted uint64 `json:"quarantine_evicted"`
	Total             uint64 `json:"total"`
}

// Destination is one destination's delivery state in /status.
type Destination struct {
	URL         string     `json:"url"`
	State       string     `json:"state"`
	CircuitOpen bool       `json:"circuit_open"`
	Cause       string     `json:"cause,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
}

// NewStatus converts transport counters to the /status document.
func NewStatus(st otlpretry.Stats) Status {
	circuit := "closed"
	if st.CircuitOpen {
		circuit = "open"
	}
	d, rf := st.Dropped, st.Refused
	dests := make([]Destination, 0, len(st.Destinations))
	for _, ds := range st.Destinations {
		dest := Destination{URL: ds.URL, State: ds.State, CircuitOpen: ds.CircuitOpen, Cause: ds.Cause}
		if !ds.NextAttempt.IsZero() {
			next := ds.NextAttempt
			dest.NextAttempt = &next
		}
		dests = append(dests, dest)
	}
	return Status{
		Circuit:      circuit,
		Destinations: dests,
		Backlog:      Backlog{Records: st.Records, Bytes: st.Bytes, OldestAgeSeconds: st.OldestAge.Seconds()},
		Delivered: Delivered{
			Direct: st.Direct, FromSpool: st.Delivered, Total: st.Direct + st.Delivered,
		},
		Spooled:         st.Spooled,
		Retried:         st.Retried,
		Rejected:        st.Rejected,
		Quarantined:     st.Quarantined,
		PartialRejected: st.PartialRejected,
		Refused: Refused{
			Full: rf.Full, Disk: rf.Disk, TooLarge: rf.TooLarge, Closed: rf.Closed,
			Total: rf.Full + rf.Disk + rf.TooLarge + rf.Closed,
		},
		Dropped: Dropped{
			Full: d.Full, Evicted: d.Evicted, Disk: d.Disk, Expired: d.Expired,
			Corrupt: d.Corrupt, TooLarge: d.TooLarge, Closed: d.Closed,
			QuarantineEvicted: d.QuarantineEvicted, Total: d.Total(),
		},
	}
}

// Status returns the relay's status now.
func (r *Relay) Status() Status {
	s := NewStatus(r.cfg.Stats())
	if r.cfg.Upstream != nil {
		s.Upstream = r.cfg.Upstream.Redacted()
	}
	s.Upstreams = make(map[string]string, len(r.cfg.Destinations))
	for _, d := range r.cfg.Destinations {
		s.Upstreams[d.Signal.String()] = d.URL.Redacted()
	}
	s.Receivers = map[string]Receiver{}
	if r.cfg.HTTPAddr != "" {
		s.Receivers["http"] = Receiver{Addr: r.cfg.HTTPAddr, Requests: r.httpRequests.snapshot()}
	}
	if r.cfg.GRPCAddr != "" {
		s.Receivers["grpc"] = Receiver{Addr: r.cfg.GRPCAddr, Requests: r.grpcRequests.snapshot()}
	}
	s.Dir = r.cfg.Dir
	s.UptimeSeconds = time.Since(r.started).Seconds()
	return s
}
