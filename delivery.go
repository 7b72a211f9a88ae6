package otlpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/internal/bridge"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// delivery sends the spool in the background, each destination in its own
// lane, so that one failing destination never delays another. One
// goroutine (run) owns every lane's state; each event is its own method,
// called from a short loop. Sends, probes, timers and the exports' direct
// path report to it over channels, and what the hot path reads (is this
// destination's circuit open?) it publishes in circuits. It is started on
// demand and stopped by Shutdown; like every goroutine it never keeps the
// process alive.
type delivery struct {
	spool    *spool.Spool
	next     http.RoundTripper
	cfg      *config
	counters *counters
	live     *endpoints
	circuits *circuits
	urls     destinationCache

	rejectLimit  logLimiter // spooled exports refused
	credsLimit   logLimiter // spooled exports refused for want of credentials
	partialLimit logLimiter // partial successes
	packer       *batch.Packer

	startOnce sync.Once
	started   chan struct{} // closed by start
	quit      chan struct{}
	done      chan struct{}
	ctx       context.Context // ends at shutdown, cancelling sends in flight
	cancel    context.CancelFunc

	reports chan report         // from the exports' path; answered on ack
	news    chan news           // a destination answered, or a live request reached it
	results chan result         // sends and probes
	timers  chan timerEvent     // a lane's wait or probe timer fired
	flushes chan chan flushDone // ForceFlush
	wakeCh  chan struct{}       // new work in the spool

	// Owned by run.
	lanes        map[destination]*lane
	order        []*lane // lanes in the order they were made
	byURL        map[string]*lane
	working      bool // the spool has had work: rescan it now and then
	flushWaiters []chan flushDone
	noteFailed   bool // writing the owner's note failed, and it was said
	// inflightBytes is what the records of the backlog sends in flight
	// hold in memory, summed over every lane (WithMaxInflightBytes).
	inflightBytes int64
}

// deliveryDeps are what delivery needs of the Transport, and no more.
type deliveryDeps struct {
	spool    *spool.Spool
	next     http.RoundTripper
	cfg      *config
	counters *counters
	live     *endpoints
	circuits *circuits
}

func newDelivery(deps deliveryDeps) *delivery {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := deps.cfg
	return &delivery{
		spool: deps.spool, next: deps.next, cfg: cfg, counters: deps.counters,
		live: deps.live, circuits: deps.circuits,
		rejectLimit:  logLimiter{clock: cfg.clock, interval: cfg.logInterval},
		credsLimit:   logLimiter{clock: cfg.clock, interval: cfg.logInterval},
		partialLimit: logLimiter{clock: cfg.clock, interval: cfg.logInterval},
		packer:       newPacker(cfg.maxRequestBytes),
		started:      make(chan struct{}),
		quit:         make(chan struct{}),
		done:         make(chan struct{}),
		ctx:          ctx,
		cancel:       cancel,
		reports:      make(chan report),
		news:         make(chan news, 16),
		results:      make(chan result, cfg.concurrency),
		timers:       make(chan timerEvent, 4),
		flushes:      make(chan chan flushDone),
		wakeCh:       make(chan struct{}, 1),
		lanes:        map[destination]*lane{},
		byURL:        map[string]*lane{},
	}
}

// report is what the direct path tells of one export.
type report struct {
	kind   reportKind
	dest   destination
	r      bridge.Result
	target *spool.Record // the export's addressing, for probes
	ack    chan struct{}
}

type reportKind int

const (
	reportFailed    reportKind = iota // the direct attempts failed
	reportHeld                        // stored at the end of its hold; attempts go on
	reportHeldEnded                   // a held export's attempts ended (with failed: they failed)
)

type news struct {
	dest destination
	live bool // a live request reached dest; else dest answered the direct path
	// connected: a probe of the wait epoch got a new connection to dest
	// (probe), rather than dest answering.
	connected bool
	epoch     uint64
}

type timerEvent struct {
	lane  *lane
	epoch uint64
	probe bool // the probe timer; else the wait's
}

// flushDone answers a flush: the lanes that could not be emptied.
type flushDone struct{ left []DestinationStats }

func (d *delivery) start() {
	d.startOnce.Do(func() {
		close(d.started)
		go d.run()
	})
}

