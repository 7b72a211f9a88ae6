package retry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), now.Add(-time.Second))
	defer cancel2()
	// A per-attempt timeout derived from a live caller's context ended.
	attempt, cancel3 := context.WithTimeout(live, 0)
	defer cancel3()
	<-attempt.Done()
	viaClient := func(err error) error { return &url.Error{Op: "Post", URL: "http://127.0.0.1:4318/v1/traces", Err: err} }

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
		out  Outcome
		wait time.Duration
	}{
		{"100", live, resp(100, ""), nil, Rejected, 0},
		{"101", live, resp(101, ""), nil, Rejected, 0},
		{"200", live, resp(200, ""), nil, Delivered, 0},
		{"202", live, resp(202, ""), nil, Delivered, 0},
		{"204", live, resp(204, ""), nil, Delivered, 0},
		{"299", live, resp(299, ""), nil, Delivered, 0},
		{"200 ignores Retry-After", live, resp(200, "5"), nil, Delivered, 0},
		{"301", live, resp(301, ""), nil, Rejected, 0},
		{"302", live, resp(302, ""), nil, Rejected, 0},
		{"307", live, resp(307, ""), nil, Rejected, 0},
		{"400", live, resp(400, ""), nil, Rejected, 0},
		{"401", live, resp(401, ""), nil, Rejected, 0},
		{"403", live, resp(403, ""), nil, Rejected, 0},
		{"404", live, resp(404, ""), nil, Rejected, 0},
		{"413", live, resp(413, ""), nil, Rejected, 0},
		{"400 ignores Retry-After", live, resp(400, "5"), nil, Rejected, 0},
		{"408", live, resp(408, ""), nil, ServerBusy, 0},
		{"408 seconds", live, resp(408, "2"), nil, ServerBusy, 2 * time.Second},
		{"429", live, resp(429, ""), nil, ServerBusy, 0},
		{"429 seconds", live, resp(429, "7"), nil, ServerBusy, 7 * time.Second},
		{"500", live, resp(500, ""), nil, ServerBusy, 0},
		{"502", live, resp(502, ""), nil, ServerBusy, 0},
		{"503", live, resp(503, ""), nil, ServerBusy, 0},
		{"504", live, resp(504, ""), nil, ServerBusy, 0},
		{"599", live, resp(599, ""), nil, ServerBusy, 0},
		{"503 seconds with spaces", live, resp(503, " 3 "), nil, ServerBusy, 3 * time.Second},
		{"503 date in the future", live, resp(503, now.Add(90*time.Second).Format(http.TimeFormat)), nil, ServerBusy, 90 * time.Second},
		{"503 date in the past", live, resp(503, now.Add(-time.Hour).Format(http.TimeFormat)), nil, ServerBusy, 0},
		{"503 date now", live, resp(503, now.Format(http.TimeFormat)), nil, ServerBusy, 0},
		{"503 date far ahead", live, resp(503, now.AddDate(5, 0, 0).Format(http.TimeFormat)), nil, ServerBusy, MaxRetryAfter},
		{"503 RFC 850 date", live, resp(503, now.Add(time.Minute).Format(time.RFC850)), nil, ServerBusy, time.Minute},
		{"500 garbage", live, resp(500, "soon"), nil, ServerBusy, 0},
		{"500 fraction", live, resp(500, "1.5"), nil, ServerBusy, 0},
		{"502 negative", live, resp(502, "-5"), nil, ServerBusy, 0},
		{"502 zero", live, resp(502, "0"), nil, ServerBusy, 0},
		{"504 huge", live, resp(504, "99999999999"), nil, ServerBusy, MaxRetryAfter},
		{"504 past int64", live, resp(504, "999999999999999999999999"), nil, ServerBusy, MaxRetryAfter},
		{"504 negative past int64", live, resp(504, "-999999999999999999999999"), nil, ServerBusy, 0},
		{"504 a day exactly", live, resp(504, "86400"), nil, ServerBusy, MaxRetryAfter},
		{"connection refused", live, nil, viaClient(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), Unreachable, 0},
		{"name not found", live, nil, viaClient(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "collector.invalid", IsNotFound: true}}), Unreachable, 0},
		{"per-attempt timeout", live, nil, viaClient(attempt.Err()), Unreachable, 0},
		{"per-attempt timeout, caller gave up on something else", gone, nil, viaClient(attempt.Err()), Unreachable, 0},
		{"caller canceled", gone, nil, viaClient(context.Canceled), Canceled, 0},
		{"caller canceled, bare", gone, nil, context.Canceled, Canceled, 0},
		{"caller's deadline", expired, nil, viaClient(fmt.Errorf("read: %w", context.DeadlineExceeded)), Canceled, 0},
		{"caller canceled but the endpoint refused first", gone, nil, viaClient(syscall.ECONNREFUSED), Unreachable, 0},
		{"no response and no error", live, nil, nil, Unreachable, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			out, wait := Evaluate(tc.ctx, tc.resp, tc.err, func() time.Time { reads++; return now })
			if out != tc.out || wait != tc.wait {
				t.Fatalf("got %v %v, want %v %v", out, wait, tc.out, tc.wait)
			}
			// The clock is read for a Retry-After date only.
			if date := tc.resp != nil && strings.Contains(strings.TrimSpace(tc.resp.Header.Get("Retry-After")), " "); reads > 0 != date {
				t.Fatalf("clock read %d times for Retry-After %q", reads, tc.resp.Header.Get("Retry-After"))
			}
		})
	}
}

