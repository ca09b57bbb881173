package agentapi_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server, store and client connection a test starts must be shut down by
// its cleanups, streams included.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
