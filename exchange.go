package otlpretry

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otlpretry/otlpretry/internal/bridge"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// exchange is what one export needs on its way through the flow, whatever
// its protocol: the protocol's side of it (exp), the caller's context, the
// context of its detached attempts, the channel on which they report and
// the timer of the hold. Exchanges are reused from one export to the
// next, so that none of these is allocated per export; an OTLP/HTTP
// export's own side (http) is reused with them.
type exchange struct {
	t      *Transport
	exp    bridge.Export   // &http for OTLP/HTTP, else the adapter's
	http   httpExport      // an OTLP/HTTP export's request and body
	caller context.Context // the exporter's call
	dest   destination
	signal spool.Signal

	ctx     detachedContext    // of the attempts when the export is held
	results chan bridge.Result // buffered: attempts never wait for the exporter
	hold    clockwork.Timer    // nil until the first hold
	// holdArmed: hold is set and its expiry not yet received; holdEnd:
	// when the hold of the current export ends.
	holdArmed bool
	holdEnd   time.Time
	// started: when the export's first attempt started, or its hold,
	// which starts with it.
	started time.Time
	// handedOff is set once a held export has been stored and its exporter
	// is being answered: its attempts no longer answer to the exporter.
	handedOff atomic.Bool
}

// takeExchange takes an exchange from the pool.
func (t *Transport) takeExchange() *exchange {
	x, _ := t.exchanges.Get().(*exchange)
	if x == nil {
		x = &exchange{t: t, results: make(chan bridge.Result, 1)}
		x.http = httpExport{next: t.next, cancellers: &t.cancellers, clock: t.cfg.clock}
		x.http.p.replay = x.http.p.body
	}
	return x
}

// newExchange takes an exchange for an OTLP/HTTP export.
func (t *Transport) newExchange(req *http.Request, signal spool.Signal) (*exchange, error) {
	x := t.takeExchange()
	if err := x.http.p.init(req); err != nil {
		t.exchanges.Put(x)
		return nil, err
	}
	x.http.req, x.http.signal = req, signal
	x.start(&x.http, req.Context(), destinationOf(req.URL), signal)
	return x, nil
}

// start gives x an export: exp, on the caller's call to dest.
func (x *exchange) start(exp bridge.Export, caller context.Context, dest destination, signal spool.Signal) {
	x.exp, x.caller, x.dest, x.signal = exp, caller, dest, signal
	x.ctx = detachedContext{x.t.delivery.ctx, caller}
}

// release returns the exchange to the pool once nothing of its export
// refers to it any more: its attempts have ended and the exporter has its
// answer. An OTLP/HTTP request's own body is closed then if no attempt
// took it (by the RoundTripper contract, RoundTrip closes it).
func (x *exchange) release() {
	x.http.reset()
	x.exp, x.caller = nil, nil
	x.handedOff.Store(false)
	x.ctx = detachedContext{}
	x.t.exchanges.Put(x)
}

// releaseWith releases x and returns e, the export's ending.
func (x *exchange) releaseWith(e bridge.Ending) bridge.Ending {
	x.release()
	return e
}

// export takes x through the flow of an export (doc.go) and says how it
// ended. x is released before export returns, except when its export is
// held: settleDetached releases it then.
func (t *Transport) export(x *exchange) bridge.Ending {
	t.delivery.liveSeen(x.dest)
	if t.delivery.circuitOpen(x.dest) || t.detached.Load() >= maxDetached {
		return x.releaseWith(t.handOff(x, "endpoint failing"))
	}
	now := t.cfg.clock.Now()
	if t.cfg.maxHold <= 0 {
		x.started = now
		return x.releaseWith(t.conclude(x, t.tryDirect(x.caller, x)))
	}

	// The attempts run detached from the exporter's call, so that the call
	// can be answered when the hold is over, whatever the endpoint does.
	// The hold starts first so that the exporter's goroutine parks right
	// after handing the export over, leaving its processor to the worker.
	x.startHold(now)
	t.startAttempts(x)
	if r, ok := x.wait(x.caller); ok {
		return x.releaseWith(t.conclude(x, r))
	}
	// The endpoint is slow to settle this export: keep it safe, claimed by
	// this process, release the exporter, and settle the record when the
	// attempts end. Later attempts send the bytes read here, not the
	// exporter's buffer.
	data, err := x.exp.Bytes()
	if err != nil {
		return x.releaseWith(t.conclude(x, <-x.results))
	}
	rec := x.exp.Record(data)
	if err := t.spool.PutClaimed(rec); err != nil {
		return x.releaseWith(t.conclude(x, <-x.results))
	}
	x.handedOff.Store(true)
	t.detached.Add(1)
	t.delivery.held(x.dest)
	go t.settleDetached(x, rec)
	return bridge.Ending{Stored: true}
}

