package otlpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// sender delivers the spool in the background. One goroutine (run) owns
// the delivery state: how many sends are in flight, whether it is backing
// off, when to probe. Workers send one record each, settle it in the spool
// and report the outcome. It is started on demand and stopped by Shutdown;
// like every goroutine it never keeps the process alive.
type sender struct {
	t *Transport

	startOnce sync.Once
	started   chan struct{} // closed by start
	wakeCh    chan struct{} // new work in the spool
	reachCh   chan struct{} // the direct path got an answer from the endpoint
	hurryCh   chan struct{} // a flush asks not to wait for credentials
	flushCh   chan chan struct{}
	failCh    chan struct{} // a direct attempt failed: see failed
	quit      chan struct{}
	done      chan struct{}

	ctx    context.Context // ends at shutdown, cancelling sends in flight
	cancel context.CancelFunc

	// healthyEpoch is epoch+1 while run is in its healthy state, else 0. A
	// delivery that succeeds in that epoch claims the next record itself
	// rather than hand back to run: a backlog drains as fast as a loop of
	// sends, without a goroutine switch and a claim through run between
	// every two records.
	healthyEpoch atomic.Uint64

	failMu  sync.Mutex // guards failure
	failure *result    // the latest direct failure run has not taken yet
}

type senderState int

const (
	healthy senderState = iota // send up to the concurrency, no pause
	waiting                    // backing off after a failure
	trial                      // backoff over: send one record to test the endpoint
)

func (s senderState) String() string { return [...]string{"healthy", "waiting", "trial"}[s] }

type result struct {
	out        retry.Outcome
	retryAfter time.Duration
	epoch      uint64
	target     *spool.Record // the record's addressing, without its body
	// delivered counts the records the same goroutine delivered before
	// this one, in a healthy epoch (see healthyEpoch).
	delivered int
	// nameLookup: the endpoint was unreachable because its name did not
	// resolve, so probes go at most once a second (see probeEvery).
	nameLookup bool
	// credentials: the record was refused for want of credentials (see
	// deliverOne); the endpoint itself answers, so the circuit stays
	// closed for live exports, which bring their own.
	credentials bool
}

func newSender(t *Transport) *sender {
	ctx, cancel := context.WithCancel(context.Background())
	return &sender{
		t:       t,
		started: make(chan struct{}),
		wakeCh:  make(chan struct{}, 1),
		reachCh: make(chan struct{}, 1),
		hurryCh: make(chan struct{}, 1),
		flushCh: make(chan chan struct{}),
		failCh:  make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}
}

func (s *sender) start() {
	s.startOnce.Do(func() {
		close(s.started)
		go s.run()
	})
}

func (s *sender) wake() { signal(s.wakeCh) }

// failed reports that the direct path's attempts at an export failed, with
// the last answer's Retry-After: run waits on it exactly as on a failure of
// its own. Callers report before the export reaches the spool (Put or
// Release), and run takes the report before every claim and after it, so
// the export is never sent before the wait.
func (s *sender) failed(r directResult, target *spool.Record) {
	s.failMu.Lock()
	s.failure = &result{out: r.out, retryAfter: r.retryAfter, target: target, nameLookup: isNameLookup(r.err)}
	s.failMu.Unlock()
	signal(s.failCh)
}

