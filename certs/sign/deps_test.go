package sign_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDeps keeps the package agents link to verify deltas small and free of
// key custody: standard library only, so nothing of the control plane (nor
// certs/signer or certs/ca) can come in.
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/cairnhq/cairn/certs/sign") {
		t.Fatalf("go list -deps: got %v without the package itself; want the real dependency list", deps)
	}
	for _, p := range deps {
		if p != "github.com/cairnhq/cairn/certs/sign" {
			t.Errorf("certs/sign depends on %s; want the standard library only", p)
		}
	}
}
