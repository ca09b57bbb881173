package cli

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/agent/internal/render"
)

func TestParseRenderRule(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    render.Rule
		wantErr bool
	}{
		{in: "cairn.dev/ingress/main=/etc/ingress.json", want: render.Rule{Kind: "cairn.dev/ingress", Name: "main", Path: "/etc/ingress.json"}},
		{in: "k/n=/etc/x:0640", want: render.Rule{Kind: "k", Name: "n", Path: "/etc/x", Mode: 0o640}},
		{in: "k/n=/etc/x:600", want: render.Rule{Kind: "k", Name: "n", Path: "/etc/x", Mode: 0o600}},
		{in: "a/b/c/n@3f2a-77=/srv/n.yaml", want: render.Rule{Kind: "a/b/c", Name: "n", ClusterID: "3f2a-77", Path: "/srv/n.yaml"}},
		{in: "k/n=/etc/a:b", want: render.Rule{Kind: "k", Name: "n", Path: "/etc/a:b"}},
		{in: "k/n=/etc/a:0640:0600", want: render.Rule{Kind: "k", Name: "n", Path: "/etc/a:0640", Mode: 0o600}},
		{in: "k/n=/etc/x:0999", want: render.Rule{Kind: "k", Name: "n", Path: "/etc/x:0999"}}, // not octal: part of the path
		{in: "k/n", wantErr: true},
		{in: "k/n=", wantErr: true},
		{in: "kn=/etc/x", wantErr: true},
		{in: "k/=/etc/x", wantErr: true},
		{in: "/n=/etc/x", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseRenderRule(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v; want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestParseReloadCommand(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "  systemctl reload  nginx ", want: []string{"systemctl", "reload", "nginx"}},
		{in: `["/usr/local/bin/reload me", "--now"]`, want: []string{"/usr/local/bin/reload me", "--now"}},
		{in: `[]`, wantErr: true},
		{in: `[""]`, wantErr: true},
		{in: `["a", 1]`, wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseCommand("--reload-command", tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v; want error %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q; want %q", got, tc.want)
			}
		})
	}
}

// TestRenderFlags: the flags repeat, and the environment sets several
// rules at once.
func TestRenderFlags(t *testing.T) {
	base := []string{"--control-plane", "cp:7444"}
	for _, tc := range []struct {
		name        string
		args        []string
		env         map[string]string
		wantRules   []render.Rule
		wantReload  []string
		wantTimeout time.Duration
		wantErr     string
	}{
		{name: "none", wantTimeout: render.DefaultReloadTimeout},
		{
			name:       "repeated flags",
			args:       []string{"--render", "k/a=/etc/a", "--render", "k/b@c1=/etc/b:0600", "--reload-command", "kill -HUP 1", "--reload-timeout", "5s"},
			wantRules:  []render.Rule{{Kind: "k", Name: "a", Path: "/etc/a"}, {Kind: "k", Name: "b", ClusterID: "c1", Path: "/etc/b", Mode: 0o600}},
			wantReload: []string{"kill", "-HUP", "1"}, wantTimeout: 5 * time.Second,
		},
		{
			name: "environment",
			env: map[string]string{"CAIRN_AGENT_RENDER": "k/a=/etc/a, k/b=/etc/b", "CAIRN_AGENT_RELOAD_COMMAND": `["/bin/sh","-c","true"]`,
				"CAIRN_AGENT_RELOAD_TIMEOUT": "1m"},
			wantRules:  []render.Rule{{Kind: "k", Name: "a", Path: "/etc/a"}, {Kind: "k", Name: "b", Path: "/etc/b"}},
			wantReload: []string{"/bin/sh", "-c", "true"}, wantTimeout: time.Minute,
		},
		{name: "reload without rules", args: []string{"--reload-command", "true"}, wantErr: "needs --render"},
		{name: "bad rule", args: []string{"--render", "nonsense"}, wantErr: "KIND/NAME"},
		{name: "bad rule in the environment", env: map[string]string{"CAIRN_AGENT_RENDER": "k/a=/a,nonsense"}, wantErr: "CAIRN_AGENT_RENDER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFlags(append(base, tc.args...), func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v; want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.render, tc.wantRules) || !slices.Equal(f.reloadCommand, tc.wantReload) || f.reloadTimeout != tc.wantTimeout {
				t.Fatalf("got rules %+v, reload %q, timeout %v; want %+v, %q, %v", f.render, f.reloadCommand, f.reloadTimeout, tc.wantRules, tc.wantReload, tc.wantTimeout)
			}
		})
	}
}

// TestRenderInsideDataDirIsUsageError: the daemon's refusal is a usage
// error (exit status 2), before anything starts.
func TestRenderInsideDataDirIsUsageError(t *testing.T) {
	dir := t.TempDir()
	var stderr strings.Builder
	code := Run(t.Context(), []string{"--control-plane", "127.0.0.1:1", "--data-dir", dir, "--render", "k/a=" + dir + "/a.json"},
		func(string) string { return "" }, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "inside the data directory") {
		t.Fatalf("exit status %d, stderr %q; want 2 and the reason", code, stderr.String())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the data directory holds %d entries; want nothing written", len(entries))
	}
}
