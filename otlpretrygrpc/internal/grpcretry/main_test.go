package grpcretry

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server and connection a test starts ends with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
