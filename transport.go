package otlpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// Transport is an http.RoundTripper for the OTLP/HTTP exporters that keeps
// every export an outage would lose: it retries once, then stores the
// export in a spool on disk, answers the exporter with success, and
// delivers the spool in the background once the endpoint answers again.
type Transport struct {
	cfg       *config
	next      http.RoundTripper
	spool     *spool.Spool
	endpoints *endpoints
	// circuits publishes each destination's circuit: open while it fails,
	// and exports to it then go straight to the spool instead of waiting
	// on it. Only delivery writes it.
	circuits *circuits
	delivery *delivery
	created  time.Time

	closed atomic.Bool
	// detached counts exports answered at the end of their hold whose
	// attempts still run.
	detached     atomic.Int64
	detachedDone chan struct{} // a value after each detached attempt ends
	// hurry is closed (and replaced) by ForceFlush: the immediate retries
	// waiting out their delay go at once rather than keep it waiting.
	hurry atomic.Pointer[chan struct{}]

	counters    counters
	warnLimit   logLimiter // "Currently retrying ..."
	dropLimit   logLimiter // exports the spool cannot take
	rejectLimit logLimiter // non-retryable answers

	// exchanges and cancellers are reused from one export to the next, so
	// that the happy path allocates little beyond what the lower transport
	// does.
	exchanges  sync.Pool // of *exchange
	cancellers cancellerPool
	// workers run the attempts of held exports (see startAttempts).
	workers workerPool

	shutdownOnce sync.Once
	metricsReg   metric.Registration
}

var _ http.RoundTripper = (*Transport)(nil)

// New opens the spool and returns a Transport. Exports that an earlier
// process left in the spool are delivered in the background.
func New(opts ...Option) (*Transport, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	sp, err := spool.Open(cfg.dir, append([]spool.Option{
		spool.WithMaxBytes(cfg.maxBytes),
		spool.WithSync(cfg.syncMode),
		spool.WithFullPolicy(cfg.fullPolicy),
		spool.WithMaxAge(cfg.maxAge),
		spool.WithLogger(cfg.logger),
		spool.WithClock(cfg.clock.Now),
	}, cfg.spoolOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("otlpretry: %w", err)
	}
	t := &Transport{
		cfg:          cfg,
		next:         cfg.next,
		spool:        sp,
		endpoints:    newEndpoints(),
		circuits:     newCircuits(),
		created:      cfg.clock.Now(),
		warnLimit:    logLimiter{clock: cfg.clock, interval: cfg.logInterval},
		dropLimit:    logLimiter{clock: cfg.clock, interval: cfg.logInterval},
		rejectLimit:  logLimiter{clock: cfg.clock, interval: cfg.logInterval},
		detachedDone: make(chan struct{}, 1),
	}
	hurry := make(chan struct{})
	t.hurry.Store(&hurry)
	t.delivery = newDelivery(deliveryDeps{spool: sp, next: cfg.next, cfg: cfg, counters: &t.counters,
		live: t.endpoints, circuits: t.circuits})
	if err := t.registerMetrics(); err != nil {
		sp.Close()
		return nil, err
	}
	if st := sp.Stats(); st.Records > 0 {
		cfg.logger.Info("otlpretry: found exports left by an earlier process; they will be delivered",
			"exports", st.Records, "bytes", st.Bytes, "dir", cfg.dir)
		t.delivery.start()
	}
	return t, nil
}

// Client returns an *http.Client for the exporters' WithHTTPClient option.
// It has no overall Timeout: each attempt is bounded instead (see
// WithAttemptTimeout), so that the retry and the hand-off fit in one call.
func (t *Transport) Client() *http.Client { return &http.Client{Transport: t} }

// RoundTrip sends an export, retrying and spooling as described in the
// package documentation. Requests other than POSTs with a body pass through
// untouched.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.Body == nil || req.Body == http.NoBody || t.closed.Load() {
		return t.next.RoundTrip(req)
	}
	signal := spool.SignalFromPath(req.URL.Path)
	x, err := t.newExchange(req, signal)
	if err != nil {
		return nil, err
	}
	dest := destinationOf(req.URL)
	t.endpoints.observe(dest, req)
	t.delivery.liveSeen(dest)

	if t.delivery.circuitOpen(dest) || t.detached.Load() >= maxDetached {
		resp, err := t.handOff(req, &x.p, signal, "endpoint failing")
		x.p.closeUnsent()
		x.release()
		return resp, err
	}
	if t.cfg.maxHold <= 0 {
		r := t.tryDirect(req.Context(), x)
		x.p.closeUnsent()
		resp, err := t.conclude(req, &x.p, signal, r)
		x.release()
		return resp, err
	}

	// The attempts run detached from the exporter's call, so that the call
	// can be answered when the hold is over, whatever the endpoint does.
	// The hold starts first so that the exporter's goroutine parks right
	// after handing the export over, leaving its processor to the worker.
	x.startHold()
	t.startAttempts(x)
	if r, ok := x.wait(req.Context()); ok {
		resp, err := t.conclude(req, &x.p, signal, r)
		x.release()
		return resp, err
	}
	// The endpoint is slow to settle this export: keep it safe, claimed by
	// this process, release the exporter, and settle the record when the
	// attempts end. Later attempts use the copy read here, not the
	// exporter's buffer.
	data, err := x.p.bytes()
	if err != nil {
		resp, err := t.conclude(req, &x.p, signal, <-x.results)
		x.release()
		return resp, err
	}
	rec := newRecord(req, data, signal)
	if err := t.spool.PutClaimed(rec); err != nil {
		resp, err := t.conclude(req, &x.p, signal, <-x.results)
		x.release()
		return resp, err
	}
	x.handedOff.Store(true)
	t.detached.Add(1)
	t.delivery.held(dest)
	go t.settleDetached(x, rec)
	return spooledResponse(req), nil
}

