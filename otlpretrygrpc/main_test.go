package otlpretrygrpc_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Leaked goroutines are bugs: after Shutdown nothing of a Transport may be
// left running, and every connection a test opens is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
