package otlpretry

import (
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// lane is the delivery state of one destination: its circuit, backoff,
// probes and sends in flight. Every field is owned by the delivery
// goroutine (delivery.run); others see only what publish writes to view.
type lane struct {
	dest destination
	view *laneView

	state laneState
	// epoch is bumped at each new wait, so that late results of older
	// sends change nothing.
	epoch    uint64
	inflight int // sends in flight: backlog requests while healthy, else the trial
	// window bounds the sends in flight and adapts to the answers
	// (batch.Window): it grows while the destination takes them, and
	// failures shrink it, the trial's included.
	window *batch.Window
	// claim is how many stored exports one backlog send claims: about one
	// merged request's worth, learnt from the packing (0 until the first).
	claim int
	bo    backoff
	// waitTimer ends the wait; probeTimer starts the next probe. Both
	// report to the delivery goroutine, tagged with the epoch.
	waitTimer, probeTimer clockwork.Timer
	probing               bool
	probeInterval         time.Duration
	unreachable           bool          // the last failure got no answer at all
	dialFailed            bool          // the last probe could not connect (see delivery.probe)
	forCredentials        bool          // the wait answers a refusal of credentials: the circuit stays closed
	target                *spool.Record // where probes go: the record that failed last
	// held counts exports handed off at the end of their hold whose
	// attempts still run: the circuit is open meanwhile.
	held        int
	cause       string    // of the last failure; empty while healthy
	nextAttempt time.Time // end of the wait
	// credentials: a live request or WithEndpointHeaders gives the headers
	// of this destination; without, its stored exports are not sent.
	credentials bool
	backlog     bool // a claim saw records for it waiting
	since       time.Time
	drained     int // records delivered since the backlog began
	// notedState and notedCause are what the owner's note last said of
	// the lane (see delivery.note).
	notedState, notedCause string
}

type laneState int

const (
	laneHealthy     laneState = iota // sends backlog requests up to its window, no pause
	laneWaiting                      // backing off after a failure
	laneTrial                        // wait over: one record tests the destination
	laneCredentials                  // no headers known for it: sends nothing
)

func (s laneState) String() string {
	return [...]string{"healthy", "waiting", "trial", "credentials"}[s]
}

func newLane(dest destination, cfg *config) *lane {
	return &lane{
		dest:   dest,
		view:   &laneView{dest: dest},
		window: batch.NewWindow(cfg.concurrency, cfg.maxWindow()),
		bo:     backoff{initial: cfg.backoffInitial, max: cfg.backoffMax, jitter: cfg.jitter},
	}
}

// publish writes the lane's state to its view, for the hot path and Stats.
func (l *lane) publish() {
	open := l.held > 0 || (l.state == laneWaiting || l.state == laneTrial) && !l.forCredentials
	l.view.open.Store(open)
	l.view.wantsReach.Store(l.state == laneWaiting && l.unreachable)
	st := &DestinationStats{URL: l.dest.String(), State: stateHealthy, CircuitOpen: open, Cause: l.cause}
	switch {
	case l.state == laneCredentials || l.state == laneWaiting && l.forCredentials:
		st.State = stateCredentials
	case l.state == laneWaiting || l.state == laneTrial:
		st.State = stateWaiting
	}
	if l.state == laneWaiting {
		st.NextAttempt = l.nextAttempt
	}
	l.view.status.Store(st)
}

// stopTimers ends the wait and the probes.
func (l *lane) stopTimers() {
	for _, tm := range []*clockwork.Timer{&l.waitTimer, &l.probeTimer} {
		if *tm != nil {
			(*tm).Stop()
			*tm = nil
		}
	}
}

// endWait ends a wait: the next send tests the destination.
func (l *lane) endWait() {
	l.stopTimers()
	l.state = laneTrial
	l.publish()
}

// succeeded records that the destination accepted (or definitely refused)
// an export of the current epoch: it is healthy again.
func (l *lane) succeeded() {
	l.stopTimers()
	if l.unreachable {
		// The destination did not answer at all: its window's halvings
		// measured an outage, not its capacity.
		l.window.Restart()
	}
	l.state = laneHealthy
	l.forCredentials, l.unreachable, l.cause = false, false, ""
	l.bo.reset()
	l.publish()
}

// waitFor says how long to wait after failure r: the server's
// Retry-After, bounded, else the backoff.
func (l *lane) waitFor(cfg *config, r result) time.Duration {
	wait := min(r.retryAfter, cfg.maxRetryAfter)
	if wait == 0 {
		wait = l.bo.next()
	}
	return wait
}

// outcome of a send or probe, as reported to the delivery goroutine.
type result struct {
	lane       *lane
	out        retry.Outcome
	retryAfter time.Duration
	epoch      uint64
	target     *spool.Record // the (first) record's addressing, without its body
	cause      string        // of a retryable failure (retry.Cause)
	// ticket is the send's place in the lane's window, and feedback what
	// its answers tell the window.
	ticket   batch.Ticket
	feedback batch.Feedback
	// delivered counts the records the send delivered.
	delivered int
	// again lists the records to put back in line, once run has decided
	// the wait that their retryable failure starts.
	again []spool.ID
	// claim, when not zero, is how many records the lane's next backlog
	// send should claim.
	claim int
	// bytes is what the send's records hold in memory (their bodies), in
	// the delivery's in-flight budget until the result is taken in.
	bytes int64
	// nameLookup: the destination was unreachable because its name did not
	// resolve, so probes go at most once a second (see probeEvery).
	nameLookup bool
	// dialFailed: no connection could be made (isDialError).
	dialFailed bool
	// credentials: the record was refused for want of credentials (see
	// deliverOne); the destination itself answers, so the circuit stays
	// closed for live exports, which bring their own.
	credentials bool
}
