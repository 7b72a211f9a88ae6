package otlpretry

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	resp := func(code int, retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		resp *http.Response
		err  error
		out  outcome
		wait time.Duration
	}{
		{"200", live, resp(200, ""), nil, delivered, 0},
		{"204", live, resp(204, ""), nil, delivered, 0},
		{"400", live, resp(400, ""), nil, rejected, 0},
		{"401", live, resp(401, ""), nil, rejected, 0},
		{"413", live, resp(413, ""), nil, rejected, 0},
		{"302", live, resp(302, ""), nil, rejected, 0},
		{"408", live, resp(408, ""), nil, serverBusy, 0},
		{"429 seconds", live, resp(429, "7"), nil, serverBusy, 7 * time.Second},
		{"503 date", live, resp(503, now.Add(90*time.Second).Format(http.TimeFormat)), nil, serverBusy, 90 * time.Second},
		{"503 past date", live, resp(503, now.Add(-time.Hour).Format(http.TimeFormat)), nil, serverBusy, 0},
		{"500 garbage", live, resp(500, "soon"), nil, serverBusy, 0},
		{"502 negative", live, resp(502, "-5"), nil, serverBusy, 0},
		{"504 huge", live, resp(504, "99999999999"), nil, serverBusy, 24 * time.Hour},
		{"transport error", live, nil, errors.New("connection refused"), unreachable, 0},
		{"attempt timeout", live, nil, context.DeadlineExceeded, unreachable, 0},
		{"caller gave up", gone, nil, context.Canceled, canceled, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, wait := evaluate(tc.ctx, tc.resp, tc.err, now)
			if out != tc.out || wait != tc.wait {
				t.Fatalf("got %v %v, want %v %v", out, wait, tc.out, tc.wait)
			}
		})
	}
}

func TestLogLimiterPerKind(t *testing.T) {
	h := newHarness(t)
	l := logLimiter{clock: h.clock, interval: time.Minute}
	if ok, _ := l.allow(); !ok {
		t.Fatal("first message held back")
	}
	for range 3 {
		if ok, _ := l.allow(); ok {
			t.Fatal("message let through within the interval")
		}
	}
	h.clock.Advance(time.Minute)
	if ok, held := l.allow(); !ok || held != 3 {
		t.Fatalf("after the interval: ok %v held %d, want true 3", ok, held)
	}
}