// directResult is how the attempts of the direct path ended.
type directResult struct {
	resp *http.Response
	err  error
	out  retry.Outcome
	// retryAfter is what the last attempt's answer asked to wait, for the
	// sender's wait when the export is handed off.
	retryAfter time.Duration
	// cause names a retryable failure for the log (retry.Cause).
	cause string
}

// tryDirect makes the first attempt of x and, when it fails in a way worth
// it, the one immediate retry. ctx is the attempts' context: the
// exporter's on the direct path, x's detached one when the export is held.
func (t *Transport) tryDirect(ctx context.Context, x *exchange) directResult {
	req, p, signal := x.req, &x.p, x.signal
	start := t.cfg.clock.Now()
	resp, err := t.attempt(ctx, req, p, signal)
	out, wait := retry.Evaluate(ctx, resp, err, t.cfg.clock.Now())
	if !out.Retryable() {
		return directResult{resp, err, out, 0, ""}
	}
	cause := describe(resp, err, out)
	t.counters.retried.Add(1)
	if !t.shouldRetryNow(x, start, wait) {
		return directResult{nil, err, out, wait, cause}
	}
	if wait == 0 {
		wait = t.cfg.immediateRetryDelay
	}
	if err := t.sleep(ctx, wait); err != nil {
		return directResult{nil, err, retry.Canceled, 0, ""}
	}
	resp, err = t.attempt(ctx, req, p, signal)
	out, wait = retry.Evaluate(ctx, resp, err, t.cfg.clock.Now())
	if out.Retryable() {
		cause = describe(resp, err, out)
		t.counters.retried.Add(1)
		resp = nil
	}
	return directResult{resp, err, out, wait, cause}
}

// reason names why the export could not be delivered directly: a
// retryable failure's cause, else the outcome ("canceled").
func (r directResult) reason() string {
	if r.out.Retryable() && r.cause != "" {
		return r.cause
	}
	return r.out.String()
}

