package otlpretry

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// The warning that exports are being retried names the failure's cause,
// not only its class, so that a typo is not mistaken for an outage.
func TestRetryWarningNamesTheCause(t *testing.T) {
	for _, tc := range []struct {
		name   string
		outage func(h *harness)
		want   string
	}{
		{"server busy", func(h *harness) { h.coll.SetDefault(otlptest.Answer{Status: 503}) }, "HTTP 503 Service Unavailable"},
		{"too many requests", func(h *harness) { h.coll.SetDefault(otlptest.Answer{Status: 429}) }, "HTTP 429 Too Many Requests"},
		{"refused", func(h *harness) { h.coll.Stop() }, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, WithImmediateRetryDelay(-1), WithMaxHold(0))
			tc.outage(h)
			resp, _, err := h.export(2, nil)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			if resp.Header.Get("Otlpretry-Spooled") == "" {
				t.Fatalf("the export was not spooled: status %d", resp.StatusCode)
			}
			if got := h.logs.attr(slog.LevelWarn, "Currently retrying", "reason"); got != tc.want {
				t.Fatalf("reason %q, want %q; logs %q", got, tc.want, h.logs.lines())
			}
		})
	}
}

// attr returns the value of key in the first record at level whose message
// holds substr.
func (l *logCapture) attr(level slog.Level, substr, key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.records {
		if r.Level != level || !strings.Contains(r.Message, substr) {
			continue
		}
		var v string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v = a.Value.String()
				return false
			}
			return true
		})
		return v
	}
	return ""
}
