package otlpretry

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/otlpretry/otlpretry/internal/bridge"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// httpExport is an OTLP/HTTP export's side of the flow (bridge.Export):
// the exporter's request and its body. It lives in an exchange and is
// reused with it.
type httpExport struct {
	req    *http.Request
	signal spool.Signal
	p      payload

	next       http.RoundTripper
	cancellers *cancellerPool // of the held exports' attempts
	clock      clockwork.Clock
}

var _ bridge.Export = (*httpExport)(nil)

// Attempt sends the body once and evaluates the answer (retry.Evaluate).
// A delivery's or a refusal's response is kept for the exporter, its body
// unread; a failure's is closed, its cause named (retry.Cause).
func (h *httpExport) Attempt(ctx context.Context, timeout time.Duration) bridge.Result {
	resp, err := h.send(ctx, timeout)
	out, wait := retry.Evaluate(ctx, resp, err, h.clock.Now)
	r := bridge.Result{Outcome: out, Wait: wait, Err: err, Response: resp}
	switch {
	case out.Retryable():
		r.Cause, r.Response = describe(resp, err, out), nil
	case out == retry.Rejected && resp != nil:
		r.Cause = retry.Cause(resp, nil)
	}
	return r
}

// send sends the body once, bounded by timeout. The response body stays
// readable until closed.
func (h *httpExport) send(ctx context.Context, timeout time.Duration) (*http.Response, error) {
	body, err := h.p.body()
	if err != nil {
		return nil, fmt.Errorf("otlpretry: replay request body: %w", err)
	}
	a := h.cancellers.newAttempt(ctx, timeout)
	r := h.req.WithContext(a)
	r.Body, r.GetBody = body, h.p.replay
	resp, err := h.next.RoundTrip(r)
	if err != nil {
		a.end()
		return nil, err
	}
	a.body, resp.Body = resp.Body, a
	return resp, nil
}

// Bytes returns the body, reading it the first time.
func (h *httpExport) Bytes() ([]byte, error) { return h.p.bytes() }

// Record describes the export for the spool, which strips what is secret
// from it.
func (h *httpExport) Record(data []byte) *spool.Record {
	return &spool.Record{
		URL:             h.req.URL.String(),
		ContentType:     h.req.Header.Get("Content-Type"),
		ContentEncoding: h.req.Header.Get("Content-Encoding"),
		Signal:          h.signal,
		Header:          h.req.Header,
		Body:            data,
	}
}

// CallerRetryError is err as it is: the OTLP/HTTP exporters' caller sees
// RoundTrip's error.
func (h *httpExport) CallerRetryError(err error) error { return err }

// reset forgets the export, closing the request's own body when no
// attempt took it, so that a pooled exchange keeps nothing of it.
func (h *httpExport) reset() {
	h.p.closeUnsent()
	h.p.reset()
	h.req = nil
}
