package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
)

// Result is one run's figures. The Cairn side of the benchmark prints the
// same shape, so a report can divide Cairn's figure by a peer's field by
// field. Durations are milliseconds, memory is bytes; a field left out was
// not measured (see Notes).
type Result struct {
	System  string `json:"system"`
	N       int    `json:"n"`
	Changes int    `json:"changes"`

	// Figure 1: from the start of a change's write until each watcher has
	// it, over all changes and watchers.
	FanoutP50Ms float64  `json:"fanout_p50_ms"`
	FanoutP99Ms float64  `json:"fanout_p99_ms"`
	FanoutMaxMs float64  `json:"fanout_max_ms"`
	PerChange   []Change `json:"per_change"`

	// Figure 3: the server process's memory with N watchers connected
	// (after figure 1) and before any watcher connected; bytes per watcher
	// is their difference over N. Heap is the live Go heap after a GC.
	ServerRSSBytes      int64   `json:"server_rss_bytes,omitempty"`
	ServerHeapBytes     int64   `json:"server_heap_bytes,omitempty"`
	BytesPerWatcher     float64 `json:"bytes_per_watcher,omitempty"`
	ServerRSSIdleBytes  int64   `json:"server_rss_idle_bytes,omitempty"`
	ServerHeapIdleBytes int64   `json:"server_heap_idle_bytes,omitempty"`
	HeapBytesPerWatcher float64 `json:"heap_bytes_per_watcher,omitempty"`
	ServerGoroutines    int     `json:"server_goroutines,omitempty"`

	// Figure 4: times from the kill of the server. ReconnectAllMs is when
	// the last watcher had the change written after the restart; it is left
	// out when some watcher never got it (ReconnectReceived says how many
	// did). Peak RSS is the restarted server's high-water mark up to then.
	ReconnectAllMs        float64 `json:"reconnect_all_ms,omitempty"`
	ReconnectPeakRSSBytes int64   `json:"reconnect_peak_rss_bytes,omitempty"`
	ServerRestartMs       float64 `json:"server_restart_ms,omitempty"`
	ReconnectWriteMs      float64 `json:"reconnect_write_ms,omitempty"`
	ReconnectP50Ms        float64 `json:"reconnect_p50_ms,omitempty"`
	ReconnectP99Ms        float64 `json:"reconnect_p99_ms,omitempty"`
	ReconnectReceived     int     `json:"reconnect_received,omitempty"`

	// Context.
	ConnectAllMs float64 `json:"connect_all_ms"`
	// ConnectRetries counts watcher setups that failed and were tried again.
	ConnectRetries int64 `json:"connect_retries,omitempty"`
	// WatcherErrors counts errors the watchers' client library reported on
	// its own and recovered from (NATS only).
	WatcherErrors  int64  `json:"watcher_errors,omitempty"`
	ClientRSSBytes int64  `json:"client_rss_bytes,omitempty"`
	Peer           string `json:"peer"`
	TLS            bool   `json:"tls"`
	// Work: the watchers verified and committed each value (the +work
	// systems); WorkApplied counts the values they did, WorkFailures those
	// that failed either step (never counted as received).
	Work         bool     `json:"work,omitempty"`
	WorkApplied  int64    `json:"work_applied,omitempty"`
	WorkFailures int64    `json:"work_failures,omitempty"`
	Server       string   `json:"server"`
	ValueBytes   int      `json:"value_bytes"`
	Machine      Machine  `json:"machine"`
	Notes        []string `json:"notes"`
}

// Change is figure 1 for one change.
type Change struct {
	// WriteMs is how long the write itself took to be acknowledged.
	WriteMs  float64 `json:"write_ms"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	Received int     `json:"received"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs       int    `json:"cpus"`
	CPU        string `json:"cpu,omitempty"`
	MemBytes   int64  `json:"mem_bytes,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	Go         string `json:"go"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	FDLimit    uint64 `json:"fd_limit"`
}

func machine(fdLimit uint64) Machine {
	m := Machine{
		CPUs:       runtime.NumCPU(),
		Go:         runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		FDLimit:    fdLimit,
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		var kb int64
		if _, err := fmt.Sscanf(v, "%d kB", &kb); err == nil {
			m.MemBytes = kb * 1024
		}
	}
	return m
}

