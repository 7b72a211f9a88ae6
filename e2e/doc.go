// Package e2e holds end-to-end tests that run otlpretry against the real
// OpenTelemetry Collector OTLP receiver, in process, on 127.0.0.1 only.
//
// The long scenarios are opt-in: go test ./e2e/... -args -soak (or
// OTLPRETRY_SOAK=1) adds the 10-minute library soak at 2,000 spans/s with
// its resident-memory check (run it without -race), the 60 s flapping run
// and 20 SIGKILLs of the relay in 60 s. OTLPRETRY_SOAK_DURATION shortens
// the library soak, e.g. to 60s, to try it.
package e2e
