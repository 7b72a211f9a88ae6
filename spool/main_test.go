package spool

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives the tests, and runs
// every test under umask 022 (on Unix), so that the file modes asserted are
// the spool's own and not an accident of the environment.
func TestMain(m *testing.M) {
	setTestUmask()
	goleak.VerifyTestMain(m)
}