// wake tells run that the spool has new work.
func (d *delivery) wake() {
	d.start()
	signal(d.wakeCh)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// send hands an event to run and waits until run has taken it in. It
// reports false once run has ended.
func (d *delivery) report(rep report) bool {
	d.start()
	rep.ack = make(chan struct{})
	select {
	case d.reports <- rep:
	case <-d.done:
		return false
	}
	select {
	case <-rep.ack:
	case <-d.done:
	}
	return true
}

// failed reports that the direct path's attempts at an export to dest
// failed, with the last answer's Retry-After: the lane waits on it exactly
// as on a failure of its own. Callers report before the export reaches the
// spool (Put or Release), and run has taken the report in when failed
// returns, so the export is never sent before the wait.
func (d *delivery) failed(dest destination, r bridge.Result, target *spool.Record, held bool) {
	kind := reportFailed
	if held {
		kind = reportHeldEnded
	}
	d.report(report{kind: kind, dest: dest, r: r, target: target})
}

// held reports an export to dest stored at the end of its hold: dest's
// circuit is open, so that the exports after it do not wait on it too,
// until its attempts end (heldEnded).
func (d *delivery) held(dest destination) { d.report(report{kind: reportHeld, dest: dest}) }

// heldEnded reports that the attempts of a held export ended without a
// retryable failure: delivered or refused.
func (d *delivery) heldEnded(dest destination, r bridge.Result) {
	d.report(report{kind: reportHeldEnded, dest: dest, r: r})
}

// tell passes news to run, when its lane wants it.
func (d *delivery) tell(n news) {
	d.start()
	select {
	case d.news <- n:
	case <-d.done:
	}
}

// reached reports that dest answered the direct path.
func (d *delivery) reached(dest destination) {
	if v := d.circuits.view(dest); v != nil && v.wantsReach.Load() && v.wantsReach.CompareAndSwap(true, false) {
		d.tell(news{dest: dest})
	}
}

// liveSeen reports a live request to dest, observed in endpoints first.
func (d *delivery) liveSeen(dest destination) {
	if v := d.circuits.view(dest); v != nil && v.wantsLive.Load() && v.wantsLive.CompareAndSwap(true, false) {
		d.tell(news{dest: dest, live: true})
	}
}

// circuitOpen tells whether exports to dest go straight to the spool.
func (d *delivery) circuitOpen(dest destination) bool {
	v := d.circuits.view(dest)
	return v != nil && v.open.Load()
}

// stop ends run and waits for it, at most until ctx ends.
func (d *delivery) stop(ctx context.Context) error {
	close(d.quit)
	d.cancel()
	select {
	case <-d.started:
	default:
		return nil // never ran
	}
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushed returns a channel that receives once nothing more can be sent
// now, with the destinations left waiting, and cuts every backoff wait
// short.
func (d *delivery) flushed(ctx context.Context) (<-chan flushDone, error) {
	d.start()
	ch := make(chan flushDone, 1)
	select {
	case d.flushes <- ch:
		return ch, nil
	case <-d.done:
		return nil, errShutdown
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run is the loop of the one goroutine that owns the lanes.
func (d *delivery) run() {
	defer close(d.done)
	// The rescan ticker starts with the first work: a delivery started
	// only to track a held export's circuit sets no timer.
	var ticker clockwork.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		if ticker == nil && d.working {
			ticker = d.cfg.clock.NewTicker(spool.DefaultRescanInterval)
			tick = ticker.Chan()
		}
		select {
		case <-d.quit:
			d.onQuit()
			return
		default:
		}
		d.fill()
		select {
		case <-d.quit:
			d.onQuit()
			return
		case rep := <-d.reports:
			d.onReport(rep)
			close(rep.ack)
		case n := <-d.news:
			d.onNews(n)
		case r := <-d.results:
			if r.delivered == probeMark {
				d.onProbe(r)
			} else {
				d.onResult(r)
			}
		case e := <-d.timers:
			d.onTimer(e)
		case w := <-d.flushes:
			d.working = true
			d.onFlush(w)
		case <-d.spool.Ready():
		case <-d.wakeCh:
			d.working = true
		case <-tick:
			// Claim again: the spool rescans for records left by processes
			// that died while this one runs.
		}
		d.note()
	}
}

// onQuit stops every lane. Sends in flight were cancelled; their records
// stay claimed and Close puts them back in line, attempts unchanged.
func (d *delivery) onQuit() {
	inflight := 0
	for _, l := range d.order {
		l.stopTimers()
		inflight += l.inflight
		if l.probing {
			inflight++
		}
	}
	for ; inflight > 0; inflight-- {
		<-d.results
	}
}

// laneOf returns dest's lane, making it if needed.
func (d *delivery) laneOf(dest destination) *lane {
	if l := d.lanes[dest]; l != nil {
		return l
	}
	l := newLane(dest, d.cfg)
	d.lanes[dest] = l
	d.order = append(d.order, l)
	l.publish()
	d.circuits.add(l.view)
	// Asked for before looking, so that a live request arriving meanwhile
	// is either seen here or reported (liveSeen).
	l.view.wantsLive.Store(true)
	d.checkCredentials(l)
	return l
}

// checkCredentials sets whether l's exports have headers to go with: a
// live request's, or configured ones. Without, the lane sends nothing and
// waits for a live request to its destination.
func (d *delivery) checkCredentials(l *lane) {
	if !l.credentials {
		if _, ok := d.live.lookup(l.dest); ok {
			l.credentials = true
		} else if _, ok := d.cfg.headersFor(&url.URL{Scheme: l.dest.scheme, Host: l.dest.host, Path: l.dest.path}); ok {
			l.credentials = true
		}
	}
	switch {
	case !l.credentials:
		l.state = laneCredentials
		l.publish()
		return
	case l.state == laneCredentials:
		l.state = laneHealthy
		l.publish()
		if l.backlog {
			d.cfg.logger.Info("otlpretry: credentials for a destination arrived; its stored exports are sent",
				"destination", l.dest.String())
		}
	}
	if !(l.state == laneWaiting && l.forCredentials) {
		l.view.wantsLive.Store(false)
	}
}

// laneForURL returns the lane of a stored URL. A URL that cannot be used
// has a lane too, whose sends fail and quarantine their records.
func (d *delivery) laneForURL(raw string) *lane {
	if l := d.byURL[raw]; l != nil {
		return l
	}
	e := d.urls.lookup(raw)
	l := d.laneOf(e.dest)
	if e.url == nil && !l.credentials {
		l.credentials = true // nothing to wait for: it cannot be sent
		l.state = laneHealthy
		l.publish()
	}
	if len(d.byURL) >= maxParsed {
		clear(d.byURL)
	}
	d.byURL[raw] = l
	return l
}

// claim takes up to n records of the lanes ok accepts among those with
// credentials, noting which lanes have records waiting.
func (d *delivery) claim(n int, ok func(*lane) bool) []*spool.Record {
	recs, err := d.spool.ClaimWhere(n, func(raw string) bool {
		l := d.laneForURL(raw)
		l.backlog = true
		return l.credentials && ok(l)
	})
	if err != nil && !errors.Is(err, spool.ErrClosed) {
		d.cfg.logger.Warn("otlpretry: cannot read the spool", "err", err)
	}
	return recs
}

// canSend tells whether l can start a backlog send now: healthy, with
// credentials, room in its window, and room in the in-flight budget
// unless l has nothing in flight (WithMaxInflightBytes).
func (d *delivery) canSend(l *lane) bool {
	return l.state == laneHealthy && l.credentials && l.window.InFlight() < l.window.Limit() &&
		(l.inflight == 0 || d.cfg.maxInflightBytes <= 0 || d.inflightBytes < d.cfg.maxInflightBytes)
}

// fill starts sends: backlog requests for healthy lanes up to their
// windows, and one record for each lane whose wait is over. A lane's
// window is its own, so a failing lane never delays another. When nothing
// can be sent and nothing is in flight, the flushes waiting are answered.
func (d *delivery) fill() {
	started := 0
	for _, l := range d.order {
		if l.state == laneHealthy {
			l.backlog = false // set again by the claim if records wait
		}
	}
	for {
		// The oldest record of any lane that can send; then about one
		// request's worth more of its lane.
		recs := d.claim(1, d.canSend)
		if len(recs) == 0 {
			break
		}
		l := d.laneForURL(recs[0].URL)
		if more := d.claimSize(l, recs[0]) - 1; more > 0 {
			recs = append(recs, d.claim(more, func(x *lane) bool { return x == l })...)
		}
		d.sendBacklog(l, recs)
		started++
	}
	for _, l := range d.order {
		if l.state == laneTrial && l.inflight == 0 && l.credentials {
			recs := d.claim(1, func(x *lane) bool { return x == l })
			for _, rec := range recs {
				d.send(l, rec)
			}
			started += len(recs)
		}
	}
	if started > 0 {
		d.working = true
		return
	}
	waiting := false
	for _, l := range d.order {
		// A wait for credentials ends only with a live request, which a
		// flush cannot bring.
		if l.inflight > 0 || l.state == laneWaiting && !l.forCredentials {
			return
		}
		waiting = waiting || l.state == laneWaiting
	}
	d.onIdle(waiting)
}

// onIdle: nothing can be sent now and nothing is in flight; some lanes
// may be waiting for credentials.
func (d *delivery) onIdle(waiting bool) {
	for _, l := range d.order {
		if !l.since.IsZero() && l.drained > 0 {
			d.cfg.logger.Info("otlpretry: backlog delivered",
				"destination", l.dest.String(), "exports", l.drained, "took", d.cfg.clock.Since(l.since).Round(time.Millisecond))
		}
		l.since, l.drained = time.Time{}, 0
	}
	if len(d.flushWaiters) > 0 {
		var left []DestinationStats
		for _, l := range d.order {
			if st := l.view.status.Load(); st.State != stateHealthy && l.backlog {
				left = append(left, *st)
			}
		}
		for _, w := range d.flushWaiters {
			w <- flushDone{left: left}
		}
		d.flushWaiters = nil
	}
	if !waiting {
		d.cfg.event(senderEvent{kind: "idle"})
	}
}

// send starts sending rec alone for l: the trial that ends a wait.
func (d *delivery) send(l *lane, rec *spool.Record) {
	if l.since.IsZero() {
		l.since = d.cfg.clock.Now()
	}
	l.inflight++
	// The trial is the lane's only send (inflight was 0), so the window
	// has room; its answer shrinks the window when it fails.
	t, _ := l.window.Acquire()
	go d.deliver(l, rec, l.epoch, t)
}

// onReport takes in what the direct path tells of an export.
func (d *delivery) onReport(rep report) {
	l := d.laneOf(rep.dest)
	switch rep.kind {
	case reportHeld:
		l.held++
		l.publish()
		return
	case reportHeldEnded:
		l.held = max(0, l.held-1)
	}
	switch {
	case rep.r.Outcome == retry.Delivered && rep.kind == reportHeldEnded:
		// The destination takes exports again.
		if l.state != laneCredentials {
			d.recovered(l)
		}
	case rep.r.Outcome.Retryable():
		r := result{lane: l, out: rep.r.Outcome, retryAfter: rep.r.Wait, target: rep.target,
			cause: rep.r.Cause, nameLookup: isNameLookup(rep.r.Err)}
		// A wait already under way answers the destination's failing.
		if l.state != laneWaiting {
			d.startWait(l, r)
		}
	}
	l.publish()
}

// onNews: dest answered the direct path, or a live request reached it.
func (d *delivery) onNews(n news) {
	l := d.lanes[n.dest]
	if l == nil {
		return
	}
	switch {
	case n.live:
		if !l.credentials {
			// Asked for again before looking, as in laneOf: the news
			// may have come with no live request yet (senderArrived).
			l.view.wantsLive.Store(true)
		}
		d.checkCredentials(l)
		if l.state == laneWaiting && l.forCredentials {
			l.endWait()
		}
	case n.connected:
		if l.state == laneWaiting && l.unreachable && n.epoch == l.epoch {
			// No connection could be made, and a probe's now is: the
			// destination is back, and the probe is the test (onProbe),
			// without waiting a round trip for its answer. Should the
			// server not take exports yet, the first sends fail and a wait
			// starts again.
			d.recovered(l)
			d.cfg.event(senderEvent{kind: "probe", reachable: true, dest: l.dest})
		}
	case l.state == laneWaiting && l.unreachable:
		l.endWait()
	}
}

// onResult takes in how a send or probe ended.
func (d *delivery) onResult(r result) {
	l := r.lane
	l.inflight--
	d.inflightBytes -= r.bytes
	l.window.Release(r.ticket, r.feedback)
	if r.claim > 0 {
		l.claim = r.claim
	}
	l.drained += r.delivered
	switch {
	case r.out == retry.Delivered || r.out == retry.Rejected:
		if r.epoch == l.epoch && l.state != laneCredentials {
			d.recovered(l)
		}
	case r.out.Retryable() && (l.state == laneWaiting || r.epoch != l.epoch):
		// This failure was already answered by a wait.
		d.releaseAll(r.again)
	case r.out.Retryable():
		d.startWait(l, r)
		d.releaseAll(r.again)
	}
}

// recovered: l's destination took (or definitely refused) an export.
func (d *delivery) recovered(l *lane) {
	if l.state != laneHealthy && !l.forCredentials {
		d.cfg.logger.Info("otlpretry: a destination answers again", "destination", l.dest.String(), "after", l.cause)
	}
	l.succeeded()
}

// startWait answers a failure of l's current epoch, a send's or the
// direct path's: the circuit opens (unless the failure was a refusal of
// credentials) and the lane waits for the server's Retry-After, else the
// backoff, probing meanwhile where that helps.
func (d *delivery) startWait(l *lane, r result) {
	cfg := d.cfg
	first := l.state == laneHealthy || l.state == laneCredentials
	l.epoch++
	wait := l.waitFor(cfg, r)
	l.stopTimers()
	l.state = laneWaiting
	l.unreachable = r.out == retry.Unreachable
	// Set by this wait's probes only: a destination that accepts
	// connections while it fails must answer to be back.
	l.dialFailed = false
	l.forCredentials = r.credentials
	if r.target != nil {
		l.target = r.target
	}
	if r.cause != "" {
		l.cause = r.cause
	} else if l.cause == "" {
		l.cause = r.out.String()
	}
	l.nextAttempt = cfg.clock.Now().Add(wait)
	l.waitTimer = d.timer(l, wait, false)
	// A probe still out sets the next when it returns (onProbe).
	l.probeInterval = probeEvery(cfg, r, wait)
	if l.probeInterval > 0 && !l.probing {
		l.probeTimer = d.timer(l, l.probeInterval, true)
	}
	l.publish()
	if first && !r.credentials {
		// Once an outage: the waits after it are the backoff's.
		cfg.logger.Warn("otlpretry: a destination is failing; exports to it are stored and sent when it answers again, other destinations are not held back",
			"destination", l.dest.String(), "cause", l.cause, "wait", wait)
	}
	if r.credentials {
		l.view.wantsLive.Store(true)
		if _, ok := d.live.lookup(l.dest); ok {
			// A live request came since this record was sent.
			l.view.wantsLive.Store(false)
			l.endWait()
		}
	}
	cfg.event(senderEvent{kind: "wait", wait: wait, out: r.out, dest: l.dest})
}

// timer reports to run after wait, tagged with l's epoch.
func (d *delivery) timer(l *lane, wait time.Duration, probe bool) clockwork.Timer {
	e := timerEvent{lane: l, epoch: l.epoch, probe: probe}
	return d.cfg.clock.AfterFunc(wait, func() {
		select {
		case d.timers <- e:
		case <-d.quit:
		}
	})
}

// onTimer: l's wait is over, or its next probe is due.
func (d *delivery) onTimer(e timerEvent) {
	l := e.lane
	if e.epoch != l.epoch || l.state != laneWaiting {
		return
	}
	if !e.probe {
		l.waitTimer = nil
		l.endWait()
		return
	}
	l.probeTimer = nil
	l.probing = true
	go d.probe(l, l.target, l.epoch, l.dialFailed)
}

// onProbe takes in a probe's outcome: the wait ends when the destination
// is back, else the next probe is set.
func (d *delivery) onProbe(pr result) {
	l := pr.lane
	l.probing = false
	if l.state != laneWaiting {
		return
	}
	if pr.epoch != l.epoch {
		// The wait started while this probe was out, and set no probe
		// timer meanwhile (startWait).
		if l.probeTimer == nil && !l.probing && l.probeInterval > 0 {
			l.probeTimer = d.timer(l, l.probeInterval, true)
		}
		return
	}
	l.dialFailed = pr.dialFailed
	// An unreachable destination is back when it answers at all; a busy
	// one only when it accepts.
	back := pr.out == retry.Delivered || (l.unreachable && pr.out != retry.Unreachable && pr.out != retry.Canceled)
	switch {
	case pr.out == retry.Delivered && l.unreachable:
		// A destination that did not answer at all took an export with
		// the lane's credentials: the probe was the trial, and the backlog
		// goes at once, its window restarting from slow start. A busy
		// destination that takes an empty export may still refuse data,
		// so it keeps its trial of one record and its backoff.
		d.recovered(l)
	case back:
		l.endWait()
	default:
		next := l.probeInterval
		if l.unreachable && pr.out == retry.Unreachable {
			next = probeEvery(d.cfg, pr, 0) // a name that stopped resolving is probed less often
		}
		if next > 0 {
			l.probeTimer = d.timer(l, next, true)
		}
	}
	d.cfg.event(senderEvent{kind: "probe", reachable: back, dest: l.dest})
}

// onFlush cuts every wait short and answers w once nothing more can be
// sent.
func (d *delivery) onFlush(w chan flushDone) {
	d.flushWaiters = append(d.flushWaiters, w)
	for _, l := range d.order {
		// A wait for credentials is not cut: the same headers would be
		// refused again.
		if l.state == laneWaiting && !l.forCredentials {
			l.endWait()
		}
	}
}

// releaseAll puts records that failed back in line.
func (d *delivery) releaseAll(ids []spool.ID) {
	for _, id := range ids {
		if err := d.spool.Release(id); err != nil && !errors.Is(err, spool.ErrClosed) {
			d.cfg.logger.Warn("otlpretry: cannot update the spool", "id", id.String(), "err", err)
		}
	}
}

// deliver sends rec alone, settles it in the spool and reports to run.
func (d *delivery) deliver(l *lane, rec *spool.Record, epoch uint64, t batch.Ticket) {
	r := d.deliverOne(l.dest, rec)
	r.lane, r.epoch, r.ticket = l, epoch, t
	r.feedback = batch.FeedbackOf(r.out)
	switch {
	case r.out == retry.Delivered:
		r.delivered = 1
	case r.out.Retryable():
		r.again = []spool.ID{r.target.ID}
	}
	if r.credentials {
		r.feedback = batch.Neutral // the endpoint is not overloaded
	}
	d.results <- r
}

// deliverOne sends one record and settles it in the spool, unless the
// failure is retryable: run releases it then, once it has decided to wait
// (released here, it could be claimed and sent again before).
func (d *delivery) deliverOne(dest destination, rec *spool.Record) result {
	target := *rec
	target.Body = nil
	var v verdict
	if dest.isGRPC() {
		v = d.deliverOneGRPC(dest, rec)
	} else {
		v = d.deliverOneHTTP(dest, rec)
	}
	d.settleOne(dest, rec.ID, v.out, v.detail)
	if v.rejected > 0 {
		d.partial(dest, v.rejected, 1)
	}
	return result{out: v.out, retryAfter: v.wait, target: &target, cause: v.detail, nameLookup: v.nameLookup, credentials: v.credentials}
}

// deliverOneHTTP sends rec to its OTLP/HTTP destination and judges the
// answer.
func (d *delivery) deliverOneHTTP(dest destination, rec *spool.Record) verdict {
	req, cancel, live, err := d.request(rec, nil, rec.ContentType, rec.ContentEncoding, d.cfg.attemptTimeout[rec.Signal])
	if err != nil {
		d.spool.Recycle(rec)
		return verdict{out: retry.Rejected, detail: err.Error()}
	}
	defer cancel()
	bodies := trackBodies(req, rec.Body, func() { d.spool.Recycle(rec) })
	resp, err := d.next.RoundTrip(req)
	bodies.roundTripDone()
	var rejected int64
	if err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		rejected, _ = partialSuccess(resp, rec.Signal, rec.ContentType)
	}
	v := d.judge(dest, d.sentHTTP(resp, err, live))
	v.nameLookup = isNameLookup(err)
	if v.out == retry.Delivered {
		v.rejected = rejected
	}
	return v
}

// deliverOneGRPC sends rec, as stored, to its gRPC destination and judges
// the answer.
func (d *delivery) deliverOneGRPC(dest destination, rec *spool.Record) verdict {
	s, ok := d.sendGRPC(dest, rec.Body, d.cfg.attemptTimeout[rec.Signal])
	d.spool.Recycle(rec)
	if !ok {
		return noConnection
	}
	v := d.judge(dest, s)
	if v.out == retry.Delivered {
		v.rejected, _ = partialProtobuf(s.Reply)
	}
	return v
}

// settleOne settles a record sent alone by what its attempt came to:
// acknowledged when delivered, quarantined with the reason when refused.
// A retryable failure leaves it claimed, for run to release once it has
// decided the wait; canceled (shutting down) leaves it for Close to put
// back in line.
func (d *delivery) settleOne(dest destination, id spool.ID, out retry.Outcome, detail string) {
	var err error
	switch {
	case out == retry.Delivered:
		err = d.spool.Ack(id)
		d.counters.delivered.Add(1)
	case out == retry.Rejected:
		err = d.spool.Quarantine(id, detail)
		d.counters.quarantined.Add(1)
		if ok, held := d.rejectLimit.allow(); ok {
			d.cfg.logger.Warn("otlpretry: the endpoint refused a spooled export; it is quarantined",
				"destination", dest.String(), "answer", detail, "dir", d.spool.Dir(), "similar_since_last", held)
		}
	case out.Retryable():
		d.counters.retried.Add(1)
	}
	if err != nil && !errors.Is(err, spool.ErrClosed) {
		d.cfg.logger.Warn("otlpretry: cannot update the spool", "id", id.String(), "err", err)
	}
}

// verdict is what a background send came to: the outcome and wait, the
// reason of a refusal or the cause of a failure, whether it waits for
// credentials, and whether the destination's name did not resolve.
type verdict struct {
	out         retry.Outcome
	wait        time.Duration
	detail      string
	credentials bool
	nameLookup  bool
	// rejected is what a delivery's partial_success says the endpoint
	// dropped.
	rejected int64
}

// judge says what a send of stored exports to dest came to, whatever its
// protocol. A refusal of credentials to a send that went without a live
// request's (s.Live false) says nothing about the exports, which wait, as
// for a busy server, for a live request to their destination: such an
// answer is retryable, never a refusal that would quarantine them.
func (d *delivery) judge(dest destination, s bridge.Sent) verdict {
	if s.Outcome != retry.Rejected || s.Live || !s.WantsCredentials {
		return verdict{out: s.Outcome, wait: s.Wait, detail: s.Cause}
	}
	detail := "waiting for credentials: " + s.Cause
	if ok, held := d.credsLimit.allow(); ok {
		d.cfg.logger.Warn("otlpretry: a spooled export was refused for want of credentials; it waits for a live request to its destination (or WithEndpointHeaders for it)",
			"destination", dest.String(), "answer", detail, "similar_since_last", held)
	}
	return verdict{out: retry.ServerBusy, detail: detail, credentials: true}
}

// sentHTTP evaluates an OTLP/HTTP send's answer (retry.Evaluate) and
// closes resp. A refusal of credentials without a live request's is named
// by its status alone; any other refusal by the start of its body.
func (d *delivery) sentHTTP(resp *http.Response, err error, live bool) bridge.Sent {
	out, wait := retry.Evaluate(d.ctx, resp, err, d.cfg.clock.Now)
	s := bridge.Sent{Outcome: out, Wait: wait, WantsCredentials: wantsCredentials(resp), Live: live}
	if s.WantsCredentials && !live {
		s.Cause = retry.Cause(resp, nil)
		discard(resp)
	} else {
		s.Cause = describe(resp, err, out)
	}
	return s
}

// wantsCredentials reports an answer that refuses the request's
// credentials rather than the export: 401 and 403.
func wantsCredentials(resp *http.Response) bool {
	return resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden)
}

// describe closes resp and says what the attempt came to: for a refusal,
// the start of its body, the reason the record is quarantined; for a
// retryable failure, its cause (retry.Cause).
func describe(resp *http.Response, err error, out retry.Outcome) string {
	var detail string
	switch {
	case out == retry.Rejected && resp != nil:
		detail = retry.Refusal(resp)
	case out.Retryable():
		detail = retry.Cause(resp, err)
	}
	if resp != nil {
		discard(resp)
	}
	return detail
}

// probe sends an empty export (a valid OTLP request with no data) to the
// destination of the record that failed last, and reports how it went.
// early: the last probe could not connect, so a new connection (reported
// as news as soon as it is made) is the sign that the destination is
// back; over a link of long round trips it comes one round trip before
// the answer.
func (d *delivery) probe(l *lane, target *spool.Record, epoch uint64, early bool) {
	res := result{lane: l, epoch: epoch, out: retry.Unreachable, delivered: probeMark}
	defer func() { d.results <- res }()
	if target == nil {
		return
	}
	if e := d.urls.lookup(target.URL); e.dest.isGRPC() {
		if s, ok := d.sendGRPC(e.dest, []byte{}, d.cfg.probeTimeout); ok {
			res.out = s.Outcome
		}
		return
	}
	body, ct := []byte{}, "application/x-protobuf"
	if target.ContentType == "application/json" {
		body, ct = []byte("{}"), "application/json"
	}
	req, cancel, _, err := d.request(target, body, ct, "", d.cfg.probeTimeout)
	if err != nil {
		return
	}
	defer cancel()
	if early {
		var once sync.Once
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if !info.Reused {
					once.Do(func() { d.tell(news{dest: l.dest, connected: true, epoch: epoch}) })
				}
			},
		}))
	}
	resp, err := d.next.RoundTrip(req)
	res.out, _ = retry.Evaluate(d.ctx, resp, err, d.cfg.clock.Now)
	res.nameLookup, res.dialFailed = isNameLookup(err), isDialError(err)
	if err == nil {
		discard(resp)
	}
}

