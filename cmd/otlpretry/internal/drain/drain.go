// Package drain sends what a spool folder holds, now, and says what could
// not be sent: the otlpretry command's drain, for a spool that no
// application will send any more (a decommissioned host's, say).
//
// It opens the folder as a spool, so it works safely beside processes that
// use it, claims the records oldest first and sends them as the
// transport's background sender does: consecutive records of one URL,
// signal, Content-Type and Content-Encoding merged into requests of at
// most MaxRequestBytes (internal/batch), each settled by the answer to the
// request that carried it (batch.Settle), with a few quick retries.
// Answers are judged as the transport judges them (retry.Evaluate): a 2xx
// delivers every record in the request; a refusal (1xx, 3xx, a 4xx other
// than 408 and 429, or a 413) of a merged request splits it until the
// records the endpoint refuses are found, and only those are moved to the
// quarantine, with the start of the answer as the reason; no answer, 408,
// 429 and 5xx are retried after 1 s, doubling, or after the server's
// Retry-After (seconds or an HTTP date, at most MaxRetryAfter). When
// records still fail after their retries the endpoint is taken to be down:
// no more records are claimed or tried, those in flight finish, and
// everything not sent stays in the spool for a later drain or for the
// application. Result.Stopped then names the endpoint and the cause
// (retry.Cause: "connection refused", "name not found", "HTTP 503 Service
// Unavailable", ...).
package drain

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// Config describes one drain.
type Config struct {
	Dir string
	// Endpoint, when set, replaces the scheme, host and base path of every
	// record's stored URL; the path /v1/<signal> is kept.
	Endpoint *url.URL
	// Headers are sent with every record (OTEL_EXPORTER_OTLP_HEADERS).
	Headers http.Header
	// Concurrency is how many requests are sent at once; default 4.
	Concurrency int
	// MaxRequestBytes bounds a merged request before compression; zero
	// means batch.DefaultMaxBytes (1 MiB), negative turns merging off:
	// each record is then sent alone, as stored.
	MaxRequestBytes int64
	// Retries is how many times a request that failed in a retryable way
	// (no answer, 408, 429, 5xx) is tried again before the drain stops;
	// default 0 means none. Waits are 1 s, doubling, or the server's
	// Retry-After up to MaxRetryAfter.
	Retries int
	// AttemptTimeout bounds each attempt; default 10 s.
	AttemptTimeout time.Duration
	// MaxRetryAfter bounds an obeyed Retry-After; default 30 s.
	MaxRetryAfter time.Duration
	// Transport carries the requests; default a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Progress, if set, is called after each request's records are
	// settled, from one goroutine at a time.
	Progress func(Progress)
	Logger   *slog.Logger
	// Sleep waits d before a retry and returns early when ctx ends; nil
	// means a timer.
	Sleep func(ctx context.Context, d time.Duration)
	// Now tells the time, to read a Retry-After given as a date; nil means
	// time.Now.
	Now func() time.Time
}

// Progress counts records and their bytes on disk.
type Progress struct {
	// Total is what the spool held when the drain began. Records other
	// processes store meanwhile are left to them.
	TotalRecords int
	TotalBytes   int64
	// Sent were accepted by the endpoint and deleted from the spool.
	SentRecords int
	SentBytes   int64
	// Rejected were refused by the endpoint and moved to the quarantine.
	Rejected int
	// Failed could not be sent and stay in the spool.
	Failed int
}

// Result is how a drain ended.
type Result struct {
	Progress
	// Left is what stays in the spool, waiting, as far as this process
	// sees it.
	Left      int
	LeftBytes int64
	// Stopped says why the drain stopped early, if it did.
	Stopped string
}

// NotSent counts the records that were not delivered.
func (r Result) NotSent() int { return r.Rejected + r.Left }