// tryDirect makes the first attempt of x and, when it fails in a way worth
// it, the one immediate retry. ctx is the attempts' context: the
// exporter's on the direct path, x's detached one when the export is held.
func (t *Transport) tryDirect(ctx context.Context, x *exchange) bridge.Result {
	timeout := t.cfg.attemptTimeout[x.signal]
	r := x.exp.Attempt(ctx, timeout)
	if !r.Outcome.Retryable() {
		return r
	}
	t.counters.retried.Add(1)
	if !t.shouldRetryNow(x, x.started, r.Wait) {
		return r
	}
	wait := r.Wait
	if wait == 0 {
		wait = t.cfg.immediateRetryDelay
	}
	if err := t.sleep(ctx, wait); err != nil {
		return bridge.Result{Outcome: retry.Canceled, Err: err}
	}
	r = x.exp.Attempt(ctx, timeout)
	if r.Outcome.Retryable() {
		t.counters.retried.Add(1)
	}
	return r
}

// conclude answers the exporter once the direct attempts have ended: a
// delivery or a refusal as the server gave it, anything else stored.
func (t *Transport) conclude(x *exchange, r bridge.Result) bridge.Ending {
	switch r.Outcome {
	case retry.Delivered:
		t.counters.direct.Add(1)
		t.delivery.reached(x.dest)
		return bridge.Ending{Result: r}
	case retry.Rejected:
		t.counters.rejected.Add(1)
		t.delivery.reached(x.dest)
		if ok, held := t.rejectLimit.allow(); ok {
			t.cfg.logger.Warn("otlpretry: the endpoint refused an export; it is not retried",
				"destination", x.dest.String(), "status", r.Cause, "similar_since_last", held)
		}
		return bridge.Ending{Result: r}
	}
	// Failed, or the exporter gave up waiting: the export is still worth
	// keeping. A failure is the endpoint's answer as much as one of the
	// sender's own: it sets the sender's wait before the export reaches
	// the spool, so that the sender cannot send it at once.
	if r.Outcome.Retryable() {
		t.delivery.failed(x.dest, r, x.exp.Record(nil), false)
	}
	return t.handOff(x, r.Reason())
}

// handOff stores the export and answers the exporter as the endpoint would
// have on success, so that the exporter neither retries nor drops it.
func (t *Transport) handOff(x *exchange, why string) bridge.Ending {
	data, err := x.exp.Bytes()
	if err == nil {
		err = t.spool.Put(x.exp.Record(data))
	}
	if err != nil {
		err = t.notStored(err)
		if t.cfg.callerRetry {
			err = x.exp.CallerRetryError(err)
		}
		return bridge.Ending{Err: err}
	}
	t.counters.spooled.Add(1)
	t.delivery.wake()
	t.warnRetrying(x.dest, why)
	return bridge.Ending{Stored: true}
}

// settleDetached waits for the attempts of an export that was answered at
// the end of its hold, and settles its record accordingly.
func (t *Transport) settleDetached(x *exchange, rec *spool.Record) {
	dest := x.dest
	defer func() {
		x.release()
		t.detached.Add(-1)
		signal(t.detachedDone)
	}()
	r := <-x.results
	var err error
	switch r.Outcome {
	case retry.Delivered:
		discard(r.Response)
		err = t.spool.Ack(rec.ID)
		t.counters.direct.Add(1)
		t.delivery.heldEnded(dest, r)
	case retry.Rejected:
		detail := r.Cause
		if r.Response != nil {
			detail = describe(r.Response, r.Err, r.Outcome)
		}
		err = t.spool.Quarantine(rec.ID, detail)
		t.counters.quarantined.Add(1) // answered as stored: not returned to the exporter
		t.delivery.heldEnded(dest, r)
		if ok, held := t.rejectLimit.allow(); ok {
			t.cfg.logger.Warn("otlpretry: the endpoint refused an export; it is quarantined",
				"destination", dest.String(), "answer", detail, "similar_since_last", held)
		}
	default:
		// Before the release, as in conclude.
		t.delivery.failed(dest, r, rec, true)
		err = t.spool.Release(rec.ID)
		t.counters.spooled.Add(1)
		t.delivery.wake()
		t.warnRetrying(dest, r.Reason())
	}
	if err != nil && !errors.Is(err, spool.ErrClosed) {
		t.cfg.logger.Warn("otlpretry: cannot update the spool", "id", rec.ID.String(), "err", err)
	}
}

