// Package agent holds the agent daemon; this file enforces what the agent
// binary may link.
package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDependencies keeps the store, the rollout engine and all other
// control-plane code out of the agent binary (tailscale's deps_test
// idea): the Go internal/ rule stops imports of controlplane/internal, and
// this stops the rest.
func TestAgentDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cairnhq/cairn/cmd/cairn-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/cairnhq/cairn/controlplane",
		"github.com/jackc/pgx",
		"modernc.org/sqlite",
		"github.com/cockroachdb/",
		"connectrpc.com/",
		"github.com/cairnhq/cairn/certs/ca",
		"github.com/cairnhq/cairn/certs/signer",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned %d packages; the check would pass vacuously", len(deps))
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("cairn-agent links %s (forbidden prefix %s)", dep, f)
			}
		}
	}
}
