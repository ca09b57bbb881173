package benchrun

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one run's figures. Where a figure is also one of the peer
// benchmark's (bench/internal/scenario.Result) it has the same JSON name
// and meaning, with an agent as the watcher, so the two can be divided
// field by field. Durations are milliseconds, memory bytes.
type Result struct {
	System  string `json:"system"`
	N       int    `json:"n"`
	Changes int    `json:"changes"`

	// Figure 1: from the start of a change's write until each agent had
	// verified and applied it, over all changes and agents; and until the
	// control plane had recorded every agent's ACK (ListAgents
	// behind_revision empty), the largest over the changes.
	FanoutP50Ms      float64 `json:"fanout_p50_ms"`
	FanoutP99Ms      float64 `json:"fanout_p99_ms"`
	FanoutMaxMs      float64 `json:"fanout_max_ms"`
	FanoutAckedMaxMs float64 `json:"fanout_acked_max_ms"`
	// FanoutSentMaxMs is the control plane's side of figure 1: from the
	// start of the write until its cairn_agent_stream_deltas_sent_total
	// had counted the delta to every agent (read every 25 ms), the
	// largest over the changes. It leaves out the agents' own work.
	FanoutSentMaxMs float64  `json:"fanout_sent_max_ms,omitempty"`
	PerChange       []Change `json:"per_change"`

	// Figure 2: one agent alone in its data plane, write to applied, over
	// SingleChanges sequential changes.
	SingleChanges int     `json:"single_changes"`
	SingleP50Ms   float64 `json:"single_p50_ms"`
	SingleP99Ms   float64 `json:"single_p99_ms"`
	SingleMaxMs   float64 `json:"single_max_ms"`

	// Figure 3: the control plane's memory with N agents connected (after
	// figure 1) and before any agent enrolled; bytes per watcher (agent)
	// is their difference over N. Heap is go_memstats_heap_alloc_bytes
	// from the control plane's /metrics, the lowest of several readings
	// (closest to the live heap after a collection).
	ServerRSSBytes      int64   `json:"server_rss_bytes,omitempty"`
	ServerHeapBytes     int64   `json:"server_heap_bytes,omitempty"`
	BytesPerWatcher     float64 `json:"bytes_per_watcher,omitempty"`
	ServerRSSIdleBytes  int64   `json:"server_rss_idle_bytes,omitempty"`
	ServerHeapIdleBytes int64   `json:"server_heap_idle_bytes,omitempty"`
	HeapBytesPerWatcher float64 `json:"heap_bytes_per_watcher,omitempty"`
	ServerGoroutines    int     `json:"server_goroutines,omitempty"`
	// ServerHeapLiveBytes estimates the heap the control plane's last
	// collection found live, from go_memstats_next_gc_bytes (the goal is
	// live + (live + stacks)·GOGC/100); per agent against the idle
	// reading.
	ServerHeapLiveBytes   int64   `json:"server_heap_live_bytes,omitempty"`
	HeapLiveBytesPerAgent float64 `json:"heap_live_bytes_per_agent,omitempty"`
	// ServerStackBytes is the goroutine stacks' memory
	// (go_memstats_stack_inuse_bytes): part of the RSS, not of the heap.
	ServerStackBytes   int64   `json:"server_stack_bytes,omitempty"`
	StackBytesPerAgent float64 `json:"stack_bytes_per_agent,omitempty"`
	// MemoryRestMs is how long after the last change of figure 1 figure
	// 3 was read: the agents' progress delay (their status reports of the
	// change sent) plus the settle.
	MemoryRestMs float64 `json:"memory_rest_ms,omitempty"`

	// Figure 4: the first storm's figures (see Storms for each), times
	// from the kill of the control plane.
	ReconnectAllMs        float64 `json:"reconnect_all_ms,omitempty"`
	ReconnectPeakRSSBytes int64   `json:"reconnect_peak_rss_bytes,omitempty"`
	ServerRestartMs       float64 `json:"server_restart_ms,omitempty"`
	ReconnectWriteMs      float64 `json:"reconnect_write_ms,omitempty"`
	ReconnectP50Ms        float64 `json:"reconnect_p50_ms,omitempty"`
	ReconnectP99Ms        float64 `json:"reconnect_p99_ms,omitempty"`
	ReconnectReceived     int     `json:"reconnect_received,omitempty"`
	SnapshotBytesOnResume int64   `json:"snapshot_bytes_on_resume"`
	Storms                []Storm `json:"storms,omitempty"`

	// Figure 5: status reports the control plane acknowledged (so
	// stored) per second while every agent made a new status every
	// ReportPoll, and the Report calls (batches) that carried them.
	StatusReportsPerSec float64 `json:"status_reports_per_sec"`
	StatusBatchesPerSec float64 `json:"status_batches_per_sec"`
	StatusOfferedPerSec float64 `json:"status_offered_per_sec"`
	StatusBacklog       int64   `json:"status_backlog"`
	StatusDrainMs       float64 `json:"status_drain_ms"`
	// StatusUndrained is what was still queued when the harness stopped
	// waiting for the backlog to drain; 0 when it drained.
	StatusUndrained int64 `json:"status_undrained,omitempty"`

	// Figure 6: changes written one after another as fast as the admin API
	// takes them for ThroughputS, divided by the time from the first write
	// until every agent had applied the last one; and the write rate
	// alone, and the most revisions the slowest agent was behind.
	ChangesPerSec      float64 `json:"changes_per_sec"`
	ChangesWritten     int     `json:"changes_written"`
	ChangesWritePerSec float64 `json:"changes_write_per_sec"`
	ChangesAllMs       float64 `json:"changes_all_ms"`
	ChangesMaxLag      int64   `json:"changes_max_lag"`

	// Context.
	ConnectAllMs   float64  `json:"connect_all_ms"`
	EnrollAllMs    float64  `json:"enroll_all_ms"`
	ClientRSSBytes int64    `json:"client_rss_bytes,omitempty"`
	AgentProcs     int      `json:"agent_procs"`
	Phases         []Phase  `json:"phases"`
	Peer           string   `json:"peer"`
	TLS            bool     `json:"tls"`
	Server         string   `json:"server"`
	Store          string   `json:"store"`
	ValueBytes     int      `json:"value_bytes"`
	Machine        Machine  `json:"machine"`
	Command        string   `json:"command,omitempty"`
	Notes          []string `json:"notes"`
}

