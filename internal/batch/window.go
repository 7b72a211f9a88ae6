package batch

import "github.com/otlpretry/otlpretry/internal/retry"

// The window's defaults: see NewWindow.
const (
	DefaultInitialWindow = 4
	DefaultMaxWindow     = 32
)

// Feedback is what a finished request tells the window.
type Feedback uint8

const (
	// Neutral: the answer says nothing about the endpoint's load (a
	// refusal of the content, the caller's cancellation).
	Neutral Feedback = iota
	// Success: the endpoint took the request (2xx).
	Success
	// Congestion: 408, 429, 5xx, a timeout, a reset, a refused
	// connection: the endpoint or the path to it is overloaded or down.
	Congestion
)

// FeedbackOf maps an outcome to the window's feedback.
func FeedbackOf(o retry.Outcome) Feedback {
	switch {
	case o == retry.Delivered:
		return Success
	case o.Retryable():
		return Congestion
	}
	return Neutral
}

// Feedback is the window's feedback for a whole settlement: Congestion if
// a retryable answer stopped it, Success if any record was delivered,
// Neutral otherwise (every record refused, or canceled).
func (r Result) Feedback() Feedback {
	if r.Stop.Outcome.Retryable() {
		return Congestion
	}
	for _, o := range r.Records {
		if o.Verdict == Delivered {
			return Success
		}
	}
	return Neutral
}

// A Window bounds one destination's requests in flight and adapts the
// bound to the answers, as TCP's congestion control does:
//
//   - it starts at the initial size, in slow start: each success adds
//     one, so the window about doubles every round trip, up to the
//     maximum or the slow-start threshold (the maximum until a first
//     congestion);
//   - past the threshold, once as many requests have succeeded as the
//     window's size (about one round trip's worth), it grows by one;
//   - in both, only if at some point meanwhile at least half of it was in
//     use: a lane that the window does not hold back gives no evidence
//     that more would be taken;
//   - a Congestion halves it, down to 1, at most once per round trip, and
//     the threshold with it: failures of requests sent before the last
//     decrease, which met the same congestion, do not decrease it again;
//   - Neutral changes nothing;
//   - Restart, after an outage in which the destination did not answer
//     at all (refused or blackholed connections: not an overload), puts
//     it back to its initial size in slow start.
//
// The window decides how many requests are in flight, never when the next
// one goes: a Retry-After or the lane's backoff is waited out first, and
// the window still holds its shrunk size after it.
//
// A Window is not safe for concurrent use: the goroutine that owns the
// destination's lane owns its window.
type Window struct {
	initial  int
	limit    int
	max      int
	ssthresh int // slow start below it; additive increase from it
	inFlight int
	credit   int    // successes counted toward the next growth
	peak     int    // the most in flight since the last change of limit
	next     uint64 // the sequence number of the next ticket
	recover  uint64 // tickets from this number on may decrease the window
}

// A Ticket is one request's place in the window.
type Ticket struct {
	seq uint64
}

// NewWindow returns a window of initial requests in flight that grows to
// at most maxSize. initial below 1 means DefaultInitialWindow, maxSize below 1
// DefaultMaxWindow; initial is capped at maxSize.
func NewWindow(initial, maxSize int) *Window {
	if initial < 1 {
		initial = DefaultInitialWindow
	}
	if maxSize < 1 {
		maxSize = DefaultMaxWindow
	}
	return &Window{initial: min(initial, maxSize), limit: min(initial, maxSize), max: maxSize, ssthresh: maxSize}
}

// Restart puts the window back to its initial size, in slow start up to
// the maximum: for a destination that answers again after it did not
// answer at all, whose halvings measured an outage, not its capacity.
func (w *Window) Restart() {
	w.limit, w.ssthresh = w.initial, w.max
	w.credit, w.peak = 0, w.inFlight
	w.recover = w.next
}

// Limit is the number of requests the window lets be in flight now.
func (w *Window) Limit() int { return w.limit }

// InFlight is the number of tickets taken and not yet released.
func (w *Window) InFlight() int { return w.inFlight }

// Acquire takes a place for one request, or reports false when the window
// is full.
func (w *Window) Acquire() (Ticket, bool) {
	if w.inFlight >= w.limit {
		return Ticket{}, false
	}
	w.inFlight++
	w.peak = max(w.peak, w.inFlight)
	t := Ticket{seq: w.next}
	w.next++
	return t, true
}

// Release returns a ticket's place with what its request came to.
func (w *Window) Release(t Ticket, f Feedback) {
	if w.inFlight > 0 {
		w.inFlight--
	}
	switch f {
	case Success:
		if w.limit >= w.max {
			return
		}
		if w.limit < w.ssthresh {
			// Slow start: one more for each success.
			if 2*w.peak >= w.limit {
				w.limit++
			}
			return
		}
		w.credit++
		if w.credit >= w.limit {
			if 2*w.peak >= w.limit {
				w.limit++
			}
			w.credit = 0
			w.peak = w.inFlight
		}
	case Congestion:
		if t.seq < w.recover {
			return // sent before the last decrease: the same congestion
		}
		w.limit = max(w.limit/2, 1)
		w.ssthresh = w.limit
		w.credit = 0
		w.peak = w.inFlight
		w.recover = w.next
	}
}
