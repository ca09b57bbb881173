package daemon

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/agent/internal/render"
)

func TestNewChecksRenderConfig(t *testing.T) {
	dir := t.TempDir()
	rule := func(path string) []render.Rule { return []render.Rule{{Kind: "k", Name: "a", Path: path}} }
	for _, tc := range []struct {
		name    string
		render  RenderConfig
		wantErr string
	}{
		{"none", RenderConfig{}, ""},
		{"a file elsewhere", RenderConfig{Rules: rule("/etc/cairn/a.json"), ReloadCommand: []string{"/bin/true"}}, ""},
		{"reload without rules", RenderConfig{ReloadCommand: []string{"/bin/true"}}, "needs documents"},
		{"bad rule", RenderConfig{Rules: rule("a.json")}, "absolute"},
		{"the data directory", RenderConfig{Rules: rule(dir)}, "inside the data directory"},
		{"the agent's key", RenderConfig{Rules: rule(filepath.Join(dir, "identity", "svid.pem"))}, "inside the data directory"},
		{"the render state", RenderConfig{Rules: rule(filepath.Join(dir, renderStateFile))}, "state file"},
		{"a sibling of the data directory", RenderConfig{Rules: rule(dir + "-rendered/a.json")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Addr: "127.0.0.1:1", Dir: dir, Render: tc.render})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v; want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
