// Package bridge is the contract between the otlpretry package and a
// protocol adapter in a module of its own (otlpretrygrpc): the adapter
// hands each export to the Transport's one export flow, and sends stored
// exports for the Transport's background delivery, without a type of the
// adapter's protocol crossing, so that the otlpretry package links no
// code of that protocol.
//
// What each side owns:
//
//   - The otlpretry package owns the flow of an export (the first attempt,
//     the immediate retry, the hold, the hand-off to the spool and the
//     settling of a held export), the spool, the destinations' circuits
//     and lanes, and the judging of a background send (waiting for
//     credentials, quarantine). It sets Of in an init function.
//   - The adapter owns its protocol: making one attempt and evaluating its
//     answer as a retry.Outcome (Export.Attempt), serializing the export
//     (Export.Bytes), the error a caller retries, its connections and the
//     metadata of live calls (Sender, set up by NewSender in an init
//     function), and answering its caller from an Ending.
package bridge

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// Of returns the Core of a *otlpretry.Transport. The otlpretry package
// sets it in an init function; t must be a non-nil *otlpretry.Transport
// (this package cannot name the type without importing its importer).
var Of func(t any) Core

// NewSender makes the sender of one Transport (see Core.Sender). The gRPC
// adapter sets it in an init function, so that in a program that links
// the adapter every Transport can send stored exports to gRPC
// destinations from New on, before any interceptor is made for it.
var NewSender func(Core) Sender

// Core is what a Transport lends an adapter.
type Core interface {
	// Closed tells whether the Transport is shut down: calls then pass
	// through untouched.
	Closed() bool
	// Export takes one export to dest through the Transport's flow (the
	// package documentation of otlpretry) and says how it ended. ctx is
	// the caller's call: its deadline bounds the immediate retry and its
	// end, like the hold's, releases the caller while the attempts go on.
	Export(ctx context.Context, dest Target, signal spool.Signal, x Export) Ending
	// Sender returns the Transport's sender of stored exports to the
	// adapter's destinations, made with newSender when New made none
	// (NewSender was not set yet).
	Sender(newSender func() Sender) Sender
	// Headers returns the headers configured (WithEndpointHeaders) for
	// dest, and whether there are any.
	Headers(dest Target) (http.Header, bool)
}

// Target is a destination: the scheme names the protocol and its security
// (grpc, grpcs), the host is the connection's target and the path the
// Export method. It carries nothing secret.
type Target struct {
	Scheme, Host, Path string
}

// String is the destination's URL, as stored in a spool record.
func (t Target) String() string {
	return (&url.URL{Scheme: t.Scheme, Host: t.Host, Path: t.Path}).String()
}

// Export is one export as its protocol sees it. The flow calls its
// methods from more than one goroutine, one at a time for Attempt.
type Export interface {
	// Attempt makes one attempt at sending the export, bounded by
	// timeout, and evaluates its answer. ctx carries the caller's values;
	// when the export is held it outlives the caller's call and ends only
	// with the Transport. An attempt made after Bytes sends those bytes.
	Attempt(ctx context.Context, timeout time.Duration) Result
	// Bytes returns the export as stored: the serialized
	// Export*ServiceRequest, the same bytes as an OTLP/HTTP protobuf body.
	// It serializes once; an export over spool.MaxBodySize is an error
	// wrapping spool.ErrTooLarge.
	Bytes() ([]byte, error)
	// Record describes the export for the spool, with body data. It holds
	// nothing secret: no metadata, no credentials.
	Record(data []byte) *spool.Record
	// CallerRetryError turns the error of an export the spool could not
	// take into the one the caller retries (WithCallerRetry).
	CallerRetryError(err error) error
}

// Result is what one attempt came to.
type Result struct {
	Outcome retry.Outcome
	// Wait is what the answer asked to wait (Retry-After, RetryInfo), for
	// the background sender's wait when the export is handed off.
	Wait time.Duration
	// Cause names a failure (retry.Cause) or, in few words, a refusal.
	Cause string
	// Err is the attempt's error, for the caller when delivered or
	// refused.
	Err error
	// Response is an OTLP/HTTP attempt's answer when it delivered or was
	// refused; nil for other protocols. A failure's is closed by Attempt.
	Response *http.Response
}

// Reason names why the export could not be delivered directly: a
// retryable failure's cause, else the outcome ("canceled").
func (r Result) Reason() string {
	if r.Outcome.Retryable() && r.Cause != "" {
		return r.Cause
	}
	return r.Outcome.String()
}

// Ending is how the flow of an export ended, for its adapter to answer
// the caller.
type Ending struct {
	// Stored: the export is in the spool; the caller is answered with
	// success and an empty reply.
	Stored bool
	// Err, when not Stored: the spool could not take the export (as
	// CallerRetryError made it with WithCallerRetry).
	Err error
	// Result, when neither Stored nor Err: the delivery or refusal to give
	// the caller as the server gave it.
	Result Result
}

// Sender sends stored exports for the Transport's background delivery,
// over the adapter's connections.
type Sender interface {
	// Send makes one Export call of body, a serialized request, to dest,
	// bounded by timeout, and evaluates its answer. ctx ends with the
	// Transport. ok is false when dest has neither a live call's
	// connection nor configured headers: nothing was sent.
	Send(ctx context.Context, dest Target, body []byte, timeout time.Duration) (s Sent, ok bool)
	// Live tells whether dest has a live call's connection and metadata
	// to send with.
	Live(dest Target) bool
	// Close closes the connections the sender made itself; Shutdown calls
	// it. Sends after Close find no connection of its own.
	Close()
}

// Sent is what a background send came to.
type Sent struct {
	Outcome retry.Outcome
	Wait    time.Duration
	// Cause names a failure, or a refusal (the record is quarantined with
	// it).
	Cause string
	// WantsCredentials: the answer refused the call's credentials rather
	// than the export (Unauthenticated, PermissionDenied; 401, 403).
	WantsCredentials bool
	// Live: the call went with a live call's connection and metadata, not
	// configured ones.
	Live bool
	// Reply is the serialized Export*ServiceResponse of a delivery, for
	// its partial_success; nil otherwise.
	Reply []byte
}
