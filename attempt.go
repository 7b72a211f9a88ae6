package otlpretry

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// attempt is one try at sending an export. It is the context of the
// request handed to the lower transport, and then the body of the response
// that comes back, whose Close ends the attempt: the per-attempt timeout
// bounds reading the answer too. One object for both roles is one
// allocation per attempt.
//
// Its fields do not change once the request is sent, so that the lower
// transport may go on consulting the context after the attempt has ended
// (net/http unregisters its own context from ours asynchronously).
type attempt struct {
	c        *canceller
	deadline time.Time
	values   context.Context // the request's, when c's parent does not hold them

	body   io.ReadCloser // the response's, once there is one
	closed atomic.Bool
}

var (
	_ context.Context = (*attempt)(nil)
	_ io.ReadCloser   = (*attempt)(nil)
)

// newAttempt returns the context of one attempt, ended by its timeout, by
// ctx, or, when ctx is an export's detached context, by Shutdown.
func (p *cancellerPool) newAttempt(ctx context.Context, timeout time.Duration) *attempt {
	a := &attempt{}
	if d, ok := ctx.(*detachedContext); ok {
		// Every held export's attempts share this parent, so their
		// cancellers can be reused from p.
		a.c, a.values = p.get(d.Context), d.values
	} else {
		a.c = newCanceller(ctx, nil)
	}
	a.deadline = a.c.arm(timeout)
	return a
}

// Deadline is the attempt's, or the parent's when that comes first, as for
// context.WithTimeout.
func (a *attempt) Deadline() (time.Time, bool) {
	if d, ok := a.c.ctx.Deadline(); ok && d.Before(a.deadline) {
		return d, true
	}
	return a.deadline, true
}

func (a *attempt) Done() <-chan struct{} { return a.c.ctx.Done() }

// Err reports context.DeadlineExceeded once the timeout has ended the
// attempt, as context.WithTimeout does, and the parent's error when the
// parent ended it.
func (a *attempt) Err() error {
	err := a.c.ctx.Err()
	if err != nil && context.Cause(a.c.ctx) == context.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return err
}

// Value answers from the canceller's context first: for the context
// package's own key that is the canceller's cancel context, whose Done
// channel is ours, so contexts the lower transport derives from an attempt
// register as its children, with no goroutine to watch it. Other keys fall
// through to the request.
func (a *attempt) Value(key any) any {
	if v := a.c.ctx.Value(key); v != nil || a.values == nil {
		return v
	}
	return a.values.Value(key)
}

func (a *attempt) Read(p []byte) (int, error) { return a.body.Read(p) }

// Close closes the response body and ends the attempt; calling it again
// does nothing.
func (a *attempt) Close() error {
	if !a.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := a.body.Close()
	a.end()
	return err
}

// end stops the attempt's timeout. Called once: by Close, or when the lower
// transport returned no response.
func (a *attempt) end() {
	c := a.c
	if c.disarm() && c.pool != nil {
		c.pool.put(c)
		return
	}
	// Cancelling also ends whatever the lower transport derived from the
	// attempt and left running.
	c.retire(context.Canceled)
}

// canceller ends attempts: its context is cancelled when the attempt's
// timeout passes (cause context.DeadlineExceeded) or when its parent ends.
// The cancellers of held exports are children of the transport's context
// and are reused from one attempt to the next while neither has happened,
// which saves a cancel context, a timer and their registration per
// attempt; a cancelled one is never reused.
//
// Its timer is lazy: an attempt that starts while the timer is due no
// later than the attempt's deadline leaves it as it is, and when it fires
// early for the attempt then running it is set again for the rest. On the
// happy path, where attempts take milliseconds and the timeout is seconds,
// the timer is set about once per timeout rather than set and stopped for
// every attempt: each of those is a change to the runtime's timer heap,
// which may wake the network poller or an idle thread.
type canceller struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	pool   *cancellerPool // where it goes back after an attempt; nil: not reused
	uses   int

	mu       sync.Mutex  // guards the fields below
	timer    *time.Timer // nil until first armed; calls expire
	fires    time.Time   // when timer is due, while pending
	pending  bool        // timer set and expire not yet run for it
	active   bool        // an attempt runs
	deadline time.Time   // of the attempt running
	expired  bool        // the timeout ended an attempt: never reused
}

