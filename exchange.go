package otlpretry

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otlpretry/otlpretry/spool"
)

// exchange is what one export needs on its way through RoundTrip: its
// body, the context of its detached attempts, the channel on which they
// report and the timer of the hold. Exchanges are reused from one export to
// the next, so that none of these is allocated per export.
type exchange struct {
	t       *Transport
	req     *http.Request
	signal  spool.Signal
	p       payload
	ctx     detachedContext   // of the attempts when the export is held
	results chan directResult // buffered: attempts never wait for the exporter
	hold    clockwork.Timer   // nil until the first hold
	// holdArmed: hold is set and its expiry not yet received; holdEnd:
	// when the hold of the current export ends.
	holdArmed bool
	holdEnd   time.Time
	// handedOff is set once a held export has been stored and its exporter
	// is being answered: its attempts no longer answer to the exporter.
	handedOff atomic.Bool
}

// newExchange takes an exchange for req from the pool.
func (t *Transport) newExchange(req *http.Request, signal spool.Signal) (*exchange, error) {
	x, _ := t.exchanges.Get().(*exchange)
	if x == nil {
		x = &exchange{t: t, results: make(chan directResult, 1)}
		x.p.replay = x.p.body
	}
	if err := x.p.init(req); err != nil {
		t.exchanges.Put(x)
		return nil, err
	}
	x.req, x.signal = req, signal
	x.ctx = detachedContext{t.delivery.ctx, req.Context()}
	return x, nil
}

// release returns the exchange to the pool once nothing of its export
// refers to it any more: its attempts have ended and the exporter has its
// answer.
func (x *exchange) release() {
	x.req = nil
	x.handedOff.Store(false)
	x.p.reset()
	x.ctx = detachedContext{}
	x.t.exchanges.Put(x)
}

// attempts runs the direct attempts of a held export and returns how
// they ended, with the request's own body closed if no attempt took it.
func (x *exchange) attempts() directResult {
	r := x.t.tryDirect(&x.ctx, x)
	x.p.closeUnsent()
	return r
}

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
	return x.req.Context().Deadline()
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

// startHold starts the hold of an export, which ends at holdEnd. The
// timer is lazy, as the attempts' (see canceller): when an earlier export
// left it set, due no later than this hold ends, it stays as it is, and
// wait sets it again for the rest if it fires early. On the happy path it
// is then set about once per hold rather than set and stopped for every
// export.
func (x *exchange) startHold() {
	clock, hold := x.t.cfg.clock, x.t.cfg.maxHold
	x.holdEnd = clock.Now().Add(hold)
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
func (x *exchange) wait(ctx context.Context) (directResult, bool) {
	for {
		select {
		case r := <-x.results:
			return r, true
		case <-x.hold.Chan():
			x.holdArmed = false
			now := x.t.cfg.clock.Now()
			if !now.Before(x.holdEnd) {
				return directResult{}, false
			}
			x.hold.Reset(x.holdEnd.Sub(now))
			x.holdArmed = true
		case <-ctx.Done():
			return directResult{}, false
		}
	}
}
