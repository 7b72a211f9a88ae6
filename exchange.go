package otlpretry

import (
	"net/http"
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
	x.ctx = detachedContext{t.sender.ctx, req.Context()}
	return x, nil
}

// release returns the exchange to the pool once nothing of its export
// refers to it any more: its attempts have ended and the exporter has its
// answer.
func (x *exchange) release() {
	x.req = nil
	x.p.reset()
	x.ctx = detachedContext{}
	x.t.exchanges.Put(x)
}

// attempts runs the direct attempts of a held export and reports how they
// ended. It must not touch the exchange after reporting.
func (x *exchange) attempts() {
	r := x.t.tryDirect(&x.ctx, x.req, &x.p, x.signal)
	x.p.closeUnsent()
	x.results <- r
}

// startAttempts runs the attempts of a held export on a goroutine other
// than the exporter's: an idle worker's when one waits, else a new one's.
// A worker keeps the stack the lower transport's call path grew, which a
// goroutine started per export grows again every time.
func (t *Transport) startAttempts(x *exchange) {
	select {
	case t.work <- x:
	default:
		go t.worker(x)
	}
}

// maxIdleWorkers covers the three signals' exporters; a worker finding
// that many idle ends.
const maxIdleWorkers = 4

// worker runs the attempts of held exports, one after the other, until
// Shutdown or until enough others are idle.
func (t *Transport) worker(x *exchange) {
	for {
		x.attempts()
		if t.idleWorkers.Add(1) > maxIdleWorkers {
			t.idleWorkers.Add(-1)
			return
		}
		select {
		case x = <-t.work:
			t.idleWorkers.Add(-1)
		case <-t.sender.quit:
			t.idleWorkers.Add(-1)
			return
		}
	}
}

// startHold starts the timer that bounds how long the exporter waits.
func (x *exchange) startHold() <-chan time.Time {
	if x.hold == nil {
		x.hold = x.t.cfg.clock.NewTimer(x.t.cfg.maxHold)
	} else {
		x.hold.Reset(x.t.cfg.maxHold)
	}
	return x.hold.Chan()
}

// stopHold stops the hold's timer so that it can be reset for the next
// export with no expiry left in its channel (the fake clock of the tests,
// unlike time.Timer, leaves one there).
func (x *exchange) stopHold() {
	if !x.hold.Stop() {
		select {
		case <-x.hold.Chan():
		default:
		}
	}
}