// Change is figure 1 for one change.
type Change struct {
	Revision int64   `json:"revision"`
	WriteMs  float64 `json:"write_ms"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	AckedMs  float64 `json:"acked_ms"`
	// SentMs is when the control plane had sent the delta on every
	// agent's stream (0: not seen).
	SentMs   float64 `json:"sent_ms,omitempty"`
	Received int     `json:"received"`
}

// Storm is figure 4 for one restart of the control plane with the given
// admission limits (0: its defaults).
type Storm struct {
	Name              string  `json:"name"`
	AdmitRate         float64 `json:"admit_rate,omitempty"`
	AdmitBurst        int     `json:"admit_burst,omitempty"`
	ServerRestartMs   float64 `json:"server_restart_ms"`
	WriteMs           float64 `json:"write_ms"`
	P50Ms             float64 `json:"p50_ms"`
	P99Ms             float64 `json:"p99_ms"`
	AllMs             float64 `json:"all_ms,omitempty"`
	AckedMs           float64 `json:"acked_ms,omitempty"`
	Received          int     `json:"received"`
	PeakRSSBytes      int64   `json:"peak_rss_bytes"`
	SnapshotBytes     int64   `json:"snapshot_bytes"`
	StreamsAdmitted   int64   `json:"streams_admitted"`
	StreamsRefused    int64   `json:"streams_refused"`
	ServerCPUSeconds  float64 `json:"server_cpu_seconds"`
	AgentsCPUSeconds  float64 `json:"agents_cpu_seconds"`
	AgentStreamEnds   int64   `json:"agent_stream_ends"`
	ServerHeapBytes   int64   `json:"server_heap_bytes"`
	ServerRSSAfterAll int64   `json:"server_rss_after_bytes"`
}

// Phase is where the time and CPU of one step went: the control plane's
// process and the agents' (worker processes, or this one).
type Phase struct {
	Name             string  `json:"name"`
	Seconds          float64 `json:"seconds"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	AgentsCPUSeconds float64 `json:"agents_cpu_seconds"`
	// OtherCPUSeconds is the rest of the machine's busy CPU time: the
	// database server, the benchmark's own driver when the agents run in
	// worker processes, and anything else running.
	OtherCPUSeconds float64 `json:"other_cpu_seconds"`
	// ServerPeakFDs is the most files the control plane had open
	// (sampled four times a second).
	ServerPeakFDs int `json:"server_peak_fds"`
}

// Machine describes where the run happened (the peer benchmark's shape).
type Machine struct {
	CPUs       int    `json:"cpus"`
	CPU        string `json:"cpu,omitempty"`
	MemBytes   int64  `json:"mem_bytes,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	Go         string `json:"go"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	FDLimit    uint64 `json:"fd_limit"`
	Postgres   string `json:"postgres,omitempty"`
}

func machine(fdLimit uint64) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), FDLimit: fdLimit}
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

type percentiles struct{ p50, p99, max float64 }

