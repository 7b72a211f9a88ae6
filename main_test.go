package otlpretry

import (
	"testing"

	"go.uber.org/goleak"
)

// Leaked goroutines are bugs: after Shutdown nothing of a Transport may be
// left running. Idle keep-alive connections of HTTP clients the tests
// share (the SDK's own exporters, http.DefaultTransport) are not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