func newCanceller(parent context.Context, pool *cancellerPool) *canceller {
	c := &canceller{pool: pool}
	c.ctx, c.cancel = context.WithCancelCause(parent)
	return c
}

// arm starts the timeout of an attempt and returns its deadline. The real
// clock is used, as by context.WithTimeout: it bounds real network I/O.
func (c *canceller) arm(timeout time.Duration) time.Time {
	c.uses++
	now := time.Now()
	deadline := now.Add(timeout)
	c.mu.Lock()
	c.active, c.deadline = true, deadline
	if timeout <= 0 {
		// As context.WithTimeout: done before the request is sent.
		c.expired = true
		c.mu.Unlock()
		c.cancel(context.DeadlineExceeded)
		return deadline
	}
	if !c.pending || c.fires.After(deadline) {
		c.setLocked(now, deadline)
	}
	c.mu.Unlock()
	return deadline
}

// setLocked makes the timer fire at deadline.
func (c *canceller) setLocked(now, deadline time.Time) {
	if c.timer == nil {
		c.timer = time.AfterFunc(deadline.Sub(now), c.expire)
	} else {
		c.timer.Reset(deadline.Sub(now))
	}
	c.fires, c.pending = deadline, true
}

// expire runs when the timer fires: it ends the attempt running if its
// deadline has passed, or sets the timer again for it.
func (c *canceller) expire() {
	c.mu.Lock()
	c.pending = false
	if !c.active || c.expired {
		c.mu.Unlock()
		return
	}
	if now := time.Now(); now.Before(c.deadline) {
		c.setLocked(now, c.deadline)
		c.mu.Unlock()
		return
	}
	c.expired = true
	c.mu.Unlock()
	c.cancel(context.DeadlineExceeded)
}

// disarm ends the timeout of the attempt and reports whether the canceller
// is still usable: the timeout did not end the attempt and its context is
// not cancelled.
func (c *canceller) disarm() bool {
	c.mu.Lock()
	c.active = false
	ok := !c.expired
	c.mu.Unlock()
	return ok && c.ctx.Err() == nil
}

// retire cancels the canceller for good and stops its timer.
func (c *canceller) retire(cause error) {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
		c.pending = false
	}
	c.mu.Unlock()
	c.cancel(cause)
}

// maxCancellerUses bounds how long a canceller is reused. A lower
// transport that derives a context from an attempt and never cancels it
// leaves a child registered with the canceller's context; retiring the
// canceller cancels such children, as the end of each attempt did when
// every attempt had a context of its own, and bounds how many can gather.
const maxCancellerUses = 256

// cancellerPool keeps idle cancellers of held exports. Unlike a sync.Pool
// it never drops one unseen: each is registered with the transport's
// context until cancelled, so one dropped without cancelling would stay
// there until Shutdown.
type cancellerPool struct {
	mu   sync.Mutex // guards free
	free []*canceller
}

// maxIdleCancellers covers the exports of a few exporters in flight at
// once; past it a canceller is cancelled rather than kept.
const maxIdleCancellers = 32

// get returns an idle canceller under parent, or a new one. Idle ones
// that Shutdown cancelled are dropped.
func (p *cancellerPool) get(parent context.Context) *canceller {
	p.mu.Lock()
	for n := len(p.free); n > 0; n-- {
		c := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		if c.ctx.Err() == nil {
			p.mu.Unlock()
			return c
		}
		c.retire(context.Canceled) // stops its timer
	}
	p.mu.Unlock()
	return newCanceller(parent, p)
}

// close retires the idle cancellers, stopping their timers, which would
// otherwise keep the transport alive until they fire.
func (p *cancellerPool) close() {
	p.mu.Lock()
	free := p.free
	p.free = nil
	p.mu.Unlock()
	for _, c := range free {
		c.retire(context.Canceled)
	}
}

// put keeps a disarmed, uncancelled canceller for the next attempt, or
// cancels it.
func (p *cancellerPool) put(c *canceller) {
	if c.uses < maxCancellerUses {
		p.mu.Lock()
		if len(p.free) < maxIdleCancellers {
			p.free = append(p.free, c)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	c.retire(context.Canceled)
}
