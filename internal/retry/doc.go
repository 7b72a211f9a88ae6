// Package retry decides what one attempt to send an OTLP export came to:
// whether it is worth trying again, how long the server asked the sender
// to wait, and, for logs and status pages, what the failure was.
//
// The Transport's direct attempts, its background sender and the
// otlpretry command's drain all call Evaluate, so that they retry the same
// answers and obey Retry-After the same way:
//
//   - 2xx: Delivered.
//   - 408, 429 and 5xx: ServerBusy, retryable, with the wait of a
//     Retry-After header given as seconds or as an HTTP date, at most
//     MaxRetryAfter; zero when the header is absent, unreadable, negative
//     or in the past.
//   - any other status (1xx, 3xx, other 4xx): Rejected, never retried.
//   - no answer (refused, reset, name not found, TLS failure, a per-attempt
//     timeout): Unreachable, retryable.
//   - the caller's own context ended: Canceled, not the endpoint's fault.
//
// The gRPC adapter's grpcretry package (module otlpretrygrpc) makes the
// same decision for an OTLP/gRPC call from its status, as an Outcome.
//
// Cause names a failed attempt's reason in a few words ("connection
// refused", "name not found", "TLS handshake failed: ...", "HTTP 503
// Service Unavailable"), and Refusal the reason a refused export is
// quarantined.
package retry
