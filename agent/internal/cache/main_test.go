package cache

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: the cache starts
// none, and Watch must not need one.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
