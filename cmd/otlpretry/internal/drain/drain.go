// Package drain sends what a spool folder holds, now, and says what could
// not be sent: the otlpretry command's drain, for a spool that no
// application will send any more (a decommissioned host's, say).
//
// It opens the folder as a spool, so it works safely beside processes that
// use it, claims the records oldest first and sends each with a few quick
// retries. A record the endpoint refuses (a 4xx other than 408 and 429) is
// moved to the quarantine, as the transport does. When a record still fails
// after its retries the endpoint is taken to be down: no more records are
// claimed, those in flight finish, and everything not sent stays in the
// spool for a later drain or for the application.
package drain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
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
	// Concurrency is how many records are sent at once; default 4.
	Concurrency int
	// Retries is how many times a record that failed in a retryable way
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
	// Progress, if set, is called after each record is settled, from one
	// goroutine at a time.
	Progress func(Progress)
	Logger   *slog.Logger
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
	if fi, err := os.Stat(filepath.Join(cfg.Dir, "pending")); err != nil || !fi.IsDir() {
		// spool.Open would create an empty spool in a mistyped folder.
		return Result{}, fmt.Errorf("%s is not a spool folder (no pending/ in it)", cfg.Dir)
	}
	sp, err := spool.Open(cfg.Dir, spool.WithLogger(cfg.Logger), spool.WithRescanInterval(-1))
	if err != nil {
		return Result{}, err
	}
	d := &drainer{cfg: cfg, sp: sp}
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
	cfg Config
	sp  *spool.Spool

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
	work := make(chan *spool.Record)
	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rec := range work {
				d.settle(ctx, rec)
			}
		}()
	}
claiming:
	for !d.isStopped() {
		if ctx.Err() != nil {
			d.stop("interrupted")
			break
		}
		recs, err := d.sp.Claim(d.cfg.Concurrency)
		if err != nil {
			d.stop("cannot read the spool: " + err.Error())
			break
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			select {
			case work <- rec:
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

// settle sends one record, retrying, and settles it in the spool.
func (d *drainer) settle(ctx context.Context, rec *spool.Record) {
	size := rec.Size()
	wait := time.Second
	for attempt := 0; ; attempt++ {
		code, retryAfter, detail, err := d.send(ctx, rec)
		switch {
		case err == nil && code >= 200 && code < 300:
			if err := d.sp.Ack(rec.ID); err != nil {
				d.cfg.Logger.Warn("drain: delivered, but cannot delete the record; it may be sent again", "id", rec.ID.String(), "err", err)
			}
			d.mu.Lock()
			d.prog.SentRecords++
			d.prog.SentBytes += size
			d.mu.Unlock()
			d.report()
			return
		case err == nil && !retryable(code):
			reason := fmt.Sprintf("HTTP %d: %s", code, detail)
			if err := d.sp.Quarantine(rec.ID, reason); err != nil {
				d.cfg.Logger.Warn("drain: cannot quarantine a refused record", "id", rec.ID.String(), "err", err)
			}
			d.cfg.Logger.Warn("drain: the endpoint refused an export; it is quarantined", "answer", reason)
			d.mu.Lock()
			d.prog.Rejected++
			d.mu.Unlock()
			d.report()
			return
		}
		why := fmt.Sprintf("HTTP %d", code)
		if err != nil {
			why = err.Error()
		}
		if ctx.Err() != nil || attempt >= d.cfg.Retries || d.isStopped() {
			if ctx.Err() != nil {
				d.stop("interrupted")
			} else {
				d.stop("the endpoint is failing: " + why)
			}
			d.mu.Lock()
			d.giveUp = append(d.giveUp, rec.ID)
			d.prog.Failed++
			d.mu.Unlock()
			d.report()
			return
		}
		pause := wait
		if retryAfter > 0 {
			pause = min(retryAfter, d.cfg.MaxRetryAfter)
		}
		wait *= 2
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

func retryable(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// send makes one attempt. err is set when no answer came.
func (d *drainer) send(ctx context.Context, rec *spool.Record) (code int, retryAfter time.Duration, detail string, err error) {
	target := rec.URL
	if d.cfg.Endpoint != nil {
		path := ""
		if u, perr := url.Parse(rec.URL); perr == nil {
			path = u.Path
		}
		target = otlpenv.SignalURL(d.cfg.Endpoint, rec.Signal, path)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(rec.Body))
	if err != nil {
		// A URL that cannot be used will never work: treat as refused.
		return http.StatusBadRequest, 0, "unusable URL: " + err.Error(), nil
	}
	for k, vs := range rec.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	for k, vs := range d.cfg.Headers {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", rec.ContentType)
	if rec.ContentEncoding != "" {
		req.Header.Set("Content-Encoding", rec.ContentEncoding)
	}
	req.Header.Set("User-Agent", "otlpretry-drain")
	resp, err := d.cfg.Transport.RoundTrip(req)
	if err != nil {
		return 0, 0, "", redact(err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	if s := strings.TrimSpace(resp.Header.Get("Retry-After")); s != "" {
		if secs, perr := strconv.Atoi(s); perr == nil && secs > 0 {
			retryAfter = time.Duration(secs) * time.Second
		} else if t, perr := http.ParseTime(s); perr == nil {
			retryAfter = time.Until(t)
		}
	}
	return resp.StatusCode, retryAfter, string(bytes.TrimSpace(snippet)), nil
}

// redact drops the URL's user information from a transport error.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			return fmt.Errorf("%s %s: %w", ue.Op, u.Redacted(), ue.Err)
		}
	}
	return err
}
