// Package otlptest is the shared test bench for otlpretry: the pieces that
// unit tests, end-to-end tests and benchmarks need to prove that OTLP/HTTP
// exports survive outages without loss and without silent duplication.
//
// The pieces are deliberately real rather than mocked, because the bugs this
// project guards against live in the gaps between components (connection
// reuse, half-written requests, Retry-After handling, ports that come back):
//
//   - Collector is a genuine OTLP/HTTP receiver that decodes every payload and
//     counts spans, metric data points and log records, so a test can assert
//     exact delivery (and duplicates) instead of "some request arrived". It can
//     be scripted to fail, throttle, stall, or go away and come back on the
//     same port, like a collector being redeployed.
//   - Proxy is a TCP fault injector placed between the exporter and the
//     Collector. It produces the failures a collector cannot produce about
//     itself: refused connects, resets, black holes, latency, and a load
//     balancer answering 503/429 while the backend is gone.
//   - SpanLoad drives the real OpenTelemetry Go SDK at a steady rate and
//     remembers every span ID it produced, so loss is computed as a set
//     difference against what the Collector decoded, not estimated.
//   - TraceBody, MetricsBody and LogsBody build small valid payloads for tests
//     that exercise the transport without the SDK.
//
// Everything listens on 127.0.0.1 only; the helpers refuse any other address
// so a test can never expose a port or send traffic off the machine.
package otlptest