// attempts runs the direct attempts of a held export and returns how
// they ended.
func (x *exchange) attempts() bridge.Result { return x.t.tryDirect(&x.ctx, x) }

// exporterDeadline is the deadline of the exporter's call while the
// exporter waits for x's attempts, which the immediate retry must not
// outlast (doc.go, step 2): on the direct path, and on the held path until
// the hold ends. Once a held export has been stored and the exporter
// answered, there is none: nothing waits on the exporter's context any
// more, the attempts run under the transport's (ended by their timeout and
// Shutdown), and skipping the retry would only hand the export to the
// slower background sender. The attempts may decide while the exporter's
// call is being answered; either way is then right, as the exporter was
// still waiting or no longer is.
func (x *exchange) exporterDeadline() (time.Time, bool) {
	if x.handedOff.Load() {
		return time.Time{}, false
	}
	return x.caller.Deadline()
}

// startAttempts runs the attempts of a held export on a goroutine other
// than the exporter's: an idle worker's when one waits, else a new one's.
// A worker keeps the stack the lower transport's call path grew, which a
// goroutine started per export grows again every time.
func (t *Transport) startAttempts(x *exchange) {
	if in := t.workers.take(); in != nil {
		in <- x
		return
	}
	go t.worker(x, make(chan *exchange, 1))
}

// maxIdleWorkers covers the three signals' exporters; a worker finding
// that many idle ends.
const maxIdleWorkers = 4

// worker runs the attempts of held exports, one after the other, until
// Shutdown or until enough others are idle. It is idle again before it
// reports, so that the exporter's next export, which may follow at once,
// finds it rather than start another. A plain receive on its own channel
// is the cheapest wait the runtime has: this hand-off is on every export's
// path.
func (t *Transport) worker(x *exchange, in chan *exchange) {
	for x != nil {
		r := x.attempts()
		parked := t.workers.park(in)
		x.results <- r // the exchange is not touched after this
		if !parked {
			return
		}
		x = <-in // nil once closed by Shutdown
	}
}

// workerPool keeps the in-trays of idle workers, the latest idle first.
type workerPool struct {
	mu     sync.Mutex // guards idle and closed
	idle   []chan *exchange
	closed bool
}

// take returns an idle worker's in-tray, or nil.
func (p *workerPool) take() chan *exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	in := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return in
}

// park makes a worker idle; false when it should end instead.
func (p *workerPool) park(in chan *exchange) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= maxIdleWorkers {
		return false
	}
	p.idle = append(p.idle, in)
	return true
}

// close ends the idle workers, and the others once their attempts end.
func (p *workerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for i, in := range p.idle {
		close(in)
		p.idle[i] = nil
	}
	p.idle = nil
}

// startHold starts the hold of an export, and with it its first attempt,
// at now; the hold ends at holdEnd. The timer is lazy, as the attempts'
// (see canceller): when an earlier export left it set, due no later than
// this hold ends, it stays as it is, and wait sets it again for the rest
// if it fires early. On the happy path it is then set about once per hold
// rather than set and stopped for every export.
func (x *exchange) startHold(now time.Time) {
	clock, hold := x.t.cfg.clock, x.t.cfg.maxHold
	x.started, x.holdEnd = now, now.Add(hold)
	switch {
	case x.hold == nil:
		x.hold = clock.NewTimer(hold)
	case !x.holdArmed:
		x.hold.Reset(hold)
	}
	x.holdArmed = true
}

// wait returns the result of the attempts, or false when the hold ends or
// ctx (the exporter's) is done first. An expiry left in the timer's
// channel by an earlier export (the fake clock of the tests, unlike
// time.Timer, leaves one there) or due before holdEnd only sets the timer
// again.
func (x *exchange) wait(ctx context.Context) (bridge.Result, bool) {
	for {
		select {
		case r := <-x.results:
			return r, true
		case <-x.hold.Chan():
			x.holdArmed = false
			now := x.t.cfg.clock.Now()
			if !now.Before(x.holdEnd) {
				return bridge.Result{}, false
			}
			x.hold.Reset(x.holdEnd.Sub(now))
			x.holdArmed = true
		case <-ctx.Done():
			return bridge.Result{}, false
		}
	}
}
