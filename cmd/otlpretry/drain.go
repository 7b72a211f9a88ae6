package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/drain"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
)

func runDrain(ctx context.Context, args []string, e *env) int {
	fs := newFlagSet("drain", "[--dir D] [--endpoint URL] [flags]", `
Sends the exports a spool folder holds, now: a spool left by a stopped or
decommissioned host, say. Each export goes to the URL stored with it, or,
with --endpoint, to the same /v1/<signal> path under that base URL. It is
safe while other processes use the folder.

An export the endpoint refuses (a 4xx other than 408 and 429) is moved to
the quarantine. When one still fails after its retries (no answer, 408,
429, 5xx), the endpoint is taken to be down and the drain stops; what was
not sent stays in the spool. Headers come from OTEL_EXPORTER_OTLP_HEADERS.

Consecutive exports of one URL and encoding are sent merged, in requests of
at most OTLPRETRY_MAX_REQUEST_BYTES before compression (default 1 MiB; -1
sends each export alone); a merged request the endpoint refuses is split
until the refused export is found, and only that one is quarantined.

Exits 0 when everything was sent; otherwise 1, saying how many exports
were not.`, e)
	dir := fs.String("dir", "", "spool folder (env OTLPRETRY_DIR; default "+defaultDir()+")")
	endpoint := fs.String("endpoint", "", "send to this base URL instead of the stored one, keeping /v1/<signal> (env "+otlpenv.EndpointVar+"; default the stored URLs)")
	concurrency := fs.Int("concurrency", 4, "exports sent at once")
	retries := fs.Int("retries", 3, "retries of an export that failed in a retryable way before the drain stops (waits 1s, 2s, 4s... or Retry-After)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on each attempt")
	if code, done := parseFlags(fs, args, e); done {
		return code
	}
	if *concurrency < 1 || *retries < 0 || *timeout <= 0 {
		fmt.Fprintln(e.stderr, "otlpretry drain: --concurrency and --timeout must be positive, --retries not negative")
		return exitUsage
	}
	headers, err := otlpenv.ParseHeaders(e.getenv(otlpenv.HeadersVar))
	if err != nil {
		fmt.Fprintf(e.stderr, "otlpretry drain: %s: %v\n", otlpenv.HeadersVar, err)
		return exitUsage
	}
	var base *url.URL
	raw, from := *endpoint, "--endpoint"
	if raw == "" {
		raw, from = e.getenv(otlpenv.EndpointVar), otlpenv.EndpointVar
	}
	if raw != "" {
		if base, err = otlpenv.ParseEndpoint(raw); err != nil {
			fmt.Fprintf(e.stderr, "otlpretry drain: %s: %v\n", from, err)
			return exitUsage
		}
	}
	var maxRequest int64
	if v := e.getenv("OTLPRETRY_MAX_REQUEST_BYTES"); v != "" {
		if maxRequest, err = strconv.ParseInt(v, 10, 64); err != nil {
			fmt.Fprintf(e.stderr, "otlpretry drain: OTLPRETRY_MAX_REQUEST_BYTES: %v\n", err)
			return exitUsage
		}
	}
	spoolDir := resolveDir(*dir, e)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	terminal := e.isTerminal(e.stderr)
	prog := newDrainProgress(e.stderr, terminal)
	target := "the URLs stored with each export"
	if base != nil {
		target = base.Redacted() + " (from " + from + ")"
	}
	fmt.Fprintf(e.stderr, "Draining %s to %s\n", spoolDir, target)
	res, err := drain.Run(ctx, drain.Config{
		Dir:             spoolDir,
		Endpoint:        base,
		Headers:         headers,
		Concurrency:     *concurrency,
		MaxRequestBytes: maxRequest,
		Retries:         *retries,
		AttemptTimeout:  *timeout,
		Progress:        prog.update,
		Logger:          slog.New(&lineHandler{print: prog.println}),
	})
	prog.finish()
	if err != nil {
		fmt.Fprintf(e.stderr, "otlpretry drain: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(e.stdout, "Sent %d of %d exports (%s).\n", res.SentRecords, res.TotalRecords, humanBytes(res.SentBytes))
	if n := res.NotSent(); n > 0 {
		fmt.Fprintf(e.stdout, "%d export(s) could not be sent: %d refused by the endpoint (moved to %s/quarantine), %d left in the spool.\n",
			n, res.Rejected, spoolDir, res.Left)
		if res.Stopped != "" {
			fmt.Fprintf(e.stdout, "Stopped early: %s\n", res.Stopped)
		}
		return exitFailure
	}
	return exitOK
}

// drainProgress shows a progress bar on a terminal (exports, bytes, rate,
// time left) and, elsewhere, a plain line every few seconds.
type drainProgress struct {
	mu       sync.Mutex
	w        io.Writer
	bar      *progressbar.ProgressBar
	terminal bool
	last     time.Time
	p        drain.Progress
}

func newDrainProgress(w io.Writer, terminal bool) *drainProgress {
	return &drainProgress{w: w, terminal: terminal}
}

func (d *drainProgress) update(p drain.Progress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.p = p
	desc := fmt.Sprintf("%d/%d exports", p.SentRecords+p.Rejected+p.Failed, p.TotalRecords)
	if d.terminal {
		if d.bar == nil {
			d.bar = progressbar.NewOptions64(max(p.TotalBytes, 1),
				progressbar.OptionSetWriter(d.w),
				progressbar.OptionSetDescription(desc),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowTotalBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionSetElapsedTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionFullWidth(),
				progressbar.OptionSetRenderBlankState(true),
				progressbar.OptionUseANSICodes(true),
			)
		}
		d.bar.Describe(desc)
		_ = d.bar.Set64(p.SentBytes)
		return
	}
	if time.Since(d.last) >= 2*time.Second {
		d.last = time.Now()
		fmt.Fprintf(d.w, "%s, %s of %s sent\n", desc, humanBytes(p.SentBytes), humanBytes(p.TotalBytes))
	}
}

// println prints a line above the bar.
func (d *drainProgress) println(line string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bar != nil {
		_ = d.bar.Clear()
	}
	fmt.Fprintln(d.w, line)
}

func (d *drainProgress) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bar != nil {
		_ = d.bar.Exit()
		fmt.Fprintln(d.w)
	}
}

// lineHandler prints warnings as single lines.
type lineHandler struct {
	print func(string)
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += fmt.Sprintf(" %s=%q", a.Key, a.Value.String())
		return true
	})
	h.print(line)
	return nil
}

func (h *lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineHandler) WithGroup(string) slog.Handler      { return h }
