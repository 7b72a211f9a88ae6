// Package batch drains a destination's stored exports at the link's
// bandwidth rather than at one export per round trip: it merges stored
// exports into bounded requests (Packer), settles a merged request's
// answer onto each export in it (Settle), and adapts how many requests a
// destination has in flight (Window). Each piece is pure: the sender owns
// the spool, the network and the clock, and drives them.
//
// # Packing
//
// Pack takes one destination's claimed records, oldest first, and builds
// requests. Records share a request only when they share URL, allow-listed
// headers, signal, Content-Type and Content-Encoding; within a request
// they keep their order, and requests come in the order of their oldest
// record. A request of one record carries the stored body unchanged.
//
// Protobuf (application/x-protobuf): an Export*ServiceRequest has one
// field, the repeated field 1, so concatenated messages decode as one
// message holding every export's resources: merged bodies are the stored
// bodies back to back, without decoding and without copying (the body is
// sent from the records' own buffers). A body is first checked to be a
// sequence of whole fields (a cheap walk of its top-level tags and
// lengths): a body cut inside a field would swallow the start of the next
// one and change both, so it goes alone and the endpoint judges it.
//
// Compressed bodies (gzip, and deflate as HTTP means it, the zlib format)
// are decompressed, merged and compressed again, at the fastest level. Not
// concatenated gzip members, for two reasons. First, RFC 1952 allows a
// file of several members, but not every decoder reads past the first:
// Go's gzip.Reader and the OpenTelemetry Collector (which uses it) do,
// while, for one, Rust's flate2 GzDecoder "will only decompress the first
// gzip member" (its MultiGzDecoder reads them all); a receiver built that
// way would answer 2xx having read one export of the request, a loss no
// retry can see. Second, receivers bound the decompressed body (the
// Collector's confighttp applies max_request_body_size again after
// decompression), so the bound must be measured on decompressed bytes,
// which means reading them anyway. Decompression reads at most the bound:
// a body that inflates further goes alone, as stored.
//
// JSON (application/json) bodies are merged by decoding only their
// envelope: the document must be an object whose one member is the
// signal's array ("resourceSpans", "resourceMetrics" or "resourceLogs",
// or the snake_case name the protobuf JSON mapping also accepts) or null;
// the elements of the arrays are copied byte for byte into one
// {"resourceSpans":[...]} document. They are not decoded with protojson
// into the generated types and encoded again: OTLP/JSON differs from the
// protobuf JSON mapping (trace and span IDs are hex, not base64), so such
// a round trip would change the IDs. A JSON body of any other shape (an
// unknown member, a duplicate, trailing data) goes alone.
//
// A body with another media type, another Content-Encoding, or an unknown
// signal goes alone, as stored.
//
// The bound (NewPacker; DefaultMaxBytes, 1 MiB) is on a merged payload
// before compression; a record over the bound alone is a request of its
// own. Known receivers' limits: the Collector's OTLP/HTTP receiver takes
// 20 MiB by default (confighttp max_request_body_size, "Default: 20971520
// (20MiB)", applied to the body and again after decompression); its gRPC
// receiver 4 MiB (configgrpc max_recv_msg_size_mib unset leaves gRPC-Go's
// defaultServerMaxReceiveMessageSize, 4 MiB), which is also the limit a
// Collector forwarding a request whole over OTLP/gRPC meets; Coralogix's
// OTLP endpoint takes at most 10 MB and recommends at most 2 MB. 1 MiB is
// below all of them, and the rate it buys is already the link's: at 8 KiB
// an export it carries 128 exports per round trip instead of one. A
// larger bound multiplies memory, not rate: a destination holds up to the
// window's maximum requests in flight, 32 MiB of bodies at 1 MiB.
//
// # Settling
//
// Settle sends a request through a send function and gives every record
// its verdict: Delivered on a 2xx (a partial_success is counted, never
// retried, as the OTLP specification requires); Retry for every record
// not yet answered when an answer is retryable (nothing more is sent);
// on a refusal, the request is split in halves and each half settled the
// same way, so that bisection isolates the exports the endpoint refuses
// while the others are delivered, each half sent once. A 413 is settled
// the same way: a merged request that is too large becomes smaller ones.
// A single record refused alone is quarantined; for a 413 its reason
// starts with "too large for the endpoint: ". That is the only honest
// end: the record is exactly what the exporter sent, it cannot be made
// smaller without rewriting telemetry, and the endpoint has said it will
// never take it. A record's verdict comes only from the answer to a
// request that carried it.
//
// # Window
//
// Window bounds a destination's requests in flight, as TCP's congestion
// control bounds a connection's: it starts at 4 (DefaultInitialWindow) in
// slow start, one more for each success, so it about doubles every round
// trip up to 32 (DefaultMaxWindow); it halves, down to 1, on a 408, 429,
// 5xx, timeout, reset or refused connection, at most once per round trip,
// and from then on grows by one per window's worth of successes (about
// one per round trip). It grows only while at least half of it is in use.
// It never decides when to send: a Retry-After or the lane's backoff is
// waited out first.
//
// What one host sends in its first seconds after its endpoint recovers
// depends on how it failed. After an outage in which the endpoint did
// not answer at all (refused or blackholed connections), the window
// restarts (Restart): 4 requests of at most 1 MiB in the first round
// trip, then 8, 16, and 32, the most it ever has in flight; at 100 ms
// that is 60 requests in the first 400 ms. After an overload (429, 503,
// timeouts), each of which halved the window, it is 1 when the endpoint
// takes a request again, and the host sends 1 request in the first round
// trip, 2 in the second, n in the n-th: n(n+1)/2 in n round trips, 55 in
// the first second at 100 ms. A fleet recovering together therefore
// starts, per host, with a probe and then at most 4 requests after an
// outage, and with one request after an overload, spread by each lane's
// jittered backoff; every 429, 503 or timeout the recovering backend
// answers halves that host's window again.
package batch
