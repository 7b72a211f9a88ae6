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
	t.newSender()
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
	x, err := t.newExchange(req, spool.SignalFromPath(req.URL.Path))
	if err != nil {
		return nil, err
	}
	t.endpoints.observe(x.dest, req)
	e := t.export(x)
	switch {
	case e.Stored:
		return spooledResponse(req), nil
	case e.Err != nil:
		return nil, e.Err
	}
	return e.Result.Response, e.Result.Err
}

// shouldRetryNow decides on the one immediate retry: not when it is off,
// when the first attempt was already slow, when the server asks for a wait
// longer than we hold an exporter for, or when the deadline of the
// exporter, while it waits for x, would pass first (see
// exchange.exporterDeadline).
func (t *Transport) shouldRetryNow(x *exchange, start time.Time, retryAfter time.Duration) bool {
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

// warnRetrying logs, at most once per log interval, that exports to dest
// are stored and retried, and why.
func (t *Transport) warnRetrying(dest destination, why string) {
	if ok, _ := t.warnLimit.allow(); ok {
		st := t.spool.Stats()
		t.cfg.logger.Warn(fmt.Sprintf("otlpretry: Currently retrying %d failed export(s) (%d bytes)", st.Records, st.Bytes),
			"reason", why, "destination", dest.String())
	}
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