func TestOutcomeRetryable(t *testing.T) {
	for _, tc := range []struct {
		out  Outcome
		name string
		want bool
	}{
		{Delivered, "delivered", false},
		{Rejected, "rejected", false},
		{ServerBusy, "server busy", true},
		{Unreachable, "unreachable", true},
		{Canceled, "canceled", false},
		{Outcome(99), "outcome(99)", false},
	} {
		if got := tc.out.Retryable(); got != tc.want {
			t.Errorf("%v.Retryable() = %v, want %v", tc.out, got, tc.want)
		}
		if got := tc.out.String(); got != tc.name {
			t.Errorf("String() = %q, want %q", got, tc.name)
		}
	}
}

// A real per-attempt timeout against a server that never answers is the
// endpoint's fault; the same request ended by the caller is not.
func TestEvaluateAttemptTimeoutVersusCaller(t *testing.T) {
	addr := silentListener(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	send := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/traces", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatal("the silent server answered")
		}
		return err
	}

	caller := context.Background()
	attempt, cancel := context.WithTimeout(caller, 50*time.Millisecond)
	defer cancel()
	if out, _ := Evaluate(caller, nil, send(attempt), time.Now); out != Unreachable {
		t.Errorf("per-attempt timeout: %v, want unreachable", out)
	}

	caller, stop := context.WithCancel(context.Background())
	attempt, cancel = context.WithTimeout(caller, time.Minute)
	defer cancel()
	time.AfterFunc(50*time.Millisecond, stop)
	if out, _ := Evaluate(caller, nil, send(attempt), time.Now); out != Canceled {
		t.Errorf("caller canceled: %v, want canceled", out)
	}
}

func TestEvaluateCallerGoneAfterAnswer(t *testing.T) {
	// An answer that came is the endpoint's whatever the caller did since,
	// and so is an error that is not the caller's.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if out, _ := Evaluate(gone, &http.Response{StatusCode: 200, Header: http.Header{}}, nil, time.Now); out != Delivered {
		t.Errorf("a 2xx after the caller gave up: %v, want delivered", out)
	}
	if out, _ := Evaluate(gone, nil, errors.New("boom"), time.Now); out != Unreachable {
		t.Errorf("an unrelated error after the caller gave up: %v, want unreachable", out)
	}
}
