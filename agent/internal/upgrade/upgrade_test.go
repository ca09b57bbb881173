package upgrade

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/agent/internal/cache/cachetest"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

const patience = 30 * time.Second

func desired(cluster, version string) *agentv1.Document {
	return &agentv1.Document{ScopeType: "cluster", ScopeId: cluster, Kind: Kind, Name: "product",
		Content: []byte(fmt.Sprintf(`{"version":%q}`, version)), MediaType: "application/json", Structured: true}
}

// hookScript writes a hook that appends "<cluster> <from> <to>" to a log
// file and fails for targets listed in a fail file.
func hookScript(t *testing.T) (argv []string, log, fail string) {
	t.Helper()
	dir := t.TempDir()
	log, fail = filepath.Join(dir, "calls.log"), filepath.Join(dir, "fail")
	script := fmt.Sprintf(`echo "$CAIRN_CLUSTER_ID $CAIRN_CURRENT_VERSION $CAIRN_TARGET_VERSION" >> %s
if [ -f %s ] && grep -qx "$CAIRN_TARGET_VERSION" %s; then echo "cannot reach $CAIRN_TARGET_VERSION"; exit 1; fi`, log, fail, fail)
	return []string{"/bin/sh", "-c", script}, log, fail
}

func calls(log string) []string {
	b, _ := os.ReadFile(log)
	return strings.Fields(strings.ReplaceAll(string(b), "\n", " | "))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func state(u *Upgrader, cluster string) *agentv1.ClusterVersion {
	for _, c := range u.Clusters() {
		if c.ClusterId == cluster {
			return c
		}
	}
	return nil
}

func run(t *testing.T, cfg Config) (*Upgrader, func()) {
	t.Helper()
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	return u, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func TestUpgradesEachClusterOnceAndRemembers(t *testing.T) {
	f := cachetest.New(t)
	argv, log, _ := hookScript(t)
	stateFile := filepath.Join(t.TempDir(), "upgrade.json")
	f.Put(desired("c1", "1.0.0"), desired("c2", "1.0.0"))
	u, stop := run(t, Config{Cache: f.Cache, Hook: argv, StateFile: stateFile})
	waitFor(t, "both clusters at 1.0.0", func() bool {
		return state(u, "c1").GetVersion() == "1.0.0" && state(u, "c2").GetVersion() == "1.0.0"
	})
	f.Put(desired("c1", "1.1.0"))
	waitFor(t, "c1 at 1.1.0", func() bool { return state(u, "c1").GetVersion() == "1.1.0" })
	// An unrelated change runs nothing.
	f.Put(&agentv1.Document{ScopeType: "data_plane", ScopeId: cachetest.DataPlane, Kind: "other", Name: "x", Content: []byte("y"), MediaType: "text/plain"})
	time.Sleep(200 * time.Millisecond)
	stop()
	got := strings.Count(strings.Join(calls(log), " "), "|")
	if got != 3 {
		t.Fatalf("hook calls %v; want 3 (c1 and c2 to 1.0.0, c1 to 1.1.0)", calls(log))
	}
	if c := state(u, "c1"); !c.Healthy || c.DesiredVersion != "1.1.0" {
		t.Fatalf("c1 %v", c)
	}
	// A restart remembers: nothing runs again.
	u2, stop2 := run(t, Config{Cache: f.Cache, Hook: argv, StateFile: stateFile})
	time.Sleep(200 * time.Millisecond)
	stop2()
	if n := strings.Count(strings.Join(calls(log), " "), "|"); n != 3 {
		t.Fatalf("after a restart the hook ran again: %v", calls(log))
	}
	if state(u2, "c2").GetVersion() != "1.0.0" {
		t.Fatalf("restart lost c2's version: %v", u2.Clusters())
	}
}

func TestFailedUpgradeIsReportedAndRetried(t *testing.T) {
	f := cachetest.New(t)
	argv, log, fail := hookScript(t)
	if err := os.WriteFile(fail, []byte("2.0.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.Put(desired("c1", "2.0.0"))
	u, stop := run(t, Config{Cache: f.Cache, Hook: argv, StateFile: filepath.Join(t.TempDir(), "upgrade.json"), Retry: 100 * time.Millisecond})
	defer stop()
	waitFor(t, "a failure reported", func() bool {
		c := state(u, "c1")
		return c != nil && !c.Healthy && strings.Contains(c.Detail, "cannot reach 2.0.0")
	})
	if v := state(u, "c1").GetVersion(); v != "" {
		t.Fatalf("failed cluster reports version %q; want none yet", v)
	}
	// It is retried after Retry; once the hook can, it succeeds.
	os.Remove(fail)
	waitFor(t, "the retry succeeding", func() bool { c := state(u, "c1"); return c.GetHealthy() && c.GetVersion() == "2.0.0" })
	if n := strings.Count(strings.Join(calls(log), " "), "|"); n < 2 {
		t.Fatalf("hook calls %v; want a retry", calls(log))
	}
}

func TestIgnoresUnusableDocuments(t *testing.T) {
	f := cachetest.New(t)
	argv, log, _ := hookScript(t)
	bad := desired("c1", "x")
	bad.Content = []byte(`{"version":"1.0.0; rm -rf /"}`)
	dp := desired("c2", "1.0.0")
	dp.ScopeType, dp.ScopeId = "data_plane", cachetest.DataPlane
	f.Put(bad, dp)
	u, stop := run(t, Config{Cache: f.Cache, Hook: argv, StateFile: filepath.Join(t.TempDir(), "upgrade.json")})
	time.Sleep(300 * time.Millisecond)
	stop()
	if len(calls(log)) != 0 || len(u.Clusters()) != 0 {
		t.Fatalf("ran the hook for unusable documents: %v %v", calls(log), u.Clusters())
	}
}

func TestNewValidates(t *testing.T) {
	f := cachetest.New(t)
	for _, cfg := range []Config{{Hook: []string{"x"}, StateFile: "s"}, {Cache: f.Cache, StateFile: "s"}, {Cache: f.Cache, Hook: []string{"x"}}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestOnChange: the agent's status reports Clusters, and OnChange tells
// it when they changed: after each run of the hook, with the outcome
// already in Clusters.
func TestOnChange(t *testing.T) {
	f := cachetest.New(t)
	argv, _, _ := hookScript(t)
	f.Put(desired("c1", "1.0.0"))
	changed := make(chan struct{}, 10)
	u, stop := run(t, Config{Cache: f.Cache, Hook: argv, StateFile: filepath.Join(t.TempDir(), "upgrade.json"),
		OnChange: func() { changed <- struct{}{} }})
	defer stop()
	select {
	case <-changed:
		// The only run: were OnChange called before its outcome was in
		// Clusters, this could see no version.
		if v := state(u, "c1").GetVersion(); v != "1.0.0" {
			t.Fatalf("after OnChange c1 reports version %q; want 1.0.0 (the run's outcome)", v)
		}
	case <-time.After(patience):
		t.Fatal("OnChange not called after the hook ran")
	}
}
