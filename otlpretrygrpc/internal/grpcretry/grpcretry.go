// Package grpcretry decides what one OTLP/gRPC call came to, as package
// retry does for OTLP/HTTP: Evaluate, from the call's status, per the
// OTLP specification: OK is Delivered; Unavailable, DeadlineExceeded and
// Cancelled are Unreachable; Aborted, OutOfRange and DataLoss are
// ServerBusy, as is ResourceExhausted when the server sent RetryInfo
// (else Rejected); a RetryInfo delay is the wait, as Retry-After is over
// HTTP; every other code is Rejected. Cause names a failed call's reason,
// WantsCredentials a refusal of the call's credentials.
package grpcretry

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/otlpretry/otlpretry/internal/retry"
)

// Evaluate is retry.Evaluate for an OTLP/gRPC call: err is what the call
// returned (nil on success), callerCtx the context of whoever wants the
// export sent. It follows the OTLP specification's list of
// retryable codes:
//
//   - OK: Delivered.
//   - Unavailable, DeadlineExceeded and Cancelled without RetryInfo:
//     Unreachable, the codes a client sees when the server cannot be
//     reached or does not answer in time.
//   - Aborted, OutOfRange, DataLoss, and Unavailable with RetryInfo:
//     ServerBusy, with RetryInfo's delay as the wait.
//   - ResourceExhausted: ServerBusy with RetryInfo's delay when the server
//     sent RetryInfo (it can recover), else Rejected.
//   - any other code: Rejected.
//   - the caller's own context ended: Canceled.
//
// The wait is non-zero only for ServerBusy and at most retry.MaxRetryAfter.
func Evaluate(callerCtx context.Context, err error) (retry.Outcome, time.Duration) {
	if err == nil {
		return retry.Delivered, 0
	}
	if cerr := callerCtx.Err(); cerr != nil {
		// gRPC turns the end of the call's context into Canceled or
		// DeadlineExceeded, not wrapping the context's error.
		if errors.Is(err, cerr) || isContextCode(err) {
			return retry.Canceled, 0
		}
	}
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return retry.Unreachable, 0
	}
	wait, hasInfo := retryDelay(st)
	switch st.Code() {
	case codes.OK:
		return retry.Delivered, 0
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		if hasInfo {
			return retry.ServerBusy, wait
		}
		return retry.Unreachable, 0
	case codes.Aborted, codes.OutOfRange, codes.DataLoss:
		return retry.ServerBusy, wait
	case codes.ResourceExhausted:
		if hasInfo {
			return retry.ServerBusy, wait
		}
	}
	return retry.Rejected, 0
}

func isContextCode(err error) bool {
	c := grpcstatus.Code(err)
	return c == codes.Canceled || c == codes.DeadlineExceeded
}

// retryDelay reads RetryInfo from a status's details: its delay, at most
// retry.MaxRetryAfter, and whether the server sent one at all.
func retryDelay(st *grpcstatus.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		ri, ok := d.(*errdetails.RetryInfo)
		if !ok {
			continue
		}
		delay := ri.GetRetryDelay()
		if delay == nil || delay.CheckValid() != nil {
			return 0, true
		}
		return min(max(delay.AsDuration(), 0), retry.MaxRetryAfter), true
	}
	return 0, false
}

// WantsCredentials reports an answer that refuses the call's
// credentials rather than the export: Unauthenticated and
// PermissionDenied.
func WantsCredentials(err error) bool {
	c := grpcstatus.Code(err)
	return c == codes.Unauthenticated || c == codes.PermissionDenied
}

// Cause names, in a few words, why a gRPC call did not deliver:
// "connection refused", "name not found", "connection reset", or the code
// and the start of the server's message ("gRPC Unavailable: ..."). It
// returns "" for success.
func Cause(err error) string {
	if err == nil {
		return ""
	}
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return retry.Cause(nil, err)
	}
	msg := st.Message()
	switch {
	case st.Code() == codes.OK:
		return ""
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "no such host"):
		return "name not found"
	case strings.Contains(msg, "connection reset"):
		return "connection reset"
	case strings.Contains(msg, "authentication handshake failed"):
		return "TLS handshake failed: " + clip(msg)
	}
	return "gRPC " + st.Code().String() + ": " + clip(msg)
}

// clip bounds a server's message for a log line.
func clip(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