// summarize is nearest-rank percentiles, as the peer benchmark computes
// them.
func summarize(d []time.Duration) percentiles {
	if len(d) == 0 {
		return percentiles{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return percentiles{p50: rank(0.50), p99: rank(0.99), max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*10) / 10 }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteText prints the result as tables for people.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "cairn-bench %s: N=%d agents (%s), %d-byte values, agents in %d process(es)\n", r.System, r.N, r.Server, r.ValueBytes, r.AgentProcs)
	fmt.Fprintf(&b, "machine: %d CPUs (%s), %s, %s, kernel %s, open files %d", r.Machine.CPUs, r.Machine.CPU, mib(r.Machine.MemBytes), r.Machine.Go, r.Machine.Kernel, r.Machine.FDLimit)
	if r.Machine.Postgres != "" {
		fmt.Fprintf(&b, ", %s", r.Machine.Postgres)
	}
	fmt.Fprintf(&b, "\nenroll all: %.0f ms; enrolled to all current and recorded: %.0f ms", r.EnrollAllMs, r.ConnectAllMs)
	if r.ClientRSSBytes != 0 {
		fmt.Fprintf(&b, "; agents' processes' RSS %s", mib(r.ClientRSSBytes))
	}
	b.WriteString("\n\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure 1: change\trevision\twrite ms\tall sent ms\tp50 ms\tp99 ms\tmax ms\tall acked ms\tapplied\t")
	for k, c := range r.PerChange {
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d/%d\t\n", k, c.Revision, c.WriteMs, c.SentMs, c.P50Ms, c.P99Ms, c.MaxMs, c.AckedMs, c.Received, r.N)
	}
	fmt.Fprintf(tw, "all\t\t\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\t\n", r.FanoutSentMaxMs, r.FanoutP50Ms, r.FanoutP99Ms, r.FanoutMaxMs, r.FanoutAckedMaxMs)
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.SingleChanges > 0 {
		fmt.Fprintf(&b, "\nfigure 2: one agent, %d sequential changes, write to applied: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
			r.SingleChanges, r.SingleP50Ms, r.SingleP99Ms, r.SingleMaxMs)
	}
	if r.ServerRSSBytes != 0 {
		fmt.Fprintf(&b, "figure 3: control plane RSS %s idle, %s with %d agents: %.0f bytes/agent; Go heap %s -> %s: %.0f bytes/agent (live after GC, estimated: %s, %.0f bytes/agent); goroutine stacks %s: %.0f bytes/agent; %d goroutines; read %.1f s after the last change\n",
			mib(r.ServerRSSIdleBytes), mib(r.ServerRSSBytes), r.N, r.BytesPerWatcher,
			mib(r.ServerHeapIdleBytes), mib(r.ServerHeapBytes), r.HeapBytesPerWatcher,
			mib(r.ServerHeapLiveBytes), r.HeapLiveBytesPerAgent, mib(r.ServerStackBytes), r.StackBytesPerAgent, r.ServerGoroutines,
			r.MemoryRestMs/1000)
	}
	for _, s := range r.Storms {
		all := "not all"
		if s.AllMs != 0 {
			all = fmt.Sprintf("%.0f ms", s.AllMs)
		}
		admit := "the control plane's default admission"
		if s.AdmitRate != 0 {
			admit = fmt.Sprintf("admission %.0f/s, burst %d", s.AdmitRate, s.AdmitBurst)
		}
		fmt.Fprintf(&b, "figure 4 (%s, %s): after kill: serving %.0f ms, change written %.0f ms, agents applied p50 %.0f ms, p99 %.0f ms, all %s (%d/%d), all recorded %.0f ms; snapshot bytes %d; streams admitted %d, refused %d; peak RSS %s\n",
			s.Name, admit, s.ServerRestartMs, s.WriteMs, s.P50Ms, s.P99Ms, all, s.Received, r.N, s.AckedMs, s.SnapshotBytes, s.StreamsAdmitted, s.StreamsRefused, mib(s.PeakRSSBytes))
	}
	if r.StatusReportsPerSec != 0 {
		drained := fmt.Sprintf("drained in %.0f ms", r.StatusDrainMs)
		if r.StatusUndrained > 0 {
			drained = fmt.Sprintf("%d still queued when the harness went on", r.StatusUndrained)
		}
		fmt.Fprintf(&b, "figure 5: status reports stored %.0f/s (in %.0f Report calls/s) with %.0f/s offered; backlog %d at the end, %s\n",
			r.StatusReportsPerSec, r.StatusBatchesPerSec, r.StatusOfferedPerSec, r.StatusBacklog, drained)
	}
	if r.ChangesWritten != 0 {
		fmt.Fprintf(&b, "figure 6: %d changes written at %.1f/s; all applied by every agent after %.0f ms: %.1f changes/s; slowest agent at most %d revisions behind\n",
			r.ChangesWritten, r.ChangesWritePerSec, r.ChangesAllMs, r.ChangesPerSec, r.ChangesMaxLag)
	}
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\nphase\tseconds\tcontrol plane CPU s\tagents CPU s\tother CPU s\tcontrol plane peak open files\t")
	for _, p := range r.Phases {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n", p.Name, p.Seconds, p.ServerCPUSeconds, p.AgentsCPUSeconds, p.OtherCPUSeconds, p.ServerPeakFDs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("notes:\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  - %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