// takeFailure returns the direct failure reported since the last call.
func (s *sender) takeFailure() (result, bool) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	f := s.failure
	s.failure = nil
	if f == nil {
		return result{}, false
	}
	return *f, true
}
func (s *sender) reachable() { signal(s.reachCh) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// stop ends run and waits for it, at most until ctx ends.
func (s *sender) stop(ctx context.Context) error {
	close(s.quit)
	s.cancel()
	select {
	case <-s.started:
	default:
		return nil // never ran
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushed returns a channel closed once the spool is empty, and cuts any
// backoff wait short.
func (s *sender) flushed(ctx context.Context) (<-chan struct{}, error) {
	s.start()
	signal(s.hurryCh)
	ch := make(chan struct{})
	select {
	case s.flushCh <- ch:
		return ch, nil
	case <-s.done:
		return nil, errShutdown
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *sender) run() {
	defer close(s.done)
	t := s.t
	cfg := t.cfg
	clock := cfg.clock
	if !s.waitForCredentials() {
		return
	}

	results := make(chan result, cfg.concurrency)
	probes := make(chan result, 1)
	var (
		state         = healthy
		epoch         uint64 // bumped at each new wait, so late results of older sends change nothing
		inflight      int
		bo            = backoff{initial: cfg.backoffInitial, max: cfg.backoffMax, jitter: cfg.jitter}
		waitTimer     clockwork.Timer
		probeTimer    clockwork.Timer
		probing       bool
		unreachableE  bool          // the last failure got no answer at all
		lastFailed    *spool.Record // where probes go
		probeInterval time.Duration
		flushWaiters  []chan struct{}
		backlogSince  time.Time
		drainedCount  int
		idleTicker    = clock.NewTicker(spool.DefaultRescanInterval)
	)
	defer idleTicker.Stop()
	stopTimer := func(tm *clockwork.Timer) {
		if *tm != nil {
			(*tm).Stop()
			*tm = nil
		}
	}
	endWait := func() {
		stopTimer(&waitTimer)
		stopTimer(&probeTimer)
		state = trial
	}
	// startWait answers a failure of the current epoch, the sender's own or
	// the direct path's: the circuit opens and the sender waits for the
	// server's Retry-After, else the backoff.
	startWait := func(r result) {
		if !r.credentials {
			t.circuitOpen.Store(true)
		}
		epoch++
		wait := r.retryAfter
		if wait > cfg.maxRetryAfter {
			wait = cfg.maxRetryAfter
		}
		if wait == 0 {
			wait = bo.next()
		}
		state = waiting
		unreachableE = r.out == retry.Unreachable
		lastFailed = r.target
		stopTimer(&waitTimer)
		waitTimer = clock.NewTimer(wait)
		if every := probeEvery(cfg, r, wait); every > 0 && !probing {
			stopTimer(&probeTimer)
			probeTimer = clock.NewTimer(every)
			probeInterval = every
		}
		cfg.event(senderEvent{kind: "wait", wait: wait, out: r.out})
	}
	// takeDirectFailure starts a wait for a failure the direct path
	// reported, unless a wait already answers the endpoint's failing (as
	// for a late failure of the sender's own).
	takeDirectFailure := func() bool {
		f, ok := s.takeFailure()
		if ok && state != waiting {
			startWait(f)
		}
		return ok
	}

	for {
		if state == healthy {
			s.healthyEpoch.Store(epoch + 1)
		} else {
			s.healthyEpoch.Store(0)
		}
		capacity := 0
		switch {
		case state == healthy:
			capacity = cfg.concurrency - inflight
		case state == trial && inflight == 0:
			capacity = 1
		}
		if takeDirectFailure() {
			capacity = 0
		}
		if capacity > 0 {
			recs, err := t.spool.Claim(capacity)
			if err != nil && !errors.Is(err, spool.ErrClosed) {
				cfg.logger.Warn("otlpretry: cannot read the spool", "err", err)
			}
			if takeDirectFailure() {
				// Reported while claiming: what was claimed may include
				// the failed export, which must wait.
				for _, r := range recs {
					s.release(r.ID)
				}
				recs = nil
				capacity = 0
			}
			for _, r := range recs {
				if backlogSince.IsZero() {
					backlogSince = clock.Now()
				}
				inflight++
				go s.deliver(r, epoch, results)
			}
			if len(recs) == 0 && inflight == 0 && state != waiting {
				if !backlogSince.IsZero() && drainedCount > 0 {
					cfg.logger.Info("otlpretry: backlog delivered",
						"exports", drainedCount, "took", clock.Since(backlogSince).Round(time.Millisecond))
				}
				backlogSince, drainedCount = time.Time{}, 0
				for _, w := range flushWaiters {
					close(w)
				}
				flushWaiters = nil
				cfg.event(senderEvent{kind: "idle"})
			}
		}

		var ready <-chan struct{}
		if capacity > 0 {
			ready = t.spool.Ready()
		}
		var waitC, probeC <-chan time.Time
		if waitTimer != nil {
			waitC = waitTimer.Chan()
		}
		if probeTimer != nil {
			probeC = probeTimer.Chan()
		}

		select {
		case <-s.quit:
			stopTimer(&waitTimer)
			stopTimer(&probeTimer)
			// Sends in flight were cancelled; their records stay claimed
			// and Close puts them back in line, attempts unchanged.
			for ; inflight > 0; inflight-- {
				<-results
			}
			if probing {
				<-probes
			}
			return

		case r := <-results:
			inflight--
			drainedCount += r.delivered
			switch {
			case r.out == retry.Delivered || r.out == retry.Rejected:
				if r.out == retry.Delivered {
					drainedCount++
				}
				if r.epoch == epoch {
					state = healthy
					bo.reset()
					stopTimer(&waitTimer)
					stopTimer(&probeTimer)
					t.circuitOpen.Store(false)
				}
			case r.out.Retryable() && (state == waiting || r.epoch != epoch):
				// This failure was already answered by a wait.
				if !r.credentials {
					t.circuitOpen.Store(true)
				}
				s.release(r.target.ID)
			case r.out.Retryable():
				startWait(r)
				s.release(r.target.ID)
			}

		case <-ready:
		case <-s.wakeCh:
		case <-s.failCh: // taken at the top of the loop
		case <-idleTicker.Chan():
			// Claim again: the spool rescans for records left by processes
			// that died while this one runs.

		case <-waitC:
			waitTimer = nil
			endWait()

		case <-probeC:
			probeTimer = nil
			probing = true
			go s.probe(lastFailed, probes)

		case pr := <-probes:
			out := pr.out
			probing = false
			if state != waiting {
				break
			}
			// An unreachable endpoint is back when it answers at all; a
			// busy one only when it accepts.
			back := out == retry.Delivered || (unreachableE && out != retry.Unreachable && out != retry.Canceled)
			if back {
				endWait()
			} else {
				next := probeInterval
				if unreachableE && pr.out == retry.Unreachable {
					next = probeEvery(cfg, pr, 0) // a name that stopped resolving is probed less often
				}
				probeTimer = clock.NewTimer(next)
			}
			cfg.event(senderEvent{kind: "probe", reachable: back})

		case <-s.reachCh:
			if state == waiting && unreachableE {
				endWait()
			}

		case w := <-s.flushCh:
			flushWaiters = append(flushWaiters, w)
			if state == waiting {
				endWait()
			}
		}
	}
}

// waitForCredentials holds exports left by an earlier process until this
// process has made a live request (whose headers they borrow), the adopt
// wait is over, or a flush asks for them now. It reports false when
// stopped meanwhile.
func (s *sender) waitForCredentials() bool {
	cfg := s.t.cfg
	if len(cfg.headers) > 0 || cfg.adoptWait <= 0 {
		return true
	}
	timer := cfg.clock.NewTimer(cfg.adoptWait)
	defer timer.Stop()
	select {
	case <-s.t.endpoints.seen:
		return true
	case <-timer.Chan():
		return true
	case <-s.hurryCh:
		return true
	case <-s.quit:
		return false
	}
}

// deliver sends rec and settles it in the spool; while deliveries succeed
// in a healthy epoch, it goes on with the next waiting record. It reports
// the last outcome to run.
func (s *sender) deliver(rec *spool.Record, epoch uint64, results chan<- result) {
	sent := 0
	for {
		r := s.deliverOne(rec, epoch)
		if r.out != retry.Delivered || s.healthyEpoch.Load() != epoch+1 {
			r.delivered = sent
			results <- r
			return
		}
		select {
		case <-s.quit:
			r.delivered = sent
			results <- r
			return
		default:
		}
		next, err := s.t.spool.Claim(1)
		if err != nil || len(next) == 0 {
			r.delivered = sent
			results <- r
			return
		}
		sent++
		rec = next[0]
	}
}

// deliverOne sends one record and settles it in the spool.
func (s *sender) deliverOne(rec *spool.Record, epoch uint64) result {
	t := s.t
	target := *rec
	target.Body = nil
	var (
		out         retry.Outcome
		wait        time.Duration
		detail      string
		credentials bool
	)
	req, cancel, live, err := s.request(rec, nil, rec.ContentType, rec.ContentEncoding, t.cfg.attemptTimeout[rec.Signal])
	if err != nil {
		out, detail = retry.Rejected, err.Error()
		t.spool.Recycle(rec)
	} else {
		defer cancel()
		bodies := trackBodies(req, rec.Body, func() { t.spool.Recycle(rec) })
		var resp *http.Response
		resp, err = t.next.RoundTrip(req)
		bodies.roundTripDone()
		out, wait = retry.Evaluate(s.ctx, resp, err, t.cfg.clock.Now())
		if out == retry.Rejected && !live && wantsCredentials(resp) {
			credentials = true
			// Sent without a live request's credentials: the refusal
			// says nothing about the export, which waits, as for a busy
			// server, for a live request to its destination. It is never
			// quarantined for this.
			out = retry.ServerBusy
			detail = "waiting for credentials: " + retry.Cause(resp, nil)
			discard(resp)
			if ok, held := t.credsLimit.allow(); ok {
				t.cfg.logger.Warn("otlpretry: a spooled export was refused for want of credentials; it waits for a live request to its destination (or WithEndpointHeaders for it)",
					"url", redactedURL(req), "answer", detail, "similar_since_last", held)
			}
		} else {
			detail = describe(resp, err, out)
		}
	}

	var settleErr error
	switch {
	case out == retry.Delivered:
		settleErr = t.spool.Ack(rec.ID)
		t.counters.delivered.Add(1)
	case out == retry.Rejected:
		settleErr = t.spool.Quarantine(rec.ID, detail)
		t.counters.quarantined.Add(1)
		if ok, held := t.rejectLimit.allow(); ok {
			t.cfg.logger.Warn("otlpretry: the endpoint refused a spooled export; it is quarantined",
				"answer", detail, "dir", t.spool.Dir(), "similar_since_last", held)
		}
	case out.Retryable():
		// Released by run, once it has decided to back off: released here,
		// the record could be claimed and sent again before that decision.
		t.counters.retried.Add(1)
	}
	// canceled: shutting down; the spool returns the record to the line.
	if settleErr != nil && !errors.Is(settleErr, spool.ErrClosed) {
		t.cfg.logger.Warn("otlpretry: cannot update the spool", "id", rec.ID.String(), "err", settleErr)
	}
	return result{out: out, retryAfter: wait, epoch: epoch, target: &target, nameLookup: isNameLookup(err), credentials: credentials}
}

// wantsCredentials reports an answer that refuses the request's
// credentials rather than the export: 401 and 403.
func wantsCredentials(resp *http.Response) bool {
	return resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden)
}

// release puts a record that failed back in line.
func (s *sender) release(id spool.ID) {
	if err := s.t.spool.Release(id); err != nil && !errors.Is(err, spool.ErrClosed) {
		s.t.cfg.logger.Warn("otlpretry: cannot update the spool", "id", id.String(), "err", err)
	}
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
// endpoint of the record that failed last, and reports how it went.
func (s *sender) probe(target *spool.Record, results chan<- result) {
	t := s.t
	if target == nil {
		results <- result{out: retry.Unreachable}
		return
	}
	body, ct := []byte{}, "application/x-protobuf"
	if target.ContentType == "application/json" {
		body, ct = []byte("{}"), "application/json"
	}
	req, cancel, _, err := s.request(target, body, ct, "", t.cfg.probeTimeout)
	if err != nil {
		results <- result{out: retry.Unreachable}
		return
	}
	defer cancel()
	resp, err := t.next.RoundTrip(req)
	out, _ := retry.Evaluate(s.ctx, resp, err, t.cfg.clock.Now())
	if err == nil {
		discard(resp)
	}
	results <- result{out: out, nameLookup: isNameLookup(err)}
}

// isNameLookup tells whether err is a failure to resolve a host name.
func isNameLookup(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// probeEvery says how often to probe during the wait that follows a
// failure, or 0 for not at all. An unreachable endpoint is probed often:
// the probe costs it nothing, as the host refuses the connection or never
// sees it. When the name did not resolve, each probe is a query to the
// resolver, which is spared with at most one a second. A busy one is
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

// nameLookupProbeInterval is the least time between probes of an endpoint
// whose name does not resolve.
const nameLookupProbeInterval = time.Second

// request builds the request for a spooled record: the live URL and
// headers of its own destination when this process has seen them (live is
// then true), else the headers configured for that destination, else none.
// Headers of one destination never go to another. A nil body is left for
// the caller to set.
func (s *sender) request(rec *spool.Record, body []byte, contentType, encoding string, timeout time.Duration) (req *http.Request, cancel context.CancelFunc, live bool, err error) {
	t := s.t
	var (
		u      *url.URL
		header http.Header
	)
	if lr, ok := t.endpoints.lookup(rec.URL); ok {
		// The live request's parsed URL, copied, so that a drain does not
		// parse the same URL once per record.
		live = true
		lu := lr.url
		u = &lu
		header = make(http.Header, len(lr.header)+len(rec.Header)+2)
		for k, v := range lr.header {
			// Shared, not copied: the value slices are the endpoint's own
			// clone, full to capacity, which RoundTrippers do not modify.
			header[k] = v
		}
	} else {
		if u, err = url.Parse(rec.URL); err != nil {
			return nil, nil, false, fmt.Errorf("unusable URL %q: %w", rec.URL, err)
		}
		configured, _ := t.cfg.headersFor(u)
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
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
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