// conclude answers the exporter once the direct attempts have ended.
func (t *Transport) conclude(req *http.Request, p *payload, signal spool.Signal, r directResult) (*http.Response, error) {
	switch r.out {
	case retry.Delivered, retry.Rejected:
		return t.finish(req, r.resp, r.err, r.out)
	}
	// Failed, or the exporter gave up waiting: the export is still worth
	// keeping. A failure is the endpoint's answer as much as one of the
	// sender's own: it sets the sender's wait before the export reaches
	// the spool, so that the sender cannot send it at once.
	if r.out.Retryable() {
		t.delivery.failed(destinationOf(req.URL), r, newRecord(req, nil, signal), false)
	}
	return t.handOff(req, p, signal, r.reason())
}

// settleDetached waits for the attempts of an export that was answered at
// the end of its hold, and settles its record accordingly.
func (t *Transport) settleDetached(x *exchange, rec *spool.Record) {
	req := x.req
	dest := destinationOf(req.URL)
	defer func() {
		x.release()
		t.detached.Add(-1)
		signal(t.detachedDone)
	}()
	r := <-x.results
	var err error
	switch r.out {
	case retry.Delivered:
		discard(r.resp)
		err = t.spool.Ack(rec.ID)
		t.counters.direct.Add(1)
		t.delivery.heldEnded(dest, r)
	case retry.Rejected:
		detail := describe(r.resp, r.err, r.out)
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
		t.warnRetrying(req, r.reason())
	}
	if err != nil && !errors.Is(err, spool.ErrClosed) {
		t.cfg.logger.Warn("otlpretry: cannot update the spool", "id", rec.ID.String(), "err", err)
	}
}

// shouldRetryNow decides on the one immediate retry: not when it is off,
// when the first attempt was already slow, when the server asks for a wait
// longer than we hold an exporter for, or when the deadline of the
// exporter, while it waits for x, would pass first (see
// exchange.exporterDeadline).
func (t *Transport) shouldRetryNow(x deadliner, start time.Time, retryAfter time.Duration) bool {
	if t.cfg.immediateRetryDelay < 0 {
		return false
	}
	now := t.cfg.clock.Now()
	if t.cfg.slowAttempt > 0 && now.Sub(start) > t.cfg.slowAttempt {
		return false
	}
	wait := t.cfg.immediateRetryDelay
	if retryAfter > 0 {
		if retryAfter > t.cfg.maxImmediateWait {
			return false
		}
		wait = retryAfter
	}
	if deadline, ok := x.exporterDeadline(); ok && deadline.Sub(now) < wait+now.Sub(start) {
		return false
	}
	return true
}

func (t *Transport) finish(req *http.Request, resp *http.Response, err error, out retry.Outcome) (*http.Response, error) {
	switch out {
	case retry.Delivered:
		t.counters.direct.Add(1)
		t.delivery.reached(destinationOf(req.URL))
	case retry.Rejected:
		t.counters.rejected.Add(1)
		t.delivery.reached(destinationOf(req.URL))
		if ok, held := t.rejectLimit.allow(); ok {
			t.cfg.logger.Warn("otlpretry: the endpoint refused an export; it is not retried",
				"destination", redactedURL(req), "status", resp.StatusCode, "similar_since_last", held)
		}
	}
	return resp, err
}

// handOff stores the export and answers the exporter as the endpoint would
// have on success, so that the exporter neither retries nor drops it.
func (t *Transport) handOff(req *http.Request, p *payload, signal spool.Signal, why string) (*http.Response, error) {
	data, err := p.bytes()
	if err == nil {
		err = t.spool.Put(newRecord(req, data, signal))
	}
	if err != nil {
		return nil, t.notStored(err)
	}
	t.counters.spooled.Add(1)
	t.delivery.wake()
	t.warnRetrying(req, why)
	return spooledResponse(req), nil
}

