package otlpretry

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// outcome is what one attempt to send an export came to.
type outcome int

const (
	delivered   outcome = iota // 2xx
	rejected                   // a definite answer not worth retrying: other 4xx, 3xx, 1xx
	serverBusy                 // 408, 429, 5xx: the server answered but wants a retry
	unreachable                // no answer: refused, reset, DNS, timeout
	canceled                   // the caller gave up; not the endpoint's fault
)

func (o outcome) retryable() bool { return o == serverBusy || o == unreachable }

func (o outcome) String() string {
	return [...]string{"delivered", "rejected", "server busy", "unreachable", "canceled"}[o]
}

// evaluate is the one place that decides whether an attempt is retried and
// how long the server asked us to wait. callerCtx is the exporter's own
// context: its end is not the endpoint's fault, while the end of a
// per-attempt timeout is.
func evaluate(callerCtx context.Context, resp *http.Response, err error, now time.Time) (outcome, time.Duration) {
	if err != nil {
		if callerCtx.Err() != nil && errors.Is(err, callerCtx.Err()) {
			return canceled, 0
		}
		return unreachable, 0
	}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return delivered, 0
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return serverBusy, retryAfter(resp.Header.Get("Retry-After"), now)
	}
	return rejected, 0
}

// retryAfter reads seconds or an HTTP date; zero when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(24*time.Hour/time.Second) {
			return 24 * time.Hour
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
