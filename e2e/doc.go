// Package e2e holds the end-to-end scenarios: otlpretry, as the library and
// as the relay process, against the real OpenTelemetry Collector OTLP
// receiver, in process, behind a fault proxy, on 127.0.0.1 only. Each
// scenario is written once, here; the root module's tests use a fake
// collector and test one behaviour at a time.
//
// TestMain prints a table, one row per scenario (spans produced,
// acknowledged to the SDK, received, lost, duplicated, the largest
// backlog) and a last line "N passed, N failed". For refused connections,
// 503s and a blackhole, the plain OTel exporter runs beside the transport
// in the same run, on its own proxy and receiver; its rows (plain/<kind>,
// result "baseline") report what it lost and are not checked.
//
// Two scenarios cover many destinations in one spool. TestDestinations runs
// one transport under the trace, metric and log exporters, traces to
// receiver A and metrics and logs to receiver B, each with its own token;
// A refuses connections for 60 s (the one long scenario of the default
// suite) while B's exports must all go direct, and it logs B's export-call
// p99, B's delay from produce to receipt and the time A's backlog took to
// drain (go test -v). TestTwoProcesses kills a process that stored exports
// for A with SIGKILL and has a second process on the same folder, exporting
// to B, deliver them to A once A's credentials come from a live request or
// from WithEndpointHeaders. A check in front of each receiver answers 401
// to any request without that receiver's own token, and both scenarios fail
// on any such request.
//
// TestRelayGRPC runs the relay's OTLP/gRPC receiver: the SDK's gRPC
// exporters send traces, metrics and logs with the relay's client token,
// and the relay forwards them over gRPC and, in a second run, over
// OTLP/HTTP, while the upstream refuses connections for 5 s; the check in
// front of the Collector refuses anything without the upstream token.
//
// The long scenarios are opt-in: go test ./e2e/... -args -soak (or
// OTLPRETRY_SOAK=1) adds the 10-minute library soak at 2,000 spans/s with
// its resident-memory check (run it without -race), the 60 s flapping run
// and 20 SIGKILLs of the relay in 60 s. OTLPRETRY_SOAK_DURATION shortens
// the library soak, e.g. to 60s, to try it.
package e2e