// notStored counts and logs an export the spool could not take (err says
// why) and returns RoundTrip's error for it. With WithCallerRetry the
// caller retries it, so it is refused, logged at WARN; without, it is lost:
// the OTel OTLP/HTTP exporters do not retry an error from their client's
// transport (only a temporary *url.Error, which this is not).
func (t *Transport) notStored(err error) error {
	st := t.spool.Stats()
	ok, held := t.dropLimit.allow()
	if t.cfg.callerRetry {
		t.counters.refused.add(err)
		if ok {
			t.cfg.logger.Warn(fmt.Sprintf("otlpretry: Already retrying %d failed export(s) (%d bytes); an export that cannot be stored is refused, for the caller to retry", st.Records, st.Bytes),
				"err", err, "refused_since_last", held+1)
		}
		return fmt.Errorf("otlpretry: export not stored, for the caller to retry: %w", err)
	}
	t.counters.lost.add(err)
	if ok {
		t.cfg.logger.Error(fmt.Sprintf("otlpretry: Already retrying %d failed export(s) (%d bytes), dropping an export", st.Records, st.Bytes),
			"err", err, "dropped_since_last", held+1)
	}
	return fmt.Errorf("otlpretry: dropping an export: %w", err)
}

func (t *Transport) warnRetrying(req *http.Request, why string) {
	t.warnRetryingDest(destinationOf(req.URL), why)
}

func (t *Transport) warnRetryingDest(dest destination, why string) {
	if ok, _ := t.warnLimit.allow(); ok {
		st := t.spool.Stats()
		t.cfg.logger.Warn(fmt.Sprintf("otlpretry: Currently retrying %d failed export(s) (%d bytes)", st.Records, st.Bytes),
			"reason", why, "destination", dest.String())
	}
}

// deadliner is an export whose exporter may still wait for it, with its
// deadline (exchange.exporterDeadline).
type deadliner interface {
	exporterDeadline() (time.Time, bool)
}

// newRecord describes an export for the spool, which strips what is
// secret from it.
func newRecord(req *http.Request, body []byte, signal spool.Signal) *spool.Record {
	return &spool.Record{
		URL:             req.URL.String(),
		ContentType:     req.Header.Get("Content-Type"),
		ContentEncoding: req.Header.Get("Content-Encoding"),
		Signal:          signal,
		Header:          req.Header,
		Body:            body,
	}
}

// attempt sends the body once, bounded by the per-attempt timeout. The
// response body stays readable until closed.
func (t *Transport) attempt(ctx context.Context, req *http.Request, p *payload, signal spool.Signal) (*http.Response, error) {
	body, err := p.body()
	if err != nil {
		return nil, fmt.Errorf("otlpretry: replay request body: %w", err)
	}
	a := t.newAttempt(ctx, t.cfg.attemptTimeout[signal])
	r := req.WithContext(a)
	r.Body, r.GetBody = body, p.replay
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		a.end()
		return nil, err
	}
	a.body, resp.Body = resp.Body, a
	return resp, nil
}

func (t *Transport) sleep(ctx context.Context, d time.Duration) error {
	hurry := *t.hurry.Load()
	timer := t.cfg.clock.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.Chan():
		return nil
	case <-hurry:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hurryRetries ends the delays of the immediate retries waiting now.
func (t *Transport) hurryRetries() {
	next := make(chan struct{})
	close(*t.hurry.Swap(&next))
}

// maxDetached bounds the exports whose attempts outlive their hold; past
// it the endpoint is too slow to be worth a direct try.
const maxDetached = 64

// discard reads a little of a failed response so the connection can be
// reused, then closes it.
func discard(resp *http.Response) {
	if resp == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// spooledResponse is an empty Export*ServiceResponse in the request's
// encoding: an empty protobuf message is zero bytes, in JSON "{}".
func spooledResponse(req *http.Request) *http.Response {
	// The media type decides, whatever its parameters
	// ("application/json; charset=utf-8" is JSON).
	ct, body := "application/x-protobuf", []byte{}
	if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err == nil && mt == "application/json" {
		ct, body = "application/json", []byte("{}")
	}
	h := http.Header{}
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Otlpretry-Spooled", "1")
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

var errShutdown = errors.New("otlpretry: shut down")
