package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnhq/cairn/agent/internal/render"
)

// RenderConfig.check keeps rules out of the data directory "where they
// could replace the agent's key or cache" (documents are written by
// whoever may edit config in the admin API, not by the host's operator).
// It compares path strings only (filepath.Abs, no symlink resolution), so
// the same directory reached through a symlink passes: a data directory
// given as a symlink (/var/lib/cairn-agent -> /srv/cairn-agent, common on
// hosts that move state to another disk) with a rule under the realDir path,
// or a rule under a symlinked alias of the data directory.
func TestRenderCheckSeesThroughSymlinks(t *testing.T) {
	base := t.TempDir()
	realDir := filepath.Join(base, "realDir")
	if err := os.MkdirAll(filepath.Join(realDir, "identity"), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(realDir, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir, path string }{
		{"data dir is a symlink, rule uses the realDir path", link, filepath.Join(realDir, "identity", "svid.pem")},
		{"rule goes through a symlink to the data dir", realDir, filepath.Join(link, "identity", "svid.pem")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Addr: "127.0.0.1:1", Dir: tc.dir, Render: RenderConfig{
				Rules: []render.Rule{{Kind: "k", Name: "a", Path: tc.path}}}})
			if err == nil {
				t.Errorf("data dir %s, rule %s accepted; want it refused as inside the data directory", tc.dir, tc.path)
			}
		})
	}
}
