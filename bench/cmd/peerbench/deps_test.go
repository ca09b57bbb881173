package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProductDoesNotLinkPeers keeps the peers out of the product: the root
// module's packages (./... there does not descend into bench/, a module of
// its own) must not depend on etcd, NATS or this module.
func TestProductDoesNotLinkPeers(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.Contains(string(mod), "module github.com/cairnhq/cairn\n") {
		t.Skipf("no Cairn root module at %s", root)
	}
	cmd := exec.Command(goTool, "list", "-e", "-deps", "-f", "{{.ImportPath}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v", root, err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps: got %d packages; want the real dependency list", len(deps))
	}
	for _, p := range deps {
		if strings.HasPrefix(p, "go.etcd.io/etcd/") || strings.HasPrefix(p, "github.com/nats-io/") ||
			strings.HasPrefix(p, "github.com/cairnhq/cairn/bench") {
			t.Errorf("the root module depends on %s", p)
		}
	}
}