// probeMark in result.delivered tells a probe's result from a send's.
const probeMark = -1

// isNameLookup tells whether err is a failure to resolve a host name.
func isNameLookup(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// isDialError tells whether err is a failure to connect: refused,
// unreachable, timed out, or a name that did not resolve.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// probeEvery says how often to probe during the wait that follows a
// failure, or 0 for not at all. An unreachable destination is probed
// often: the probe costs it nothing, as the host refuses the connection or
// never sees it. When the name did not resolve, each probe is a query to
// the resolver, which is spared with at most one a second. A busy one is
// probed only during long waits and only when it set no Retry-After, so
// that it is spared the load yet recovery is noticed within the interval
// rather than at the end of a wait that may have doubled past the outage.
func probeEvery(cfg *config, r result, wait time.Duration) time.Duration {
	switch {
	case r.out == retry.Unreachable && r.nameLookup && cfg.probeInterval > 0:
		return max(cfg.probeInterval, nameLookupProbeInterval)
	case r.out == retry.Unreachable:
		return cfg.probeInterval
	case r.out == retry.ServerBusy && r.retryAfter == 0 && cfg.busyProbeInterval > 0 && wait > cfg.busyProbeInterval:
		return cfg.busyProbeInterval
	}
	return 0
}

// nameLookupProbeInterval is the least time between probes of a
// destination whose name does not resolve.
const nameLookupProbeInterval = time.Second

// request builds the request for a spooled record: the live URL and
// headers of its own destination when this process has seen them (live is
// then true), else the headers configured for that destination, else none.
// Headers of one destination never go to another. A nil body is left for
// the caller to set.
func (d *delivery) request(rec *spool.Record, body []byte, contentType, encoding string, timeout time.Duration) (req *http.Request, cancel context.CancelFunc, live bool, err error) {
	e := d.urls.lookup(rec.URL)
	if e.url == nil {
		return nil, nil, false, fmt.Errorf("unusable URL %q", rec.URL)
	}
	var (
		u      *url.URL
		header http.Header
	)
	if lr, ok := d.live.lookup(e.dest); ok {
		// The live request's URL, copied, with its query string.
		live = true
		lu := lr.url
		u = &lu
		header = make(http.Header, len(lr.header)+len(rec.Header)+2)
		for k, v := range lr.header {
			// Shared, not copied: the value slices are the destination's
			// own clone, full to capacity, which RoundTrippers do not
			// modify.
			header[k] = v
		}
	} else {
		cu := *e.url
		u = &cu
		configured, _ := d.cfg.headersFor(u)
		header = make(http.Header, len(configured)+len(rec.Header)+2)
		for k, v := range configured {
			header[k] = append([]string(nil), v...)
		}
	}
	for k, v := range rec.Header {
		header[k] = append([]string(nil), v...)
	}
	delete(header, "Content-Encoding")
	header["Content-Type"] = []string{contentType}
	if encoding != "" {
		header["Content-Encoding"] = []string{encoding}
	}
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, "", rd)
	if err != nil {
		cancel()
		return nil, nil, false, fmt.Errorf("unusable URL %q: %w", rec.URL, err)
	}
	req.URL, req.Host, req.Header = u, u.Host, header
	return req, cancel, live, nil
}

// leftError says, by destination, why what is left in the spool waits.
func leftError(left []DestinationStats) string {
	if len(left) == 0 {
		return ""
	}
	parts := make([]string, 0, len(left))
	for _, st := range slices.SortedFunc(slices.Values(left), func(a, b DestinationStats) int { return strings.Compare(a.URL, b.URL) }) {
		p := st.URL + ": " + st.State
		if st.Cause != "" && st.State != stateCredentials {
			p += " (" + st.Cause + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}