// Run drains cfg.Dir. It returns an error only when it could not work at
// all (no such spool, unreadable folder); records that could not be sent
// are counted in the Result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 30 * time.Second
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if fi, err := os.Stat(filepath.Join(cfg.Dir, "pending")); err != nil || !fi.IsDir() {
		// spool.Open would create an empty spool in a mistyped folder.
		return Result{}, fmt.Errorf("%s is not a spool folder (no pending/ in it)", cfg.Dir)
	}
	sp, err := spool.Open(cfg.Dir, spool.WithLogger(cfg.Logger), spool.WithRescanInterval(-1))
	if err != nil {
		return Result{}, err
	}
	d := &drainer{cfg: cfg, sp: sp, packer: batch.NewPacker(int(min(cfg.MaxRequestBytes, 1<<30)))}
	if cfg.MaxRequestBytes < 0 {
		// A bound of one byte: every record is over it, so alone.
		d.packer = batch.NewPacker(1)
	}
	st := sp.Stats()
	d.prog.TotalRecords, d.prog.TotalBytes = st.Records, st.Bytes
	d.report()
	res := d.run(ctx)
	// Records given up on stay claimed until here, so that they are not
	// claimed again; now they go back in line, an attempt more.
	for _, id := range d.giveUp {
		if err := sp.Release(id); err != nil {
			cfg.Logger.Warn("drain: cannot put a record back in line", "id", id.String(), "err", err)
		}
	}
	st = sp.Stats()
	res.Left, res.LeftBytes = st.Records, st.Bytes
	if err := sp.Close(); err != nil {
		return res, err
	}
	return res, nil
}

type drainer struct {
	cfg    Config
	sp     *spool.Spool
	packer *batch.Packer

	mu       sync.Mutex
	prog     Progress
	giveUp   []spool.ID
	stopped  string
	progress sync.Mutex // serializes Progress calls
}

func (d *drainer) report() {
	if d.cfg.Progress == nil {
		return
	}
	d.progress.Lock()
	defer d.progress.Unlock()
	d.mu.Lock()
	p := d.prog
	d.mu.Unlock()
	d.cfg.Progress(p)
}

func (d *drainer) stop(why string) {
	d.mu.Lock()
	if d.stopped == "" {
		d.stopped = why
	}
	d.mu.Unlock()
}

func (d *drainer) isStopped() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopped != ""
}

func (d *drainer) run(ctx context.Context) Result {
	work := make(chan *batch.Request)
	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for req := range work {
				if d.isStopped() {
					// Not tried: its records stay claimed until Close puts
					// them back in line, their attempt counts unchanged.
					continue
				}
				d.settle(ctx, req)
			}
		}()
	}
	claim := d.cfg.Concurrency
	if d.cfg.MaxRequestBytes >= 0 {
		// About one bound's worth of records for each request in flight,
		// at first from the average size on disk.
		d.mu.Lock()
		claim = d.claimFor(int(d.prog.TotalBytes), d.prog.TotalRecords)
		d.mu.Unlock()
	}
claiming:
	for !d.isStopped() {
		if ctx.Err() != nil {
			d.stop("interrupted")
			break
		}
		recs, err := d.sp.Claim(claim)
		if err != nil {
			d.stop("cannot read the spool: " + err.Error())
			break
		}
		if len(recs) == 0 {
			break
		}
		if d.cfg.MaxRequestBytes >= 0 {
			claim = d.claimSize(recs)
		}
		for _, req := range d.packer.Pack(recs) {
			select {
			case work <- req:
			case <-ctx.Done():
				// Records claimed but not tried go back in line at Close,
				// their attempt counts unchanged.
				d.stop("interrupted")
				break claiming
			}
		}
	}
	close(work)
	wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	return Result{Progress: d.prog, Stopped: d.stopped}
}

// maxClaim bounds the records of one claim, whatever their size.
const maxClaim = 4096

// claimSize is the next claim after recs: from the average size of their
// bodies.
func (d *drainer) claimSize(recs []*spool.Record) int {
	var n int
	for _, r := range recs {
		n += len(r.Body)
	}
	return d.claimFor(n, len(recs))
}

// claimFor is a claim of about one bound's worth of records for each
// request in flight, for records of bytes over count.
func (d *drainer) claimFor(bytes, count int) int {
	per := max(1, d.packer.MaxBytes()*max(count, 1)/max(bytes, 1))
	return min(per*d.cfg.Concurrency, maxClaim)
}

