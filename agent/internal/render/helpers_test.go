package render

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/cache/cachetest"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

const (
	testDataPlane = cachetest.DataPlane
	testCluster   = "cl-1"
	// patience bounds every wait: generous, for loaded machines. No test
	// asserts how long anything takes.
	patience = 30 * time.Second
)

// feed plays the config stream's part on a real cache (cachetest), with
// the short names these tests use.
type feed struct {
	*cachetest.Feed
	c *cache.Cache
}

func newFeed(tb testing.TB) *feed {
	tb.Helper()
	f := cachetest.New(tb)
	return &feed{Feed: f, c: f.Cache}
}

func key(d *agentv1.Document) string {
	return configstate.Key(d.ScopeType, d.ScopeId, d.Kind, d.Name)
}

// dpDoc is a structured document of the data plane.
func dpDoc(kind, name, json string) *agentv1.Document {
	return &agentv1.Document{ScopeType: "data_plane", ScopeId: testDataPlane, Kind: kind, Name: name,
		Content: []byte(json), MediaType: "application/json", Structured: true}
}

// clusterDoc is a raw document of testCluster.
func clusterDoc(kind, name, content string) *agentv1.Document {
	return &agentv1.Document{ScopeType: "cluster", ScopeId: testCluster, Kind: kind, Name: name,
		Content: []byte(content), MediaType: "text/plain"}
}

// put applies one delta putting docs and returns the new revision.
func (f *feed) put(docs ...*agentv1.Document) int64 { return f.Put(docs...) }

// del applies one delta deleting docs and returns the new revision.
func (f *feed) del(docs ...*agentv1.Document) int64 { return f.Delete(docs...) }

// testLogger routes the renderer's log to the test.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// start runs a renderer for cfg, filling in the feed's cache, a state
// file in a temporary directory unless set, a test logger and a short
// retry cap, and stops it when the test ends, checking that Run returned
// nil.
func start(tb testing.TB, f *feed, cfg Config) *Renderer {
	tb.Helper()
	r, stop := startStoppable(tb, f, cfg)
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return r
}

// startStoppable is start with the stopping left to the caller: stop ends
// Run and returns its error.
func startStoppable(tb testing.TB, f *feed, cfg Config) (*Renderer, func() error) {
	tb.Helper()
	cfg.Cache = f.c
	if cfg.StateFile == "" {
		cfg.StateFile = filepath.Join(tb.TempDir(), "state", "render.json")
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	if cfg.MaxRetryDelay == 0 {
		cfg.MaxRetryDelay = 100 * time.Millisecond
	}
	r, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	var runErr error
	return r, func() error {
		if !stopped {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(patience):
				tb.Fatal("Run did not return after its context ended")
			}
			stopped = true
		}
		return runErr
	}
}

// waitFor polls cond until it holds, failing the test after patience.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitRevision waits until r has finished a pass at revision rev and
// returns its status then.
func waitRevision(tb testing.TB, r *Renderer, rev int64) Status {
	tb.Helper()
	waitFor(tb, "a pass at revision "+strconv.FormatInt(rev, 10), func() bool { return r.Status().Revision == rev })
	return r.Status()
}

// waitPass waits until r has finished its first pass.
func waitPass(tb testing.TB, r *Renderer) Status {
	tb.Helper()
	waitFor(tb, "the first pass", func() bool { return !r.Status().LastPass.IsZero() })
	return r.Status()
}

// counterCommand is a reload command that appends a line to a file each
// time it runs, and the file.
func counterCommand(tb testing.TB) ([]string, string) {
	tb.Helper()
	counter := filepath.Join(tb.TempDir(), "reloads")
	return []string{"/bin/sh", "-c", `echo run >> "$0"`, counter}, counter
}

// runs is how many times a counterCommand ran.
func runs(tb testing.TB, counter string) int {
	tb.Helper()
	b, err := os.ReadFile(counter)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Count(string(b), "run\n")
}

// readFile returns path's content, failing the test if it cannot.
func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// mode returns path's permission bits.
func mode(tb testing.TB, path string) os.FileMode {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Mode().Perm()
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
