package certs_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDeps keeps the agent's side of the PKI free of the control plane:
// package certs must not link the CA or anything under controlplane/.
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/spiffe/go-spiffe/v2/spiffeid") {
		t.Fatalf("go list -deps: got %d packages without spiffeid; want the real dependency list", len(deps))
	}
	for _, p := range deps {
		if p == "github.com/cairnhq/cairn/certs/ca" || strings.HasPrefix(p, "github.com/cairnhq/cairn/controlplane") {
			t.Errorf("certs depends on %s", p)
		}
	}
}
