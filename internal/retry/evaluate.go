package retry

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Outcome is what one attempt to send an export came to.
type Outcome int

const (
	// Delivered: the endpoint accepted the export (2xx).
	Delivered Outcome = iota
	// Rejected: a definite answer not worth retrying (1xx, 3xx, a 4xx
	// other than 408 and 429).
	Rejected
	// ServerBusy: the endpoint answered 408, 429 or 5xx and wants a retry.
	ServerBusy
	// Unreachable: no answer at all (refused, reset, name not found, TLS
	// failure, timeout).
	Unreachable
	// Canceled: the caller gave up; not the endpoint's fault.
	Canceled
)

// Retryable reports whether the export is worth sending again.
func (o Outcome) Retryable() bool { return o == ServerBusy || o == Unreachable }

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Rejected:
		return "rejected"
	case ServerBusy:
		return "server busy"
	case Unreachable:
		return "unreachable"
	case Canceled:
		return "canceled"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MaxRetryAfter bounds the wait Evaluate returns. Callers apply their own,
// usually shorter, bound on top.
const MaxRetryAfter = 24 * time.Hour

// Evaluate is the one place that decides whether an attempt is retried and
// how long the server asked to wait. resp and err are what
// http.RoundTripper.RoundTrip returned; resp is neither read nor closed.
// callerCtx is the context of whoever wants the export sent: its end is
// not the endpoint's fault (Canceled), while the end of a per-attempt
// timeout derived from it is (Unreachable). now, the time, is read only to
// turn a Retry-After given as a date into a wait, so that the common
// answers cost no clock reading. The wait is non-zero only for ServerBusy.
func Evaluate(callerCtx context.Context, resp *http.Response, err error, now func() time.Time) (Outcome, time.Duration) {
	if err != nil || resp == nil {
		if cerr := callerCtx.Err(); cerr != nil && errors.Is(err, cerr) {
			return Canceled, 0
		}
		return Unreachable, 0
	}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return Delivered, 0
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return ServerBusy, retryAfter(resp.Header.Get("Retry-After"), now)
	}
	return Rejected, 0
}

// retryAfter reads a Retry-After value, seconds or an HTTP date, capped at
// MaxRetryAfter; zero when absent, unreadable, not positive or past.
func retryAfter(v string, now func() time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err == nil && secs <= 0:
		return 0
	case err == nil:
		return min(time.Duration(min(secs, int64(MaxRetryAfter/time.Second)))*time.Second, MaxRetryAfter)
	case errors.Is(err, strconv.ErrRange):
		// Digits past int64: a huge wait, or a huge negative one.
		if secs > 0 {
			return MaxRetryAfter
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now()), 0), MaxRetryAfter)
	}
	return 0
}
