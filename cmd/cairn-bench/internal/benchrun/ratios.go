package benchrun

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// Goals of the benchmark issue for figures 1, 3 and 4.
const (
	goalRatio         = 1.0      // Cairn/peer on fan-out p99 and memory per client
	goalBytesPerAgent = 40 << 10 // control-plane memory per agent
	goalSnapshotBytes = int64(0) // snapshot bytes to agents already current on resume
	ratiosUsage       = "usage: cairn-bench ratios CAIRN.json PEERS.json"
	ratiosPeerNote    = "the peers neither sign nor persist acks: etcd and NATS hand watchers unsigned values and store no per-watcher acknowledgement, where Cairn signs every delta, each agent verifies it, and the control plane persists every agent's ack"
	ratiosWorkNote    = "the +work peers' watchers verify an Ed25519 signature and write the value to their own file (fsynced, renamed into place; meant as no more work than the agent's bbolt commit) before a value counts as received, but acknowledge nothing and the server stores no acks; they have no figure 4 (the plain peer's is the same server)"
)

// peerResult is the part of the peer benchmark's result
// (bench/internal/scenario.Result) the ratios divide by, read from its
// JSON: this module must not import bench/, which links etcd and NATS.
type peerResult struct {
	System                string  `json:"system"`
	N                     int     `json:"n"`
	TLS                   bool    `json:"tls"`
	Work                  bool    `json:"work"`
	FanoutP99Ms           float64 `json:"fanout_p99_ms"`
	BytesPerWatcher       float64 `json:"bytes_per_watcher"`
	HeapBytesPerWatcher   float64 `json:"heap_bytes_per_watcher"`
	ReconnectAllMs        float64 `json:"reconnect_all_ms"`
	ReconnectPeakRSSBytes int64   `json:"reconnect_peak_rss_bytes"`
	ReconnectReceived     int     `json:"reconnect_received"`
}

// Ratios is `cairn-bench ratios CAIRN.json PEERS.json`: it reads the JSON
// of a cairn-bench run (-json) and of a peerbench run (bench/, -json) and
// prints Cairn/peer ratios for figures 1, 3 and 4 against the issue's
// goals.
func Ratios(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		fmt.Fprintln(stderr, ratiosUsage)
		return 2
	}
	var cairn []*Result
	var peers []peerResult
	if err := errors.Join(readJSON(args[0], &cairn), readJSON(args[1], &peers)); err != nil {
		fmt.Fprintln(stderr, "cairn-bench ratios:", err)
		return 1
	}
	if err := WriteRatios(stdout, cairn, peers); err != nil {
		fmt.Fprintln(stderr, "cairn-bench ratios:", err)
		return 1
	}
	return 0
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read results: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read results %s: %w", path, err)
	}
	return nil
}