// settle sends one request, retrying what a retryable answer sends back
// (repacked: what a split delivered is not sent again), and settles every
// record it carries in the spool.
func (d *drainer) settle(ctx context.Context, req *batch.Request) {
	queue := []*batch.Request{req}
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		var (
			again []*spool.Record
			stop  *answer
		)
		for _, q := range queue {
			if stop != nil {
				again = append(again, q.Records()...)
				continue
			}
			var last answer
			res := batch.Settle(ctx, q, func(ctx context.Context, q *batch.Request) batch.Answer {
				last = d.send(ctx, q)
				return batch.Answer{Outcome: last.out, Status: last.status, Wait: last.wait, Reason: last.why}
			})
			for _, o := range res.Records {
				switch o.Verdict {
				case batch.Delivered:
					d.delivered(o.Record)
				case batch.Quarantine:
					d.refused(o.Record, o.Reason, last.target)
				default:
					again = append(again, o.Record)
				}
			}
			d.report()
			if res.Stop.Outcome != retry.Delivered {
				stop = &last
			}
		}
		if stop == nil {
			return
		}
		if stop.out == retry.Canceled || ctx.Err() != nil || attempt >= d.cfg.Retries || d.isStopped() {
			if stop.out == retry.Canceled || ctx.Err() != nil {
				d.stop("interrupted")
			} else {
				d.stop(fmt.Sprintf("the endpoint %s is failing: %s", stop.target, stop.why))
			}
			d.mu.Lock()
			for _, rec := range again {
				d.giveUp = append(d.giveUp, rec.ID)
			}
			d.prog.Failed += len(again)
			d.mu.Unlock()
			d.report()
			return
		}
		pause := backoff
		if stop.wait > 0 {
			pause = min(stop.wait, d.cfg.MaxRetryAfter)
		}
		backoff *= 2
		d.cfg.Sleep(ctx, pause)
		queue = d.packer.Pack(again)
	}
}

// delivered acknowledges a record the endpoint accepted.
func (d *drainer) delivered(rec *spool.Record) {
	if err := d.sp.Ack(rec.ID); err != nil {
		d.cfg.Logger.Warn("drain: delivered, but cannot delete the record; it may be sent again", "id", rec.ID.String(), "err", err)
	}
	d.mu.Lock()
	d.prog.SentRecords++
	d.prog.SentBytes += rec.Size()
	d.mu.Unlock()
}

// refused quarantines a record the endpoint refused alone.
func (d *drainer) refused(rec *spool.Record, why, target string) {
	if err := d.sp.Quarantine(rec.ID, why); err != nil {
		d.cfg.Logger.Warn("drain: cannot quarantine a refused record", "id", rec.ID.String(), "err", err)
	}
	d.cfg.Logger.Warn("drain: the endpoint refused an export; it is quarantined", "answer", why, "url", target)
	d.mu.Lock()
	d.prog.Rejected++
	d.mu.Unlock()
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// answer is what one attempt came to.
type answer struct {
	out    retry.Outcome
	status int           // the HTTP status, zero without an answer
	wait   time.Duration // the server's Retry-After, for retry.ServerBusy
	// why is the quarantine reason of a refusal (retry.Refusal), or the
	// cause of a failure (retry.Cause).
	why    string
	target string // where it went, without user information
}

// send makes one attempt at a request; retry.Evaluate judges it.
func (d *drainer) send(ctx context.Context, q *batch.Request) answer {
	target := q.URL()
	if d.cfg.Endpoint != nil {
		path := ""
		if u, perr := url.Parse(target); perr == nil {
			path = u.Path
		}
		target = otlpenv.SignalURL(d.cfg.Endpoint, q.Signal(), path)
	}
	actx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, target, q.Body())
	if err != nil {
		// A URL that cannot be used will never work: treat as refused.
		return answer{out: retry.Rejected, why: "unusable URL: " + err.Error()}
	}
	req.ContentLength = q.Len()
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(q.Body()), nil }
	a := answer{target: req.URL.Redacted()}
	for k, vs := range q.Header() {
		req.Header[k] = append([]string(nil), vs...)
	}
	for k, vs := range d.cfg.Headers {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", q.ContentType())
	if enc := q.ContentEncoding(); enc != "" {
		req.Header.Set("Content-Encoding", enc)
	}
	req.Header.Set("User-Agent", "otlpretry-drain")
	resp, err := d.cfg.Transport.RoundTrip(req)
	a.out, a.wait = retry.Evaluate(ctx, resp, err, d.cfg.Now)
	if a.out == retry.Rejected {
		a.why = retry.Refusal(resp)
	} else {
		a.why = retry.Cause(resp, err)
	}
	if resp != nil {
		a.status = resp.StatusCode
		// Read a little more, so that the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
	}
	return a
}
