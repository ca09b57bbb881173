package benchrun

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRatios(t *testing.T) {
	dir := t.TempDir()
	cairn := []*Result{{
		System: "cairn-sqlite", N: 100, FanoutP99Ms: 50, BytesPerWatcher: 30000, HeapLiveBytesPerAgent: 20000,
		Storms: []Storm{{Name: "raised", AllMs: 3000, PeakRSSBytes: 64 << 20}},
	}}
	// The peer benchmark's JSON, as bench/internal/scenario.Result writes
	// it; the peer at another N is left out.
	peers := `[{"system":"etcd","n":100,"fanout_p99_ms":100,"bytes_per_watcher":60000,"heap_bytes_per_watcher":80000,"reconnect_all_ms":1500,"reconnect_peak_rss_bytes":33554432},
	{"system":"etcd-tls+work","work":true,"n":100,"fanout_p99_ms":40,"bytes_per_watcher":20000},
	{"system":"nats","n":1000,"fanout_p99_ms":1}]`
	cairnPath, peersPath := filepath.Join(dir, "cairn.json"), filepath.Join(dir, "peers.json")
	b, err := json.Marshal(cairn)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cairnPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(peersPath, []byte(peers), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := Ratios([]string{cairnPath, peersPath}, &out, &errOut); code != 0 {
		t.Fatalf("Ratios: exit %d: %s", code, errOut.String())
	}
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		"0.50 (100 ms)",  // figure 1
		"0.50 (60000 B)", // RSS per client
		"0.25 (80000 B)", // live heap per client
		"2.00 (1500 ms)", // reconnect
		"2.00 (32 MiB)",  // peak RSS
		"fan-out p99 ratio ≤ 1.0 against every peer as it is (not +work): met (highest 0.50, against etcd)",
		"fan-out p99 ratio ≤ 1.0 against every peer doing an agent's work: MISSED (highest 1.25, against etcd-tls+work)",
		"memory (RSS) per client ratio ≤ 1.0 against every peer as it is (not +work): met (highest 0.50, against etcd)", // not the +work peer's 1.50
		"1.25 (40 ms)", // figure 1 against the +work peer
		"the +work peers' watchers verify an Ed25519 signature",
		"RSS 30000 B met",
		"0 snapshot bytes to agents already current on reconnect: 0 over 1 storm(s), met",
		"neither sign nor persist acks",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ratios output lacks %q", want)
		}
	}
	if strings.Contains(got, "nats") {
		t.Errorf("ratios output has the peer at another N:\n%s", got)
	}

	if code := Ratios([]string{cairnPath}, &out, &errOut); code != 2 {
		t.Errorf("one file: exit %d; want 2", code)
	}
	cairn[0].N = 5
	if err := WriteRatios(&out, cairn, []peerResult{{System: "etcd", N: 100}}); err == nil {
		t.Error("no peer at the same N: no error; want one")
	}
}
