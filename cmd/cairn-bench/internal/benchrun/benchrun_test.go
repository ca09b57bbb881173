package benchrun

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlog routes the harness's progress to t.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestHarnessSmallFleet runs every figure with 200 agents and a few
// iterations, against the real control plane binary on SQLite, to prove the
// harness works. It checks only that the run completes and its figures are
// sane; it asserts nothing about how fast anything is.
func TestHarnessSmallFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane and 200 agents")
	}
	bin := filepath.Join(t.TempDir(), "cairn-controlplane")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cairnhq/cairn/cmd/cairn-controlplane").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const n = 200
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{
		N: n, Store: SQLite, ControlPlane: bin,
		Changes: 2, Single: 3, IngestFor: 2 * time.Second, ThroughputFor: 2 * time.Second,
		Storms: []StormConfig{{Name: "raised"}}, Settle: 200 * time.Millisecond, Timeout: 2 * time.Minute,
		WorkDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(tlog{t}, nil)),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var text bytes.Buffer
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + text.String())
	if _, err := json.Marshal(res); err != nil {
		t.Fatal(err)
	}

	if len(res.PerChange) != 2 {
		t.Fatalf("figure 1: %d changes; want 2", len(res.PerChange))
	}
	for k, c := range res.PerChange {
		if c.Received != n || c.AckedMs < c.MaxMs || c.MaxMs <= 0 || c.SentMs <= 0 {
			t.Errorf("figure 1 change %d: %+v; want all %d agents, the last ack recorded after the last apply, the control plane's sends seen", k, c, n)
		}
	}
	if !(0 < res.FanoutP50Ms && res.FanoutP50Ms <= res.FanoutP99Ms && res.FanoutP99Ms <= res.FanoutMaxMs) {
		t.Errorf("figure 1: p50 %v, p99 %v, max %v; want 0 < p50 <= p99 <= max", res.FanoutP50Ms, res.FanoutP99Ms, res.FanoutMaxMs)
	}
	if res.SingleChanges != 3 || res.SingleP50Ms <= 0 {
		t.Errorf("figure 2: %d changes, p50 %v; want 3 changes and a positive p50", res.SingleChanges, res.SingleP50Ms)
	}
	if res.ServerRSSBytes <= res.ServerRSSIdleBytes || res.ServerHeapBytes <= 0 || res.ServerGoroutines < n {
		t.Errorf("figure 3: RSS %d (idle %d), heap %d, %d goroutines; want more RSS with agents, a heap, a goroutine per agent at least",
			res.ServerRSSBytes, res.ServerRSSIdleBytes, res.ServerHeapBytes, res.ServerGoroutines)
	}
	if len(res.Storms) != 1 || res.ReconnectReceived != n || res.ReconnectAllMs <= 0 || res.ReconnectPeakRSSBytes <= 0 {
		t.Errorf("figure 4: %+v; want one storm after which all %d agents applied a change", res.Storms, n)
	}
	// Agents already current resume with no snapshot: the protocol's
	// promise (docs/protocol.md), not a timing.
	if res.SnapshotBytesOnResume != 0 {
		t.Errorf("figure 4: %d snapshot bytes sent to resuming agents; want 0", res.SnapshotBytesOnResume)
	}
	if res.StatusReportsPerSec <= 0 || res.StatusBatchesPerSec <= 0 {
		t.Errorf("figure 5: %v reports/s in %v batches/s; want both positive", res.StatusReportsPerSec, res.StatusBatchesPerSec)
	}
	if res.ChangesWritten <= 0 || res.ChangesPerSec <= 0 {
		t.Errorf("figure 6: %d changes, %v/s; want both positive", res.ChangesWritten, res.ChangesPerSec)
	}
	if res.Machine.CPUs == 0 || res.Machine.FDLimit == 0 || len(res.Phases) < 7 {
		t.Errorf("machine %+v, %d phases; want the machine described and every phase timed", res.Machine, len(res.Phases))
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_heap_alloc_bytes 1.5e+06
cairn_agent_stream_snapshot_bytes_total 0
cairn_admin_rpc_calls_total{code="ok",procedure="/a"} 3
cairn_admin_rpc_calls_total{code="ok",procedure="/b b"} 4
`
	got, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"go_goroutines": 42, "go_memstats_heap_alloc_bytes": 1.5e6, "cairn_admin_rpc_calls_total": 7,
	} {
		if got[name] != want {
			t.Errorf("%s = %v; want %v", name, got[name], want)
		}
	}
	if v, ok := got["cairn_agent_stream_snapshot_bytes_total"]; !ok || v != 0 {
		t.Errorf("snapshot bytes = %v, %v; want 0, present", v, ok)
	}
}

func TestParseFlags(t *testing.T) {
	cfgs, jsonPath, _, err := parseFlags([]string{"-n", "300", "-store", "sqlite,postgres", "-storms", "raised,default,200/400", "-json", "out.json",
		"-work-dir", "/w"}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[0].Store != SQLite || cfgs[1].Store != Postgres || jsonPath != "out.json" {
		t.Fatalf("got %d configs (%+v), json %q; want sqlite and postgres, out.json", len(cfgs), cfgs, jsonPath)
	}
	if cfgs[0].WorkDir == cfgs[1].WorkDir {
		t.Errorf("both runs in work dir %q; want one each", cfgs[0].WorkDir)
	}
	want := []StormConfig{{Name: "raised"}, {Name: "default", Rate: -1}, {Name: "200/400", Rate: 200, Burst: 400}}
	if len(cfgs[1].Storms) != len(want) {
		t.Fatalf("storms %+v; want %+v", cfgs[1].Storms, want)
	}
	for i, s := range cfgs[1].Storms {
		if s != want[i] {
			t.Errorf("storm %d: %+v; want %+v", i, s, want[i])
		}
	}
	if _, _, _, err := parseFlags([]string{"-storms", "fast"}, func(string) string { return "" }, &bytes.Buffer{}); err == nil {
		t.Error("-storms fast: no error; want one")
	}
	if cfgs, _, _, err := parseFlags(nil, func(k string) string {
		if k == "CAIRN_BENCH_N" {
			return "7"
		}
		return ""
	}, &bytes.Buffer{}); err != nil || cfgs[0].N != 7 {
		t.Errorf("CAIRN_BENCH_N=7: N %d, %v; want 7", cfgs[0].N, err)
	}
}
