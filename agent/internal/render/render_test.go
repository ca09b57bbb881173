package render

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	rule := Rule{Kind: "cairn.dev/ingress", Name: "main", Path: "/etc/cairn/ingress.json"}
	with := func(f func(*Rule)) Rule {
		r := rule
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // "" for none
	}{
		{"one rule", Config{Rules: []Rule{rule}}, ""},
		{"cluster rule, mode and reload", Config{Rules: []Rule{with(func(r *Rule) { r.ClusterID, r.Mode = "c-1", 0o600 })},
			ReloadCommand: []string{"/bin/true"}, ReloadTimeout: 1}, ""},
		{"one document to two files", Config{Rules: []Rule{rule, with(func(r *Rule) { r.Path = "/etc/other.json" })}}, ""},
		{"no rules", Config{}, "no rules"},
		{"no kind", Config{Rules: []Rule{with(func(r *Rule) { r.Kind = "" })}}, "kind"},
		{"bad kind", Config{Rules: []Rule{with(func(r *Rule) { r.Kind = "a b" })}}, "kind"},
		{"kind ends in a slash", Config{Rules: []Rule{with(func(r *Rule) { r.Kind = "cairn.dev/" })}}, "kind"},
		{"no name", Config{Rules: []Rule{with(func(r *Rule) { r.Name = "" })}}, "name"},
		{"name not a DNS label", Config{Rules: []Rule{with(func(r *Rule) { r.Name = "Main" })}}, "name"},
		{"bad cluster id", Config{Rules: []Rule{with(func(r *Rule) { r.ClusterID = "a/b" })}}, "cluster id"},
		{"relative path", Config{Rules: []Rule{with(func(r *Rule) { r.Path = "etc/x.json" })}}, "absolute, clean"},
		{"unclean path", Config{Rules: []Rule{with(func(r *Rule) { r.Path = "/etc/../x.json" })}}, "absolute, clean"},
		{"directory path", Config{Rules: []Rule{with(func(r *Rule) { r.Path = "/etc/" })}}, "absolute, clean"},
		{"root", Config{Rules: []Rule{with(func(r *Rule) { r.Path = "/" })}}, "absolute, clean"},
		{"setuid mode", Config{Rules: []Rule{with(func(r *Rule) { r.Mode = os.ModeSetuid | 0o755 })}}, "mode"},
		{"state file", Config{StateFile: rule.Path, Rules: []Rule{rule}}, "state file"},
		{"two rules, one path", Config{Rules: []Rule{rule, with(func(r *Rule) { r.Name = "other" })}}, "both write /etc/cairn/ingress.json"},
		{"empty reload command", Config{Rules: []Rule{rule}, ReloadCommand: []string{}}, "reload command"},
		{"reload command without program", Config{Rules: []Rule{rule}, ReloadCommand: []string{"", "x"}}, "reload command"},
		{"negative timeout", Config{Rules: []Rule{rule}, ReloadTimeout: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Check()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v; want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewChecksConfig(t *testing.T) {
	f := newFeed(t)
	rules := []Rule{{Kind: "k", Name: "n", Path: "/tmp/x"}}
	state := filepath.Join(t.TempDir(), "render.json")
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no cache", Config{StateFile: state, Rules: rules}, "required"},
		{"no state file", Config{Cache: f.c, Rules: rules}, "required"},
		{"relative state file", Config{Cache: f.c, StateFile: "render.json", Rules: rules}, "absolute"},
		{"bad rule", Config{Cache: f.c, StateFile: state, Rules: []Rule{{Kind: "k", Name: "n"}}}, "path"},
		{"reload program not found", Config{Cache: f.c, StateFile: state, Rules: rules, ReloadCommand: []string{"no-such-program-cairn"}}, "reload command"},
		{"ok, program from PATH", Config{Cache: f.c, StateFile: state, Rules: rules, ReloadCommand: []string{"sh", "-c", "true"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v; want no error", err)
				}
				if !filepath.IsAbs(r.cfg.ReloadCommand[0]) || r.rules[0].Mode != DefaultMode || r.cfg.ReloadTimeout != DefaultReloadTimeout {
					t.Fatalf("got program %q, mode %v, timeout %v; want a resolved path and the defaults", r.cfg.ReloadCommand[0], r.rules[0].Mode, r.cfg.ReloadTimeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestRendersFromCacheAtStart: with no control plane at all, what the
// cache holds is rendered at start, structured and raw documents alike.
func TestRendersFromCacheAtStart(t *testing.T) {
	f := newFeed(t)
	ingress := dpDoc("cairn.dev/ingress", "main", `{"port":443}`)
	motd := clusterDoc("cairn.dev/motd", "main", "hello\x00world\n")
	rev := f.put(ingress, motd)
	dir := t.TempDir()
	cmd, counter := counterCommand(t)
	r := start(t, f, Config{ReloadCommand: cmd, Rules: []Rule{
		{Kind: "cairn.dev/ingress", Name: "main", Path: filepath.Join(dir, "ingress.json")},
		{Kind: "cairn.dev/motd", Name: "main", ClusterID: testCluster, Path: filepath.Join(dir, "new", "sub", "motd"), Mode: 0o640},
	}})
	st := waitRevision(t, r, rev)
	if got := readFile(t, filepath.Join(dir, "ingress.json")); got != `{"port":443}` {
		t.Errorf("ingress.json holds %q; want the document's JSON", got)
	}
	if got := readFile(t, filepath.Join(dir, "new", "sub", "motd")); got != "hello\x00world\n" {
		t.Errorf("motd holds %q; want the raw bytes", got)
	}
	if got := mode(t, filepath.Join(dir, "ingress.json")); got != 0o644 {
		t.Errorf("ingress.json mode %v; want 0644", got)
	}
	if got := mode(t, filepath.Join(dir, "new", "sub", "motd")); got != 0o640 {
		t.Errorf("motd mode %v; want 0640", got)
	}
	if st.Writes != 2 || st.Reloads != 1 || st.Err != "" || st.ReloadPending || len(st.Missing) != 0 {
		t.Errorf("status %+v; want 2 writes, 1 reload, no error, nothing pending or missing", st)
	}
	if n := runs(t, counter); n != 1 {
		t.Errorf("reload ran %d times; want 1", n)
	}
}

// TestReloadOncePerChange: the reload command runs once for each pass that
// changed files, however many, and not at all when the bytes on disk are
// already right.
func TestReloadOncePerChange(t *testing.T) {
	f := newFeed(t)
	a, b := dpDoc("k", "a", `{"v":1}`), dpDoc("k", "b", `{"v":1}`)
	rev := f.put(a, b)
	dir := t.TempDir()
	cmd, counter := counterCommand(t)
	r := start(t, f, Config{ReloadCommand: cmd, Rules: []Rule{
		{Kind: "k", Name: "a", Path: filepath.Join(dir, "a.json")},
		{Kind: "k", Name: "b", Path: filepath.Join(dir, "b.json")},
	}})
	waitRevision(t, r, rev)
	if n := runs(t, counter); n != 1 {
		t.Fatalf("after the first render the reload ran %d times; want 1", n)
	}

	steps := []struct {
		name       string
		change     func() int64
		wantRuns   int
		wantWrites int64
	}{
		{"a document no rule chooses", func() int64 { return f.put(dpDoc("k", "unrelated", `{}`)) }, 1, 2},
		{"a new version with the same bytes", func() int64 { return f.put(dpDoc("k", "a", `{"v":1}`)) }, 1, 2},
		{"both files in one revision", func() int64 { return f.put(dpDoc("k", "a", `{"v":2}`), dpDoc("k", "b", `{"v":2}`)) }, 2, 4},
		{"one file", func() int64 { return f.put(dpDoc("k", "b", `{"v":3}`)) }, 3, 5},
	}
	for _, s := range steps {
		rev := s.change()
		st := waitRevision(t, r, rev)
		if n := runs(t, counter); n != s.wantRuns {
			t.Errorf("%s: reload ran %d times in all; want %d", s.name, n, s.wantRuns)
		}
		if st.Writes != s.wantWrites || st.Reloads != int64(s.wantRuns) {
			t.Errorf("%s: %d writes, %d reloads; want %d and %d", s.name, st.Writes, st.Reloads, s.wantWrites, s.wantRuns)
		}
	}
	if got := readFile(t, filepath.Join(dir, "a.json")) + readFile(t, filepath.Join(dir, "b.json")); got != `{"v":2}{"v":3}` {
		t.Errorf("files hold %q; want the latest documents", got)
	}

	// A file changed by hand is put back by the next pass that looks.
	if err := os.WriteFile(filepath.Join(dir, "a.json"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, r, f.put(dpDoc("k", "unrelated", `{"x":1}`)))
	if got := readFile(t, filepath.Join(dir, "a.json")); got != `{"v":2}` {
		t.Errorf("a.json holds %q after a pass; want the document back", got)
	}
	if n := runs(t, counter); n != 4 {
		t.Errorf("reload ran %d times; want 4 after repairing a.json", n)
	}
}

// TestReplaceIsAtomic: a reader looping over the file while it is
// replaced sees the old content or the new, never a mix or a part.
func TestReplaceIsAtomic(t *testing.T) {
	f := newFeed(t)
	const size = 256 << 10
	content := func(i int) string { return strings.Repeat(string(rune('a'+i%26)), size) }
	rev := f.put(dpDoc("k", "big", content(0)))
	path := filepath.Join(t.TempDir(), "big")
	r := start(t, f, Config{Rules: []Rule{{Kind: "k", Name: "big", Path: path}}})
	waitRevision(t, r, rev)

	done := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	reads := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(path)
			reads++
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case len(b) != size || bytes.Count(b, b[:1]) != size:
				bad = append(bad, "a file of "+strconv.Itoa(len(b))+" bytes, not all one letter")
			}
		}
	}()
	for i := 1; i <= 30; i++ {
		waitRevision(t, r, f.put(dpDoc("k", "big", content(i))))
	}
	close(done)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d reads saw a missing or partial file, e.g. %s", len(bad), reads, bad[0])
	}
	if got := readFile(t, path); got != content(30) {
		t.Fatalf("the file does not hold the last content")
	}
	t.Logf("%d reads during 30 replacements", reads)
	if st := r.Status(); st.Writes != 31 {
		t.Errorf("%d writes; want 31", st.Writes)
	}
	// No temporary files are left beside it.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries; want only the file", len(entries))
	}
}

// TestDeletedDocument: a document that disappears takes its file with it,
// if the renderer wrote the file and nobody changed it since; otherwise
// the file stays. Both are reported as missing.
func TestDeletedDocument(t *testing.T) {
	f := newFeed(t)
	a, b := dpDoc("k", "a", `{"a":1}`), dpDoc("k", "b", `{"b":1}`)
	rev := f.put(a, b)
	dir := t.TempDir()
	pa, pb, pc := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json"), filepath.Join(dir, "c.json")
	// c.json was there before the agent, and its document never is.
	if err := os.WriteFile(pc, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, counter := counterCommand(t)
	r := start(t, f, Config{ReloadCommand: cmd, Rules: []Rule{
		{Kind: "k", Name: "a", Path: pa}, {Kind: "k", Name: "b", Path: pb}, {Kind: "k", Name: "c", Path: pc},
	}})
	st := waitRevision(t, r, rev)
	if !slices.Equal(st.Missing, []string{"k/c"}) || readFile(t, pc) != "mine" {
		t.Fatalf("missing %v, c.json %q; want k/c missing and c.json untouched", st.Missing, readFile(t, pc))
	}

	st = waitRevision(t, r, f.del(a))
	if exists(pa) {
		t.Error("a.json still exists after its document was deleted")
	}
	if !slices.Equal(st.Missing, []string{"k/a", "k/c"}) || st.Removals != 1 || st.Err != "" {
		t.Errorf("status %+v; want k/a and k/c missing, 1 removal, no error", st)
	}
	if n := runs(t, counter); n != 2 {
		t.Errorf("reload ran %d times; want 2 (the render, the removal)", n)
	}

	// Someone edits b.json; deleting its document leaves their file.
	if err := os.WriteFile(pb, []byte("hand edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	st = waitRevision(t, r, f.del(b))
	if got := readFile(t, pb); got != "hand edited" {
		t.Errorf("b.json holds %q; want the hand edit kept", got)
	}
	if st.Removals != 1 || readFile(t, pc) != "mine" {
		t.Errorf("%d removals, c.json %q; want 1 and untouched", st.Removals, readFile(t, pc))
	}
	if n := runs(t, counter); n != 2 {
		t.Errorf("reload ran %d times; want still 2: nothing changed", n)
	}

	// The document comes back: the file is written again.
	waitRevision(t, r, f.put(dpDoc("k", "a", `{"a":2}`)))
	if got := readFile(t, pa); got != `{"a":2}` {
		t.Errorf("a.json holds %q; want the document back", got)
	}
}

// TestRestart: a renderer restarted while the control plane is away
// renders the cache it finds, removes a file whose document went away
// while it was stopped, and leaves files it did not write.
func TestRestart(t *testing.T) {
	f := newFeed(t)
	a := dpDoc("k", "a", `{"a":1}`)
	f.put(a)
	dir := t.TempDir()
	state := filepath.Join(t.TempDir(), "render.json")
	rules := []Rule{{Kind: "k", Name: "a", Path: filepath.Join(dir, "a.json")}}
	r, stop := startStoppable(t, f, Config{StateFile: state, Rules: rules})
	waitRevision(t, r, 1)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rev := f.del(a)

	other := filepath.Join(dir, "other.json")
	if err := os.WriteFile(other, []byte("not the agent's"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = start(t, f, Config{StateFile: state, Rules: append(rules, Rule{Kind: "k", Name: "other", Path: other})})
	st := waitRevision(t, r, rev)
	if exists(filepath.Join(dir, "a.json")) {
		t.Error("a.json survived the restart; want it removed with its document")
	}
	if got := readFile(t, other); got != "not the agent's" {
		t.Errorf("other.json holds %q; want it untouched", got)
	}
	if st.Removals != 1 {
		t.Errorf("%d removals; want 1", st.Removals)
	}
}

// TestFreshCacheRendersNothing: a cache that has never held config says
// nothing about the files; the renderer waits for the first sync.
func TestFreshCacheRendersNothing(t *testing.T) {
	f := newFeed(t)
	path := filepath.Join(t.TempDir(), "a.json")
	if err := os.WriteFile(path, []byte("from the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, counter := counterCommand(t)
	r := start(t, f, Config{ReloadCommand: cmd, Rules: []Rule{{Kind: "k", Name: "a", Path: path}}})
	st := waitPass(t, r)
	if st.Revision != 0 || st.Writes != 0 || len(st.Missing) != 0 || readFile(t, path) != "from the image" || runs(t, counter) != 0 {
		t.Fatalf("status %+v, file %q, %d reloads; want nothing done", st, readFile(t, path), runs(t, counter))
	}
	waitRevision(t, r, f.put(dpDoc("k", "a", `{"a":1}`)))
	if got := readFile(t, path); got != `{"a":1}` || runs(t, counter) != 1 {
		t.Fatalf("file %q, %d reloads after the first sync; want the document and 1", got, runs(t, counter))
	}
}

// TestReloadFailure: a failing reload is reported and retried until it
// succeeds; a reload still owed when the renderer stops runs at the next
// start, even though the files are already right then.
func TestReloadFailure(t *testing.T) {
	f := newFeed(t)
	rev := f.put(dpDoc("k", "a", `{"a":1}`))
	dir := t.TempDir()
	state := filepath.Join(dir, "render.json")
	rules := []Rule{{Kind: "k", Name: "a", Path: filepath.Join(dir, "a.json")}}
	healthy := filepath.Join(dir, "healthy")
	counter := filepath.Join(dir, "reloads")
	// Fails with status 7 until the file healthy exists.
	cmd := []string{"/bin/sh", "-c", `echo "reloading"; [ -e "$0" ] || { echo "service says no" >&2; exit 7; }; echo run >> "$1"`, healthy, counter}

	r, stop := startStoppable(t, f, Config{StateFile: state, Rules: rules, ReloadCommand: cmd})
	waitFor(t, "a failed reload", func() bool { return r.Status().ReloadFailures >= 1 })
	st := r.Status()
	if st.Revision != rev || !strings.Contains(st.Err, "exit status 7") || !st.ReloadPending || st.Reloads != 0 || st.LastFailure.IsZero() {
		t.Fatalf("status %+v; want revision %d, exit status 7 in Err, the reload pending", st, rev)
	}
	if got := readFile(t, filepath.Join(dir, "a.json")); got != `{"a":1}` {
		t.Fatalf("a.json holds %q; the file is written even if the reload fails", got)
	}
	// Retried with backoff, without a change, until it works.
	waitFor(t, "a second failed reload", func() bool { return r.Status().ReloadFailures >= 2 })
	if err := os.WriteFile(healthy, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a successful retry", func() bool { return r.Status().Reloads == 1 })
	if st := r.Status(); st.Err != "" || st.ReloadPending || runs(t, counter) != 1 {
		t.Fatalf("status %+v, %d runs; want no error, nothing pending, one run", st, runs(t, counter))
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Owed across a restart: fail again, stop, start with a working reload.
	if err := os.Remove(healthy); err != nil {
		t.Fatal(err)
	}
	r, stop = startStoppable(t, f, Config{StateFile: state, Rules: rules, ReloadCommand: cmd})
	waitRevision(t, r, f.put(dpDoc("k", "a", `{"a":2}`)))
	waitFor(t, "a failed reload", func() bool { return r.Status().ReloadFailures >= 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := os.WriteFile(healthy, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = start(t, f, Config{StateFile: state, Rules: rules, ReloadCommand: cmd})
	waitFor(t, "the owed reload", func() bool { return r.Status().Reloads == 1 })
	if st := r.Status(); st.Writes != 0 || st.Err != "" || runs(t, counter) != 2 {
		t.Fatalf("status %+v, %d runs; want no write, no error, the owed reload run", st, runs(t, counter))
	}
}

func TestReloadTimeout(t *testing.T) {
	f := newFeed(t)
	f.put(dpDoc("k", "a", `{}`))
	r := start(t, f, Config{
		Rules:         []Rule{{Kind: "k", Name: "a", Path: filepath.Join(t.TempDir(), "a.json")}},
		ReloadCommand: []string{"/bin/sh", "-c", "sleep 600; true"}, ReloadTimeout: 200 * time.Millisecond,
	})
	waitFor(t, "a timed-out reload", func() bool { return r.Status().ReloadFailures >= 1 })
	if st := r.Status(); !strings.Contains(st.Err, "timed out") || !st.ReloadPending {
		t.Fatalf("status %+v; want a timeout reported and the reload pending", st)
	}
}

// TestWriteFailure: a file that cannot be written is reported and the
// others are still written and reloaded.
func TestWriteFailure(t *testing.T) {
	f := newFeed(t)
	rev := f.put(dpDoc("k", "a", `{}`), dpDoc("k", "b", `{}`), dpDoc("k", "c", `{}`))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, counter := counterCommand(t)
	r := start(t, f, Config{ReloadCommand: cmd, Rules: []Rule{
		{Kind: "k", Name: "a", Path: filepath.Join(dir, "file", "a.json")}, // parent is a file
		{Kind: "k", Name: "b", Path: filepath.Join(dir, "dir.json")},       // a directory
		{Kind: "k", Name: "c", Path: filepath.Join(dir, "c.json")},
	}})
	st := waitRevision(t, r, rev)
	if !strings.Contains(st.Err, "render k/a") || !strings.Contains(st.Err, "not a regular file") || st.WriteFailures < 2 {
		t.Errorf("status %+v; want both failures reported", st)
	}
	if readFile(t, filepath.Join(dir, "c.json")) != `{}` || runs(t, counter) != 1 {
		t.Errorf("c.json not written or not reloaded (%d runs)", runs(t, counter))
	}
	// Retried: the failures keep counting, the reload does not rerun.
	waitFor(t, "a retry", func() bool { return r.Status().WriteFailures >= st.WriteFailures+2 })
	if n := runs(t, counter); n != 1 {
		t.Errorf("reload ran %d times; want 1: retries changed nothing", n)
	}
}

func TestRunEndsWhenCacheCloses(t *testing.T) {
	f := newFeed(t)
	r, err := New(Config{Cache: f.c, StateFile: filepath.Join(t.TempDir(), "s.json"), Logger: testLogger(t),
		Rules: []Rule{{Kind: "k", Name: "a", Path: filepath.Join(t.TempDir(), "a")}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	waitPass(t, r)
	f.c.Close()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "cache closed") {
		t.Fatalf("Run returned %v; want an error saying the cache closed", err)
	}
}

// TestOnPass: the agent's status reports the renderer's Status, and
// OnPass tells it when that may have changed: after each pass, with the
// pass already in Status (were it called before, the last call would find
// Status a pass behind, and nothing would call again).
func TestOnPass(t *testing.T) {
	f := newFeed(t)
	rev := f.put(dpDoc("cairn.dev/ingress", "main", `{"port":443}`))
	passes := make(chan struct{}, 100)
	r := start(t, f, Config{Rules: []Rule{{Kind: "cairn.dev/ingress", Name: "main", Path: filepath.Join(t.TempDir(), "ingress.json")}},
		OnPass: func() { passes <- struct{}{} }})
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-passes:
			if r.Status().Revision == rev {
				return
			}
		case <-deadline:
			t.Fatalf("no OnPass with revision %d in Status (it has %d)", rev, r.Status().Revision)
		}
	}
}
