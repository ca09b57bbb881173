package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/bench/internal/scenario"
	"github.com/cairnhq/cairn/bench/internal/serverproc"
)

// TestMain lets the test binary serve as the server child: the scenario
// re-executes its own executable with serverproc.ServeArg.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == serverproc.ServeArg {
		os.Exit(serverproc.Child(os.Args[2:], scenario.Starts(), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

const (
	testN       = 200
	testChanges = 2
)

// TestPeerbench proves the harness runs end to end for each system at a
// small N and writes sane JSON. It asserts nothing about timing.
func TestPeerbench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers and 200 watchers per system")
	}
	for _, system := range scenario.Systems {
		t.Run(system, func(t *testing.T) {
			args := []string{"-system", system}
			watchers := ""
			if strings.HasSuffix(system, "+work") {
				watchers = t.TempDir()
				args = append(args, "-watchers-dir", watchers)
			}
			res := runPeerbench(t, args...)
			checkResult(t, res, system, true)
			if watchers != "" {
				if !hasNote(res.Notes, "the watchers' files were in "+watchers) {
					t.Errorf("notes %q; want where the watchers' files were", res.Notes)
				}
				if ents, err := os.ReadDir(watchers); err != nil || len(ents) != 0 {
					t.Errorf("-watchers-dir after the run holds %d entries (%v); want the run's files removed", len(ents), err)
				}
			}
		})
	}
}

// TestPeerbenchExternalNATS runs the NATS system against the server at
// 127.0.0.1:4222 when one answers there.
func TestPeerbenchExternalNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a NATS server")
	}
	const addr = "127.0.0.1:4222"
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Skipf("no NATS server at %s: %v", addr, err)
	}
	c.Close()
	res := runPeerbench(t, "-system", scenario.NATS, "-nats-url", "nats://"+addr)
	checkResult(t, res, scenario.NATS, false)
}

func runPeerbench(t *testing.T, args ...string) scenario.Result {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.json")
	args = append(args,
		"-n", strconv.Itoa(testN),
		"-changes", strconv.Itoa(testChanges),
		"-settle", "200ms",
		"-timeout", "90s",
		"-json", out,
		"-work-dir", t.TempDir(),
		"-q")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("peerbench %v: exit %d; want 0\nstderr:\n%s", args, code, stderr.String())
	}
	t.Logf("peerbench %v:\n%s", args, stdout.String())
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var results []scenario.Result
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatalf("decode %s: %v\n%s", out, err, b)
	}
	if len(results) != 1 {
		t.Fatalf("got %d results; want 1", len(results))
	}
	return results[0]
}

// checkResult checks that every figure is present and consistent with
// itself: counts match, percentiles are ordered, memory is positive.
func checkResult(t *testing.T, r scenario.Result, system string, embedded bool) {
	t.Helper()
	if r.System != system || r.N != testN || r.Changes != testChanges {
		t.Errorf("system, n, changes = %q, %d, %d; want %q, %d, %d", r.System, r.N, r.Changes, system, testN, testChanges)
	}
	if len(r.PerChange) != testChanges {
		t.Fatalf("got %d per-change results; want %d", len(r.PerChange), testChanges)
	}
	for k, c := range r.PerChange {
		if c.Received != testN {
			t.Errorf("change %d received by %d watchers; want %d", k, c.Received, testN)
		}
		if !(c.P50Ms > 0 && c.P50Ms <= c.P99Ms && c.P99Ms <= c.MaxMs) {
			t.Errorf("change %d: p50 %v, p99 %v, max %v; want 0 < p50 ≤ p99 ≤ max", k, c.P50Ms, c.P99Ms, c.MaxMs)
		}
	}
	if !(r.FanoutP50Ms > 0 && r.FanoutP50Ms <= r.FanoutP99Ms && r.FanoutP99Ms <= r.FanoutMaxMs) {
		t.Errorf("fanout p50 %v, p99 %v, max %v; want 0 < p50 ≤ p99 ≤ max", r.FanoutP50Ms, r.FanoutP99Ms, r.FanoutMaxMs)
	}
	work := strings.HasSuffix(system, "+work")
	if fairness := map[bool]string{false: "neither sign nor persist acks", true: "with an agent's work"}[work]; !hasNote(r.Notes, fairness) {
		t.Errorf("notes %q; want the fairness note %q", r.Notes, fairness)
	}
	if work {
		if !r.Work || r.WorkApplied < testN*testChanges || r.WorkFailures != 0 {
			t.Errorf("work %v, applied %d, failures %d; want true, ≥ %d, 0", r.Work, r.WorkApplied, r.WorkFailures, testN*testChanges)
		}
		if r.ReconnectAllMs != 0 || r.ReconnectReceived != 0 {
			t.Errorf("reconnect all %v ms, received %d with an agent's work; want no storm", r.ReconnectAllMs, r.ReconnectReceived)
		}
		if r.ServerRSSBytes <= 0 {
			t.Errorf("server rss %d; want > 0", r.ServerRSSBytes)
		}
		return
	}
	if r.Work || r.WorkApplied != 0 {
		t.Errorf("work %v, applied %d without an agent's work; want false, 0", r.Work, r.WorkApplied)
	}
	if !embedded {
		if r.ReconnectAllMs != 0 {
			t.Errorf("reconnect_all_ms = %v against an external server; want none", r.ReconnectAllMs)
		}
		return
	}
	if r.ServerRSSIdleBytes <= 0 || r.ServerRSSBytes <= 0 || r.ServerHeapBytes <= 0 {
		t.Errorf("server rss idle %d, rss %d, heap %d; want all > 0", r.ServerRSSIdleBytes, r.ServerRSSBytes, r.ServerHeapBytes)
	}
	if r.ReconnectReceived != testN || r.ReconnectAllMs <= 0 || r.ReconnectPeakRSSBytes <= 0 {
		t.Errorf("reconnect received %d, all %v ms, peak rss %d; want %d, > 0, > 0", r.ReconnectReceived, r.ReconnectAllMs, r.ReconnectPeakRSSBytes, testN)
	}
	if r.ServerRestartMs > r.ReconnectAllMs {
		t.Errorf("server restart %v ms after the kill but all watchers had the change at %v ms", r.ServerRestartMs, r.ReconnectAllMs)
	}
}

func hasNote(notes []string, s string) bool {
	for _, n := range notes {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}