// procField returns the value of the first "name: value" line of a /proc
// file, or "".
func procField(path, name string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// addStandardNotes says, next to the numbers, what the peers do not do
// that Cairn does, and what dominates each figure.
func (r *Result) addStandardNotes(sys system, external bool, cfg Config) {
	signing := "peers neither sign nor persist acks: values reach watchers unsigned and no per-watcher acknowledgement is stored, where Cairn signs every delta and persists every agent's ack"
	if sys.work {
		signing = "with an agent's work: the writer signs each value (Ed25519, inside the timing) and each watcher verifies it and writes it to its own file (a temporary file in its own directory, fsynced, renamed over the file) before it counts as received, as a Cairn agent verifies a delta and commits it to its bbolt cache; no watcher checks a chain or state hash or acknowledges to the server, and the server stores no per-watcher acknowledgement, where Cairn's agents ack and the control plane persists every ack; no reconnect storm (its figure is the plain system's)"
	}
	notes := []string{
		signing,
		fmt.Sprintf("server and all %d watchers share this machine's %d cores; receive times include the watchers' own scheduling", cfg.N, r.Machine.CPUs),
	}
	switch sys.server {
	case "etcd":
		notes = append(notes,
			"etcd: each Put is a raft commit with a WAL fsync before watchers see it; one clientv3 client (one gRPC connection) per watcher, one Watch on the key prefix, resumed from its last revision after a reconnect",
			"etcd reconnect: grpc-go's default connection backoff (1 s base, x1.6, 20% jitter) paces the watchers' return")
	case "nats":
		notes = append(notes,
			"nats: each KV Put is a JetStream publish acknowledged once stored in the file store, which syncs to disk every 2 min by default, not per write; one connection per watcher, each KV watch is an ordered push consumer (one server-side consumer per watcher, 5 s idle heartbeats)",
			"nats reconnect: connections return after nats.go's ReconnectWait (2 s), but a KV watch's ordered consumer is recreated only when its activity check (every 2 x the 5 s idle heartbeat, skipped while disconnected) finds it silent: 10-20 s after the kill")
		if !external {
			notes = append(notes, "nats: the embedded server runs with default_max_consumers -1 (unlimited); its default of 1,000 consumers per stream would refuse watcher 1,001")
		}
		if external {
			notes = append(notes, "nats: external server "+cfg.NATSURL+" with its own configuration; not restarted, so no reconnect figure")
		}
	}
	if sys.tls {
		notes = append(notes, "mutual TLS: ECDSA P-256 certificates, one client certificate per watcher, as Cairn agents have")
	} else {
		notes = append(notes, "plain TCP: no TLS, unlike Cairn's mTLS")
	}
	r.Notes = append(notes, r.Notes...)
}

// WriteText prints the result as a table for people.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "peerbench %s (%s, %s), N=%d watchers, %d changes of %d bytes\n", r.System, r.Peer, r.Server, r.N, r.Changes, r.ValueBytes)
	fmt.Fprintf(&b, "machine: %d CPUs (%s), %s, %s, open files %d\n\n", r.Machine.CPUs, r.Machine.CPU, mib(r.Machine.MemBytes), r.Machine.Go, r.Machine.FDLimit)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure 1: change\twrite ms\tp50 ms\tp99 ms\tmax ms\treceived\t")
	for k, c := range r.PerChange {
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%d/%d\t\n", k, c.WriteMs, c.P50Ms, c.P99Ms, c.MaxMs, c.Received, r.N)
	}
	fmt.Fprintf(tw, "all\t\t%.1f\t%.1f\t%.1f\t\t\n", r.FanoutP50Ms, r.FanoutP99Ms, r.FanoutMaxMs)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\nconnect all watchers: %.0f ms; client process RSS %s\n", r.ConnectAllMs, mib(r.ClientRSSBytes))
	if r.Work {
		fmt.Fprintf(&b, "watchers' work: %d values verified and committed, %d failed\n", r.WorkApplied, r.WorkFailures)
	}
	if r.ServerRSSBytes != 0 {
		fmt.Fprintf(&b, "figure 3: server RSS %s idle, %s with %d watchers: %.0f bytes/watcher",
			mib(r.ServerRSSIdleBytes), mib(r.ServerRSSBytes), r.N, r.BytesPerWatcher)
		if r.ServerHeapBytes != 0 {
			fmt.Fprintf(&b, "; live heap %s -> %s: %.0f bytes/watcher; %d goroutines",
				mib(r.ServerHeapIdleBytes), mib(r.ServerHeapBytes), r.HeapBytesPerWatcher, r.ServerGoroutines)
		}
		b.WriteString("\n")
	}
	if r.ServerRestartMs != 0 {
		all := "not all"
		if r.ReconnectAllMs != 0 {
			all = fmt.Sprintf("%.0f ms", r.ReconnectAllMs)
		}
		fmt.Fprintf(&b, "figure 4: after kill: server serving %.0f ms, change written %.0f ms, watchers p50 %.0f ms, p99 %.0f ms, all %s (%d/%d); peak server RSS %s\n",
			r.ServerRestartMs, r.ReconnectWriteMs, r.ReconnectP50Ms, r.ReconnectP99Ms, all, r.ReconnectReceived, r.N, mib(r.ReconnectPeakRSSBytes))
	}
	b.WriteString("notes:\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  - %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
