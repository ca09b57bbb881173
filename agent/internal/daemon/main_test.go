package daemon

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: every daemon
// must stop its renewal and bundle loops and close its connection when
// Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
