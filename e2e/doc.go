// Package e2e holds end-to-end tests that run otlpretry against the real
// OpenTelemetry Collector OTLP receiver, in process, on 127.0.0.1 only.
package e2e
