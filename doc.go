// Package otlpretry makes OpenTelemetry OTLP/HTTP exports survive outages.
//
// A Transport is an http.RoundTripper for the OTel Go exporters
// (otlptracehttp, otlpmetrichttp, otlploghttp, through their WithHTTPClient
// option). Each export it carries takes this path:
//
//  1. Sent to the endpoint. A 2xx answer, or a definite refusal (a 4xx
//     other than 408 and 429), goes back to the exporter unchanged; a
//     refusal is counted and logged, never stored.
//  2. On a retryable failure (any transport error: refused, reset, DNS,
//     timeout; HTTP 408, 429 and 5xx) it waits 1 s, or the server's
//     Retry-After when that is at most 5 s, and tries once more. It skips
//     this retry when the first attempt took over 10 s, when the
//     Retry-After is longer, or when the exporter's deadline would pass
//     first while the exporter still waits (once the export has been
//     stored at the end of its hold, step 3, that deadline no longer
//     matters).
//  3. If that fails too, the export is stored in the spool on disk and the
//     exporter gets a 200 with an empty OTLP response. The exporter never
//     waits longer than 500 ms (WithMaxHold) whatever the endpoint does:
//     when steps 1 and 2 have not ended by then, the export is stored as
//     claimed and the exporter answered at once, while the attempts go on
//     in the background and then delete the stored copy (delivered),
//     quarantine it (refused) or leave it to the sender (failed). At
//     2,000 spans/s the SDK's default queue of 2,048 spans fills in about
//     a second, so a longer hold would drop spans before they reach us.
//  4. While the export's destination is failing (its circuit is open) new
//     exports to it skip steps 1 and 2 and go straight to the spool, in
//     milliseconds, however it fails. As soon as the background sender
//     gets through to it, exports to it go direct again. A destination is
//     a scheme, host and path (each signal's endpoint is its own): each
//     has its own circuit, so exports to a healthy destination go direct
//     while another is down.
//  5. A background goroutine sends the spool, oldest first for each
//     destination, at the link's bandwidth rather than one export per round
//     trip: consecutive stored exports of one destination, signal,
//     Content-Type and Content-Encoding are merged into requests of at most
//     1 MiB before compression (see Merged requests below), and each
//     destination has its own window of requests in flight, which starts
//     at 4 and doubles each round trip of successes up to 32 (slow start),
//     halves on a 408, 429, 5xx, timeout or reset and then grows by one
//     per round trip, and starts again at 4 after an outage in which the
//     destination did not answer at all. Windows are per
//     destination, so a failing one never delays another. After a
//     failure a destination backs off on its own: 1 s, doubling, never
//     more than 128 s, each wait shortened by up to half at random; a
//     Retry-After (seconds or HTTP date, at most 10 min) is obeyed
//     instead, for that destination only. Then one export tests it
//     before the rest follow. When it gave no answer at all (refused or
//     blackholed connections) it is probed every 100 ms with an empty
//     export (one probe at a time; a refused one costs it nothing; a
//     name that does not resolve is probed once a second), so that
//     delivery resumes within a fraction of a second of its return
//     whatever the backoff has grown to; the probe it accepts is the
//     test. When no connection could be made at all (refused, no route,
//     a name that did not resolve), a probe's new connection to an
//     OTLP/HTTP destination is enough: the backlog starts as soon as it
//     is made, a round trip before the probe's answer, and should the
//     server not take exports yet the first sends fail and a wait starts
//     again. A busy server (408,
//     429, 5xx with no Retry-After) is probed only every 10 s during
//     longer waits, and only its acceptance ends the wait; one export
//     then tests it, as a server that takes an empty export may still
//     refuse data. A failure on the direct path (steps 1 to 3) sets the
//     destination's wait as the sender's own do, before the
//     export reaches the spool. An export that gets a definite refusal is
//     moved to the spool's quarantine folder and logged.
//  6. Logs go to a *slog.Logger, each line about a destination naming it
//     (its URL without user information or query string): a warning
//     "Currently retrying N failed export(s) (B bytes)" at most once a
//     minute while exports are spooled, its reason naming the cause
//     (connection refused, name not found, TLS handshake failed and why,
//     timeout, connection reset, or the HTTP status); an error containing
//     "dropping an export" when the spool is full, at most once a minute,
//     with the number dropped; an info message when a destination's
//     backlog has been delivered. Each kind has its own limit.
//
// ForceFlush delivers the spool within its context, cutting every
// destination's wait short; immediate retries waiting out their delay go
// at once rather than hold it. Its error says what is left and, by
// destination, why (backing off and the cause, or waiting for
// credentials). Shutdown stops the sender and leaves what is undelivered
// on disk, where the next process using the same folder finds and sends
// it, as it does for a process that crashed or was killed.
//
// # OTLP/gRPC
//
// The same Transport works under the OTel Go OTLP/gRPC exporters
// (otlptracegrpc, otlpmetricgrpc, otlploggrpc) through the
// github.com/otlpretry/otlpretry/otlpretrygrpc module, whose DialOption
// goes in their WithDialOption option:
//
//	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
//
// Its exports take the path above, with gRPC status codes in place of
// HTTP statuses, as its documentation lists them. gRPC support is a
// module of its own so that a program that exports over HTTP only links
// no gRPC: this package does not import it. Exports an earlier process
// stored for a gRPC destination wait in the spool when the program does
// not link otlpretrygrpc.
//
// # Credentials
//
// Nothing secret is written to disk: the transport stores no request
// header at all, and URLs lose their user information and query string.
// A spooled export is sent with the URL and headers of this process's
// latest live request to its own destination (scheme, host and path), or
// with the headers WithEndpointHeaders configured for that destination,
// and never with neither: without them, it waits in the spool ("waiting for
// credentials" in Stats) until a live request to its destination brings
// its headers, and is sent at once then; it expires at the maximum age
// when one is set. Empty headers configured for a destination say that it
// needs none. Headers of one destination never go to another. A spooled
// export sent without a live request's credentials and refused with 401
// or 403 is not quarantined: it waits, as for a busy server, until a live
// request brings them, and live exports are not held back meanwhile.
//
// # Merged requests
//
// Stored exports are sent merged: protobuf bodies back to back (an
// Export*ServiceRequest is one repeated field, so concatenated messages
// are one message), gzip and deflate bodies decompressed, merged and
// compressed again (not concatenated gzip members, which some decoders
// read only the first of), and OTLP/JSON bodies into one array, their
// elements copied byte for byte. An export whose body cannot be merged,
// or larger than the bound, is sent alone, as stored. The bound, 1 MiB
// before compression, is below what common receivers take (the
// Collector's OTLP/HTTP receiver 20 MiB, its gRPC receiver 4 MiB), and at
// 8 KiB an export already carries 128 exports per round trip; a larger
// bound costs memory (up to 32 requests in flight per destination), not
// rate. Each export in a merged request is settled by the answer to the
// request that carried it, and is deleted from the spool only then:
//
//   - 2xx: every export in it is delivered. A partial_success (rejected
//     spans, data points or log records) is counted in
//     Stats.PartialRejected and logged, and never retried, as the OTLP
//     specification requires.
//   - 408, 429, 5xx or no answer: every export in it goes back to its
//     destination's wait (Retry-After, else the backoff).
//   - 413: the request is split in halves and each sent again; an export
//     is quarantined for its size only when the endpoint refuses it alone.
//   - any other 4xx: the request is split until the exports the endpoint
//     refuses are found; only those are quarantined, the others delivered.
//     A 401 or 403 to a request sent without a live request's credentials
//     is not split: its exports wait for credentials.
//
// Live exports are never held back to be merged: they go as they come.
//
// What one host sends when its endpoint recovers: one request tests it
// first, the accepted probe (an empty export) after an outage in which the
// endpoint did not answer at all (refused or blackholed connections), else
// one export; when no connection could be made, the probe's connection is
// the test and the backlog follows it at once. After such an outage the
// window then starts again at 4 and
// doubles each round trip: 4, 8, 16, then 32 requests of at most 1 MiB,
// never more at once. After an overload (429, 503, timeouts), each
// failure halved the window, so it is 1 when the endpoint takes requests
// again, and it grows by one per round trip: n(n+1)/2 requests in the
// first n round trips. Every 429, 503 or timeout of the recovering backend
// halves it again. A fleet recovering together thus starts with one test
// request per host, spread by each destination's jittered backoff.
//
// # Configuration
//
// Every default can be changed with an Option or an environment variable;
// an Option wins over the environment. One rule holds for every numeric
// setting: zero, or leaving it unset, keeps the default; a negative value
// turns off what can be off (marked "off" below) and is an error from New
// for the rest. A variable that cannot be read is logged as a warning and
// ignored, never an error, as the OTel SDK treats its own variables.
//
//	Option                    Variable                          Default
//	WithDir                   OTLPRETRY_DIR                     <os.UserCacheDir>/otlpretry/<program>
//	WithMaxBytes              OTLPRETRY_MAX_BYTES               536870912 (512 MiB)
//	WithSync                  OTLPRETRY_SYNC                    process (survives kill -9; "durable" also survives power loss)
//	WithFullPolicy            OTLPRETRY_FULL_POLICY             drop-newest (or drop-oldest)
//	WithMaxAge                OTLPRETRY_MAX_AGE                 never expire (off: never expire)
//	WithMaxHold               OTLPRETRY_MAX_HOLD                500ms (off: wait for steps 1 and 2)
//	WithImmediateRetryDelay   OTLPRETRY_IMMEDIATE_RETRY_DELAY   1s (off: no immediate retry)
//	WithMaxImmediateWait      OTLPRETRY_MAX_IMMEDIATE_WAIT      5s
//	WithSlowAttempt           OTLPRETRY_SLOW_ATTEMPT            10s (off: never skip the retry for slowness)
//	WithConcurrency           OTLPRETRY_CONCURRENCY             4 (a destination's first window; it adapts up to 32)
//	WithMaxRequestBytes       OTLPRETRY_MAX_REQUEST_BYTES       1048576 (1 MiB) (off: each stored export sent alone)
//	WithMaxInflightBytes      OTLPRETRY_MAX_INFLIGHT_BYTES      16777216 (16 MiB) of stored exports in flight, all destinations (off: windows only)
//	WithBackoff               OTLPRETRY_BACKOFF_INITIAL, _MAX   1s, 128s
//	WithMaxRetryAfter         OTLPRETRY_MAX_RETRY_AFTER         10m
//	WithProbe                 OTLPRETRY_PROBE_INTERVAL, _TIMEOUT 100ms, 2s (interval off: no probes)
//	WithBusyProbe             OTLPRETRY_BUSY_PROBE_INTERVAL     10s (off: no probes of busy servers)
//	WithLogInterval           OTLPRETRY_LOG_INTERVAL            1m (off: log every message)
//	WithAttemptTimeout        OTEL_EXPORTER_OTLP_TIMEOUT        10000 (ms), per signal
//	                          OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_TIMEOUT
//
// Durations in OTLPRETRY_* variables use Go syntax ("500ms", "2m"). The
// OTLP timeouts keep their meaning from the OTel specification, in
// milliseconds, as a bound on each attempt made through the transport;
// Client returns an http.Client without an overall Timeout for that reason.
//
// # Observability
//
// Stats returns counts and the backlog, and for each destination its
// state (healthy, waiting, waiting for credentials), whether its circuit
// is open, the cause of its last failure and when it is next tried;
// WithMeterProvider publishes the same as OTel metrics
// (otlpretry.spool.records, otlpretry.spool.bytes,
// otlpretry.spool.oldest_age, otlpretry.exports{outcome},
// otlpretry.exports.refused{reason}, otlpretry.exports.dropped{reason},
// otlpretry.circuit.open: 1 while any destination's circuit is open, and
// otlpretry.destination.circuit.open by destination, and
// otlpretry.items.rejected: Stats.PartialRejected, the items endpoints
// reported rejected in a partial_success). Each export is counted once
// where it ends:
// outcome direct (delivered by its own attempts), rejected (refused while
// the exporter waited, returned to it as it came), spooled (answered as
// stored, then delivered or quarantined by the background sender),
// quarantined (answered as stored, then refused: kept in the spool's
// quarantine folder until its bound evicts it, counted as dropped reason
// quarantine_evicted); retried counts failed attempts. An export the spool
// cannot take makes RoundTrip return an error: the OTel OTLP/HTTP
// exporters do not retry that error, so it is dropped (reasons full, disk,
// too_large, closed) and logged at ERROR; with WithCallerRetry, for a
// caller that retries it (the otlpretry relay answers 503 with
// Retry-After), it is refused under the same reasons instead, and logged
// at WARN. Reasons evicted, expired and corrupt are exports lost from the
// spool.
package otlpretry