// WriteRatios prints, for each Cairn result, its figures 1, 3 and 4 next
// to each peer's at the same N and the Cairn/peer ratio (below 1.0 is
// Cairn ahead), and whether the goals are met. Peers at another N are
// left out, and it is an error when none is left.
func WriteRatios(w io.Writer, cairn []*Result, peers []peerResult) error {
	if len(cairn) == 0 || len(peers) == 0 {
		return errors.New("ratios: need at least one Cairn result and one peer result")
	}
	var b strings.Builder
	for _, c := range cairn {
		var same []peerResult
		for _, p := range peers {
			if p.N == c.N {
				same = append(same, p)
			}
		}
		if len(same) == 0 {
			return fmt.Errorf("ratios: no peer result at N=%d (%s)", c.N, c.System)
		}
		fmt.Fprintf(&b, "Cairn/peer ratios, %s at N=%d: each cell is the ratio, then the peer's figure; below 1.0 Cairn is ahead\n", c.System, c.N)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "figure\tcairn")
		for _, p := range same {
			fmt.Fprintf(tw, "\t%s", p.System)
		}
		fmt.Fprintln(tw)
		type row struct {
			name  string
			cairn float64
			peer  func(peerResult) float64
			unit  func(float64) string
		}
		msf := func(v float64) string { return fmt.Sprintf("%.0f ms", v) }
		bytesf := func(v float64) string { return fmt.Sprintf("%.0f B", v) }
		mibf := func(v float64) string { return fmt.Sprintf("%.0f MiB", v/(1<<20)) }
		rows := []row{
			{"1: fan-out p99", c.FanoutP99Ms, func(p peerResult) float64 { return p.FanoutP99Ms }, msf},
			{"3: server RSS per client", c.BytesPerWatcher, func(p peerResult) float64 { return p.BytesPerWatcher }, bytesf},
			{"3: live Go heap per client", c.HeapLiveBytesPerAgent, func(p peerResult) float64 { return p.HeapBytesPerWatcher }, bytesf},
		}
		for _, s := range c.Storms {
			if s.AllMs == 0 {
				continue
			}
			rows = append(rows,
				row{"4: all back after kill (" + s.Name + " admission)", s.AllMs, func(p peerResult) float64 { return p.ReconnectAllMs }, msf},
				row{"4: peak server RSS (" + s.Name + " admission)", float64(s.PeakRSSBytes), func(p peerResult) float64 { return float64(p.ReconnectPeakRSSBytes) }, mibf})
		}
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s", r.name, r.unit(r.cairn))
			for _, p := range same {
				fmt.Fprintf(tw, "\t%s", ratioCell(r.cairn, r.peer(p), r.unit))
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		writeGoals(&b, c, same)
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "note: %s.\n", ratiosPeerNote)
	if slices.ContainsFunc(peers, func(p peerResult) bool { return p.Work }) {
		fmt.Fprintf(&b, "note: %s.\n", ratiosWorkNote)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func ratioCell(cairn, peer float64, unit func(float64) string) string {
	if cairn <= 0 || peer <= 0 {
		return "— (not measured)"
	}
	return fmt.Sprintf("%.2f (%s)", cairn/peer, unit(peer))
}

// writeGoals says, goal by goal, whether c meets it and by how much it
// misses. Fan-out is judged against the peers as they are and, apart,
// against the peers doing an agent's work; memory only against the former
// (the +work peers run the same servers).
func writeGoals(b *strings.Builder, c *Result, peers []peerResult) {
	worst := func(work bool, cairn float64, peer func(peerResult) float64) (float64, string) {
		var r float64
		var name string
		for _, p := range peers {
			if p.Work != work {
				continue
			}
			if v := peer(p); v > 0 && cairn > 0 && cairn/v > r {
				r, name = cairn/v, p.System
			}
		}
		return r, name
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fanout := func(p peerResult) float64 { return p.FanoutP99Ms }
	if r, name := worst(false, c.FanoutP99Ms, fanout); name != "" {
		fmt.Fprintf(b, "goal fan-out p99 ratio ≤ %.1f against every peer as it is (not +work): %s (highest %.2f, against %s)\n", goalRatio, verdict(r <= goalRatio), r, name)
	}
	if r, name := worst(true, c.FanoutP99Ms, fanout); name != "" {
		fmt.Fprintf(b, "fan-out p99 ratio ≤ %.1f against every peer doing an agent's work: %s (highest %.2f, against %s)\n", goalRatio, verdict(r <= goalRatio), r, name)
	}
	if r, name := worst(false, c.BytesPerWatcher, func(p peerResult) float64 { return p.BytesPerWatcher }); name != "" {
		fmt.Fprintf(b, "goal memory (RSS) per client ratio ≤ %.1f against every peer as it is (not +work): %s (highest %.2f, against %s)\n", goalRatio, verdict(r <= goalRatio), r, name)
	}
	if c.BytesPerWatcher > 0 {
		fmt.Fprintf(b, "goal ≤ %d bytes (40 KiB) per agent: RSS %.0f B %s, live heap %.0f B %s\n", goalBytesPerAgent,
			c.BytesPerWatcher, verdict(c.BytesPerWatcher <= goalBytesPerAgent), c.HeapLiveBytesPerAgent, verdict(c.HeapLiveBytesPerAgent <= goalBytesPerAgent))
	}
	if len(c.Storms) > 0 {
		var snap int64
		for _, s := range c.Storms {
			snap += s.SnapshotBytes
		}
		fmt.Fprintf(b, "goal %d snapshot bytes to agents already current on reconnect: %d over %d storm(s), %s\n", goalSnapshotBytes, snap, len(c.Storms), verdict(snap == goalSnapshotBytes))
	}
}
