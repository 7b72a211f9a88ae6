package grpcretry

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/otlpretry/otlpretry/internal/retry"
)

func TestEvaluate(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()

	plain := func(c codes.Code) error { return grpcstatus.Error(c, "scripted") }
	withInfo := func(c codes.Code, d time.Duration) error {
		st, err := grpcstatus.New(c, "scripted").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		out  retry.Outcome
		wait time.Duration
	}{
		{"OK", live, nil, retry.Delivered, 0},
		{"OK status", live, grpcstatus.Error(codes.OK, ""), retry.Delivered, 0},
		{"Unavailable", live, plain(codes.Unavailable), retry.Unreachable, 0},
		{"Unavailable with RetryInfo", live, withInfo(codes.Unavailable, 2*time.Second), retry.ServerBusy, 2 * time.Second},
		{"DeadlineExceeded", live, plain(codes.DeadlineExceeded), retry.Unreachable, 0},
		{"retry.Canceled", live, plain(codes.Canceled), retry.Unreachable, 0},
		{"Aborted", live, plain(codes.Aborted), retry.ServerBusy, 0},
		{"Aborted with RetryInfo", live, withInfo(codes.Aborted, time.Second), retry.ServerBusy, time.Second},
		{"OutOfRange", live, plain(codes.OutOfRange), retry.ServerBusy, 0},
		{"DataLoss", live, plain(codes.DataLoss), retry.ServerBusy, 0},
		{"ResourceExhausted without RetryInfo", live, plain(codes.ResourceExhausted), retry.Rejected, 0},
		{"ResourceExhausted with RetryInfo", live, withInfo(codes.ResourceExhausted, 3*time.Second), retry.ServerBusy, 3 * time.Second},
		{"ResourceExhausted with zero RetryInfo", live, withInfo(codes.ResourceExhausted, 0), retry.ServerBusy, 0},
		{"RetryInfo capped", live, withInfo(codes.Aborted, 48*time.Hour), retry.ServerBusy, retry.MaxRetryAfter},
		{"negative RetryInfo", live, withInfo(codes.Aborted, -time.Second), retry.ServerBusy, 0},
		{"InvalidArgument", live, plain(codes.InvalidArgument), retry.Rejected, 0},
		{"InvalidArgument ignores RetryInfo", live, withInfo(codes.InvalidArgument, time.Second), retry.Rejected, 0},
		{"Unauthenticated", live, plain(codes.Unauthenticated), retry.Rejected, 0},
		{"PermissionDenied", live, plain(codes.PermissionDenied), retry.Rejected, 0},
		{"Unimplemented", live, plain(codes.Unimplemented), retry.Rejected, 0},
		{"Internal", live, plain(codes.Internal), retry.Rejected, 0},
		{"Unknown", live, plain(codes.Unknown), retry.Rejected, 0},
		{"not a status", live, errors.New("boom"), retry.Unreachable, 0},
		{"caller gone, retry.Canceled", gone, plain(codes.Canceled), retry.Canceled, 0},
		{"caller gone, DeadlineExceeded", gone, plain(codes.DeadlineExceeded), retry.Canceled, 0},
		{"caller gone, context error", gone, context.Canceled, retry.Canceled, 0},
		{"caller gone, server answer", gone, plain(codes.InvalidArgument), retry.Rejected, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, wait := Evaluate(tc.ctx, tc.err)
			if out != tc.out || wait != tc.wait {
				t.Errorf("Evaluate = %v, %v; want %v, %v", out, wait, tc.out, tc.wait)
			}
		})
	}
}

func TestCause(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"success", nil, ""},
		{"refused", grpcstatus.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), "connection refused"},
		{"name", grpcstatus.Error(codes.Unavailable, `dial tcp: lookup nowhere.invalid: no such host`), "name not found"},
		{"reset", grpcstatus.Error(codes.Unavailable, `read: connection reset by peer`), "connection reset"},
		{"server", grpcstatus.Error(codes.ResourceExhausted, "slow down"), "gRPC ResourceExhausted: slow down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cause(tc.err); got != tc.want {
				t.Errorf("Cause = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWantsCredentials(t *testing.T) {
	for c, want := range map[codes.Code]bool{
		codes.Unauthenticated: true, codes.PermissionDenied: true,
		codes.InvalidArgument: false, codes.Unavailable: false,
	} {
		if got := WantsCredentials(grpcstatus.Error(c, "x")); got != want {
			t.Errorf("%v: %v, want %v", c, got, want)
		}
	}
}
