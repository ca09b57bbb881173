// Package benchrun is the Cairn side of the fleet benchmark: it runs
// cairn-controlplane as a child process, on SQLite or on a fresh
// PostgreSQL database, enrolls N simulated agents (agent/loadgen: real
// enrollment, SVIDs, mTLS, signature verification and bbolt caches) in
// this process or in a few worker processes, and measures six figures:
// fan-out latency of one change to all agents (1), one agent's write to
// applied latency (2), the control plane's memory per agent (3), a
// reconnect storm after killing the control plane (4), status reports
// stored per second (5), and sustained changes per second (6). It prints
// the peer benchmark's result shape (bench/) where the figures overlap.
//
// It measures and never asserts on timing; what it could not measure, or
// what looked wrong (the control plane's warnings), goes into the notes.
package benchrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairnhq/cairn/agent/loadgen"
	"github.com/cairnhq/cairn/internal/wait"
)

const stormsStep = "figure 4 reconnect storms"

// Stores a run can use.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// DefaultPostgresURL is the machine's PostgreSQL server, as the README
// sets it up; the benchmark creates a fresh database on it per run.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Groups of agents: the data plane every figure but 2 writes to, and the
// one-agent data plane of figure 2.
const (
	groupFleet  = "fleet"
	groupSingle = "single"
)

// Open files one agent holds: its connection, its cache file and its
// report queue file; fdMargin is what else a process may need.
const (
	fdPerAgent = 3
	fdMargin   = 1024
)

// StormConfig is one reconnect storm's admission limits: a zero Rate means
// Config.AdmitRate and AdmitBurst, a negative one the control plane's own
// defaults.
type StormConfig struct {
	Name  string
	Rate  float64
	Burst int
}

// Config is one run.
type Config struct {
	// N is the number of agents in the fleet's data plane; required. One
	// more agent, alone in a second data plane, is figure 2's.
	N int
	// Store is SQLite or Postgres; required.
	Store string
	// PostgresURL is a server URL whose user may create databases; empty
	// means DefaultPostgresURL.
	PostgresURL string
	// ControlPlane is the cairn-controlplane binary; required.
	ControlPlane string
	// Exe is this program, run as `Exe agents-worker` for worker processes
	// and as `Exe controlplane` for a profiled control plane; empty keeps
	// every agent in this process and allows no ProfileDir.
	Exe string
	// AgentsPerProcess bounds the agents of one process; 0 means as many
	// as the open-file limit allows.
	AgentsPerProcess int
	// EnrollConcurrency bounds enrollments at once per process; 0 means 32.
	EnrollConcurrency int

	// Changes is how many changes figure 1 times, one at a time; 0 skips
	// it. Single is figure 2's sequential changes; 0 skips it.
	Changes int
	Single  int
	// IngestFor is figure 5's measuring window; 0 skips it.
	IngestFor time.Duration
	// ThroughputFor is how long figure 6 writes; 0 skips it.
	ThroughputFor time.Duration
	// Storms are figure 4's restarts, in order; none skips it.
	Storms []StormConfig
	// SkipMemory skips figure 3.
	SkipMemory bool

	// AdmitRate and AdmitBurst are the control plane's stream admission
	// while the fleet connects and outside storms; 0 means N per second
	// and a burst of N+1, so connecting is not paced by admission.
	AdmitRate  float64
	AdmitBurst int
	// Heartbeat, History are the control plane's --heartbeat-interval and
	// --history-revisions; 0 leaves its defaults.
	Heartbeat time.Duration
	History   int64
	// ExtraArgs are more control-plane flags.
	ExtraArgs []string
	// Report is the agents' reporting; in figure 5 each agent's status
	// changes every Report.ChurnEvery.
	Report loadgen.ReportConfig
	// ValueBytes is each written value's size; 0 means 256.
	ValueBytes int

	// WorkDir holds the control plane's data and log, the agents' data
	// directories and the workers' logs; empty means a temporary directory,
	// removed at the end unless Keep.
	WorkDir string
	Keep    bool
	// AgentsDir holds the agents' data directories instead of WorkDir:
	// a tmpfs there keeps 10,000 agents' fsyncs off the one disk the
	// control plane and its database use, as agents on their own hosts
	// would be. It is emptied at the end unless Keep.
	AgentsDir string
	// ProfileDir, when set, runs the control plane under Exe's profiling
	// wrapper and writes CPU profiles of it and of the agents for figures
	// 1, 5 and 6 and a heap profile at figure 3.
	ProfileDir string
	// Settle is the pause before memory readings and between changes; 0
	// means two seconds.
	Settle time.Duration
	// Timeout bounds each wait; 0 means two minutes plus 20 ms per agent.
	Timeout time.Duration
	// Command is recorded in the result.
	Command string
	// Log receives progress; nil discards.
	Log *slog.Logger
}

type run struct {
	cfg Config
	log *slog.Logger
	res *Result

	work      string
	tmpWork   bool
	agentsDir string
	dropDB    func()
	cp        *controlPlane
	admin     *admin

	dataPlanes [2]string // fleet, single
	docs       [2]string
	head       [2]int64
	pin        string
	writes     int

	workers      []*loadgen.Worker
	workerPIDs   []int // 0 for this process
	singleWorker int
	idle         serverMemory
	files        []*os.File // closed at cleanup

	// fds is the most files the control plane had open since the phase
	// began, sampled by watchFDs.
	fds     atomic.Int64
	cpPID   atomic.Int64
	stopFDs context.CancelFunc
}

// watchFDs samples how many files the control plane has open, four times
// a second, into r.fds: SQLite connections and agents' connections share
// one open-file limit.
func (r *run) watchFDs(ctx context.Context) {
	ctx, r.stopFDs = context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pid := r.cpPID.Load()
			if pid == 0 {
				continue
			}
			f, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
			if err != nil {
				continue
			}
			names, _ := f.Readdirnames(-1)
			f.Close()
			for n := int64(len(names)); ; {
				cur := r.fds.Load()
				if n <= cur || r.fds.CompareAndSwap(cur, n) {
					break
				}
			}
		}
	}()
}

// Run runs the benchmark and returns its figures. An error means the run
// could not go on; agents that missed a change within Timeout are noted
// and counted, not an error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.N < 1 || (cfg.Store != SQLite && cfg.Store != Postgres) || cfg.ControlPlane == "" {
		return nil, fmt.Errorf("benchrun: need N ≥ 1, Store %q or %q and the control plane binary", SQLite, Postgres)
	}
	if cfg.ProfileDir != "" && cfg.Exe == "" {
		return nil, errors.New("benchrun: profiling needs Exe (the profiling wrapper)")
	}
	if cfg.PostgresURL == "" {
		cfg.PostgresURL = DefaultPostgresURL
	}
	if cfg.ValueBytes == 0 {
		cfg.ValueBytes = 256
	}
	if cfg.Settle == 0 {
		cfg.Settle = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2*time.Minute + time.Duration(cfg.N)*20*time.Millisecond
	}
	if cfg.AdmitRate == 0 {
		cfg.AdmitRate = float64(max(cfg.N, 100))
	}
	if cfg.AdmitBurst == 0 {
		cfg.AdmitBurst = cfg.N + 1
	}
	if cfg.Report.ChurnEvery == 0 {
		cfg.Report.ChurnEvery = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	soft, err := raiseNoFile()
	if err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: cfg.Log}
	r.res = &Result{
		System: "cairn-" + cfg.Store, N: cfg.N, Changes: cfg.Changes, Peer: "cairn", TLS: true, Store: cfg.Store,
		ValueBytes: cfg.ValueBytes, Machine: machine(soft), Command: cfg.Command,
		Server: "cairn-controlplane child process",
	}
	if cfg.ProfileDir != "" {
		r.res.Server = "controlplane/cli under cairn-bench's profiling wrapper, child process"
	}
	defer r.cleanup()

	// Each step is a phase, but for the storms, each of which is one.
	steps := []struct {
		name string
		skip bool
		fn   func(context.Context) error
	}{
		{"prepare", false, r.prepare},
		{"enroll and connect", false, r.connect},
		{"figure 1 fan-out", cfg.Changes == 0, r.fanOut},
		{"figure 3 memory", cfg.SkipMemory, r.memory},
		{"figure 2 single agent", cfg.Single == 0, r.single},
		{"figure 5 status ingest", cfg.IngestFor == 0, r.ingest},
		{"figure 6 change throughput", cfg.ThroughputFor == 0, r.throughput},
		{stormsStep, len(cfg.Storms) == 0, r.storms},
	}
	for _, s := range steps {
		if s.skip {
			continue
		}
		r.log.Info("step", "name", s.name)
		run := func() error { return s.fn(ctx) }
		if s.name != stormsStep {
			run = func() error { return r.phase(s.name, func() error { return s.fn(ctx) }) }
		}
		if err := run(); err != nil {
			return r.res, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return r.res, nil
}

// phase runs fn and records its time and the CPU the control plane and
// the agents spent in it.
func (r *run) phase(name string, fn func() error) error {
	cpBefore, cpPID := r.cpCPU()
	agBefore := r.agentsCPU()
	busyBefore := machineBusy()
	r.fds.Store(0)
	start := time.Now()
	err := fn()
	cpAfter, cpPIDAfter := r.cpCPU()
	if cpPIDAfter != cpPID {
		cpBefore = 0 // restarted: the new process's CPU is all in this phase
	}
	p := Phase{Name: name, Seconds: time.Since(start).Seconds(), ServerPeakFDs: int(r.fds.Load()),
		ServerCPUSeconds: (cpAfter - cpBefore).Seconds(), AgentsCPUSeconds: (r.agentsCPU() - agBefore).Seconds()}
	if lim := r.res.Machine.FDLimit; lim > 0 && uint64(p.ServerPeakFDs) >= lim-16 {
		r.note("%s: the control plane had %d files open, at its limit of %d: it could not open more (connections, database files)", name, p.ServerPeakFDs, lim)
	}
	if busyBefore > 0 {
		p.OtherCPUSeconds = max((machineBusy()-busyBefore).Seconds()-p.ServerCPUSeconds-p.AgentsCPUSeconds, 0)
		if avail := p.Seconds * float64(r.res.Machine.CPUs); p.OtherCPUSeconds > max(5, 0.15*avail) {
			r.note("%s: other processes (PostgreSQL, this driver, anything else on the machine) used %.1f of the %.1f CPU seconds available",
				name, p.OtherCPUSeconds, p.Seconds*float64(r.res.Machine.CPUs))
		}
	}
	r.res.Phases = append(r.res.Phases, p)
	return err
}

func (r *run) cpCPU() (time.Duration, int) {
	if r.cp == nil || r.cp.cmd == nil {
		return 0, 0
	}
	d, _ := procCPU(r.cp.pid())
	return d, r.cp.pid()
}

// agentsCPU is the CPU time of the worker processes, and of this process
// when it holds agents itself.
func (r *run) agentsCPU() time.Duration {
	var sum time.Duration
	seen := map[int]bool{}
	for _, pid := range r.workerPIDs {
		if pid == 0 {
			pid = os.Getpid()
		}
		if seen[pid] {
			continue
		}
		seen[pid] = true
		d, _ := procCPU(pid)
		sum += d
	}
	return sum
}

func (r *run) note(format string, args ...any) {
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, args...))
}

// value is change k's content: ValueBytes bytes.
func (r *run) value(k int) []byte {
	b := []byte(fmt.Sprintf("change %d ", k))
	for len(b) < r.cfg.ValueBytes {
		b = append(b, 'x')
	}
	return b[:r.cfg.ValueBytes]
}

// write writes the next change to data plane g (0 fleet, 1 single) and
// returns its revision.
func (r *run) write(ctx context.Context, g int) (int64, error) {
	r.writes++
	if err := r.admin.write(ctx, r.docs[g], r.value(r.writes)); err != nil {
		return 0, err
	}
	r.head[g]++
	return r.head[g], nil
}

// prepare makes the work directory and database, starts the control
// plane, creates the data planes and reads the idle memory.
func (r *run) prepare(ctx context.Context) error {
	r.work = r.cfg.WorkDir
	if r.work == "" {
		dir, err := os.MkdirTemp("", "cairn-bench-")
		if err != nil {
			return err
		}
		r.work, r.tmpWork = dir, true
	}
	if r.cfg.AgentsDir == "" {
		r.agentsDir = filepath.Join(r.work, "agents")
	} else {
		dir, err := os.MkdirTemp(r.cfg.AgentsDir, "cairn-bench-agents-")
		if err != nil {
			return err
		}
		r.agentsDir = dir
	}
	if err := os.MkdirAll(r.agentsDir, 0o700); err != nil {
		return err
	}
	if r.cfg.ProfileDir != "" {
		if err := os.MkdirAll(r.cfg.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	cpDir := filepath.Join(r.work, "controlplane")
	tokenFile := filepath.Join(cpDir, "admin.token")
	cp := &controlPlane{
		argv:      []string{r.cfg.ControlPlane},
		adminAddr: ports[0],
		logPath:   filepath.Join(r.work, "controlplane.log"),
		args: []string{"--insecure", "--admin-addr", ports[0], "--agent-addr", ports[1], "--data-dir", cpDir,
			"--bootstrap-token-file", tokenFile, "--trust-domain", "bench.cairn.local", "--agent-api-names", "127.0.0.1",
			"--svid-ttl", "24h"},
	}
	if r.cfg.ProfileDir != "" {
		cp.profileAddr = ports[2]
		cp.argv = []string{r.cfg.Exe, "controlplane", "-profile-addr", ports[2], "--"}
	}
	if r.cfg.Heartbeat != 0 {
		cp.args = append(cp.args, "--heartbeat-interval", r.cfg.Heartbeat.String())
	}
	if r.cfg.History != 0 {
		cp.args = append(cp.args, "--history-revisions", strconv.FormatInt(r.cfg.History, 10))
	}
	cp.args = append(cp.args, r.cfg.ExtraArgs...)
	if r.cfg.Store == Postgres {
		dbURL, version, drop, err := freshDatabase(ctx, r.cfg.PostgresURL)
		if err != nil {
			return err
		}
		r.dropDB = drop
		r.res.Machine.Postgres = version
		cp.env = append(cp.env, "CAIRN_DATABASE_URL="+dbURL)
		r.res.Server += ", PostgreSQL database " + redacted(dbURL)
	} else {
		r.res.Server += ", SQLite in " + cpDir
	}
	r.cp = cp
	if err := cp.start(ctx, r.admission(r.cfg.AdmitRate, r.cfg.AdmitBurst), time.Minute); err != nil {
		return err
	}
	r.cpPID.Store(int64(cp.pid()))
	r.watchFDs(ctx)
	r.log.Info("control plane started", "pid", cp.pid(), "admin", cp.adminAddr, "log", cp.logPath)
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	r.admin = newAdmin("http://"+cp.adminAddr, strings.TrimSpace(string(tok)))
	dps, docs, pin, err := r.admin.setup(ctx, []string{"fleet", "single"}, r.value(0))
	if err != nil {
		return err
	}
	copy(r.dataPlanes[:], dps)
	copy(r.docs[:], docs)
	r.head = [2]int64{1, 1}
	r.pin = pin
	if err := wait.Sleep(ctx, r.cfg.Settle); err != nil {
		return err
	}
	r.idle, err = r.serverMemory(ctx)
	return err
}

func (r *run) admission(rate float64, burst int) []string {
	if rate == 0 {
		return nil
	}
	return []string{"--stream-admit-rate", strconv.FormatFloat(rate, 'f', -1, 64), "--stream-admit-burst", strconv.Itoa(burst)}
}

// connect makes the join tokens, starts the workers, which enroll their
// agents, and waits until every agent holds the head and the control
// plane has recorded it.
func (r *run) connect(ctx context.Context) error {
	start := time.Now()
	fleetTokens, err := r.admin.joinTokens(ctx, r.dataPlanes[0], r.cfg.N, 16)
	if err != nil {
		return err
	}
	singleTokens, err := r.admin.joinTokens(ctx, r.dataPlanes[1], 1, 1)
	if err != nil {
		return err
	}
	r.log.Info("join tokens made", "n", r.cfg.N+1, "took", time.Since(start).Round(time.Millisecond))

	total := r.cfg.N + 1
	per := r.cfg.AgentsPerProcess
	if per == 0 {
		per = max(int((r.res.Machine.FDLimit-fdMargin)/fdPerAgent), 1)
	}
	procs := (total + per - 1) / per
	if procs > 1 && r.cfg.Exe == "" {
		return fmt.Errorf("%d agents need %d processes at %d agents per process (open-file limit %d), but no worker executable was given",
			total, procs, per, r.res.Machine.FDLimit)
	}
	r.res.AgentProcs = procs
	shards := make([][]loadgen.Member, procs)
	shards[0] = append(shards[0], loadgen.Member{Group: groupSingle, Token: singleTokens[0]})
	r.singleWorker = 0
	for i, tok := range fleetTokens {
		k := i * procs / r.cfg.N
		shards[k] = append(shards[k], loadgen.Member{Group: groupFleet, Token: tok})
	}
	agentAddr := r.cp.args[slicesIndex(r.cp.args, "--agent-addr")+1]
	enrollStart := time.Now()
	r.workers = make([]*loadgen.Worker, procs)
	r.workerPIDs = make([]int, procs)
	for k := range procs {
		w, err := r.startWorker(ctx, k, procs)
		if err != nil {
			return err
		}
		r.workers[k] = w
	}
	err = r.eachWorker(func(k int, w *loadgen.Worker) error {
		err := w.Start(loadgen.FleetConfig{Addr: agentAddr, Pin: r.pin, Dir: filepath.Join(r.agentsDir, fmt.Sprintf("p%d", k)),
			Members: shards[k], EnrollConcurrency: r.cfg.EnrollConcurrency, Report: r.cfg.Report})
		if procs > 1 {
			r.workerPIDs[k] = w.PID()
		}
		return err
	})
	if err != nil {
		return err
	}
	r.res.EnrollAllMs = ms(time.Since(enrollStart))
	r.log.Info("all agents enrolled", "n", total, "processes", procs, "took", time.Since(enrollStart).Round(time.Millisecond))
	for g, group := range []string{groupFleet, groupSingle} {
		if err := r.arm(group, r.head[g]); err != nil {
			return err
		}
		times, missing, err := r.wait(group)
		if err != nil {
			return err
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d %s agents did not apply revision %d within %v", missing, len(times), group, r.head[g], r.cfg.Timeout)
		}
		if _, err := r.admin.waitRecorded(ctx, r.dataPlanes[g], r.head[g], r.cfg.Timeout); err != nil {
			return err
		}
	}
	r.res.ConnectAllMs = ms(time.Since(enrollStart))
	r.log.Info("all agents current and recorded", "took", time.Since(enrollStart).Round(time.Millisecond))
	return nil
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// startWorker starts worker k: in this process when there is one, else as
// a child process.
func (r *run) startWorker(ctx context.Context, k, procs int) (*loadgen.Worker, error) {
	logf, err := os.Create(filepath.Join(r.work, fmt.Sprintf("agents-%d.log", k)))
	if err != nil {
		return nil, err
	}
	if procs == 1 {
		r.files = append(r.files, logf)
		log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
		return loadgen.InProcess(ctx, log), nil
	}
	cmd := exec.Command(r.cfg.Exe, "agents-worker")
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start agents worker: %w", err)
	}
	// An interrupted run must not wait for a worker's long call (enrolling
	// thousands of agents): killing it ends the call.
	stopKill := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	return loadgen.NewWorker(stdout, stdin, func() error {
		stdin.Close()
		err := cmd.Wait()
		stopKill()
		logf.Close()
		return err
	}), nil
}

// eachWorker calls fn for every worker at once and returns the first
// error.
func (r *run) eachWorker(fn func(k int, w *loadgen.Worker) error) error {
	errs := make([]error, len(r.workers))
	var wg sync.WaitGroup
	for k, w := range r.workers {
		wg.Go(func() { errs[k] = fn(k, w) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// groupWorkers are the workers holding agents of group.
func (r *run) groupWorkers(group string) []int {
	if group == groupSingle {
		return []int{r.singleWorker}
	}
	ks := make([]int, len(r.workers))
	for k := range ks {
		ks[k] = k
	}
	return ks
}

func (r *run) arm(group string, rev int64) error {
	return r.eachWorker(func(k int, w *loadgen.Worker) error {
		if !contains(r.groupWorkers(group), k) {
			return nil
		}
		return w.Arm(group, rev)
	})
}

// wait collects when each agent of group reached the armed revision.
func (r *run) wait(group string) (times []int64, missing int, err error) {
	var mu sync.Mutex
	err = r.eachWorker(func(k int, w *loadgen.Worker) error {
		if !contains(r.groupWorkers(group), k) {
			return nil
		}
		t, m, err := w.Wait(group, r.cfg.Timeout)
		mu.Lock()
		defer mu.Unlock()
		times = append(times, t...)
		missing += m
		return err
	})
	return times, missing, err
}

func (r *run) stats(group string) (loadgen.Stats, error) {
	var mu sync.Mutex
	sum := loadgen.Stats{MinRevision: -1}
	err := r.eachWorker(func(k int, w *loadgen.Worker) error {
		if !contains(r.groupWorkers(group), k) {
			return nil
		}
		s, err := w.Stats(group)
		mu.Lock()
		defer mu.Unlock()
		sum.Agents += s.Agents
		sum.Connected += s.Connected
		if sum.MinRevision < 0 || s.MinRevision < sum.MinRevision {
			sum.MinRevision = s.MinRevision
		}
		sum.MaxRevision = max(sum.MaxRevision, s.MaxRevision)
		sum.Applied += s.Applied
		sum.Nacks += s.Nacks
		sum.StreamEnds += s.StreamEnds
		sum.ReportsDelivered += s.ReportsDelivered
		sum.ReportCalls += s.ReportCalls
		sum.ReportsQueued += s.ReportsQueued
		sum.ReportsDropped += s.ReportsDropped
		return err
	})
	return sum, err
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// latencies turns receive times into durations since t0, leaving out
// agents that did not receive.
func latencies(times []int64, t0 time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range times {
		if t != 0 {
			out = append(out, time.Unix(0, t).Sub(t0))
		}
	}
	return out
}

// profile starts (or, with stop, ends) CPU profiles of the control plane
// and the agents' processes for a figure.
func (r *run) profile(ctx context.Context, name string, stop bool) {
	if r.cfg.ProfileDir == "" {
		return
	}
	what := "cpu-start"
	if stop {
		what = "cpu-stop"
	}
	if err := r.cp.profile(ctx, what, filepath.Join(r.cfg.ProfileDir, "controlplane-"+name+".cpu.pprof")); err != nil {
		r.note("profile: %v", err)
	}
	if stop {
		// Block and mutex profiles count from the start; each file holds
		// everything up to the end of this figure.
		for _, p := range []string{"block", "mutex"} {
			if err := r.cp.profile(ctx, "lookup?name="+p, filepath.Join(r.cfg.ProfileDir, "controlplane-"+name+"."+p+".pprof")); err != nil {
				r.note("profile: %v", err)
			}
		}
	}
	err := r.eachWorker(func(k int, w *loadgen.Worker) error {
		if stop {
			return w.StopProfile()
		}
		return w.StartProfile(filepath.Join(r.cfg.ProfileDir, fmt.Sprintf("agents%d-%s.cpu.pprof", k, name)))
	})
	if err != nil {
		r.note("profile: %v", err)
	}
}

// fanOut is figure 1.
func (r *run) fanOut(ctx context.Context) error {
	var all []time.Duration
	r.profile(ctx, "fanout", false)
	defer r.profile(ctx, "fanout", true)
	for k := range r.cfg.Changes {
		if err := wait.Sleep(ctx, r.cfg.Settle); err != nil {
			return err
		}
		rev := r.head[0] + 1
		if err := r.arm(groupFleet, rev); err != nil {
			return err
		}
		sentBefore, err := r.deltasSent(ctx)
		if err != nil {
			return err
		}
		t0 := time.Now()
		sentCtx, stopSent := context.WithCancel(ctx)
		sentc := make(chan time.Time, 1)
		go func() { sentc <- r.waitSent(sentCtx, sentBefore+float64(r.cfg.N)) }()
		if _, err := r.write(ctx, 0); err != nil {
			stopSent()
			return err
		}
		written := time.Now()
		times, missing, err := r.wait(groupFleet)
		if err != nil {
			stopSent()
			return err
		}
		c := Change{Revision: rev, WriteMs: ms(written.Sub(t0)), Received: len(times) - missing}
		// Every agent that applied the delta was sent it: the count is
		// there now or within a scrape.
		time.AfterFunc(5*time.Second, stopSent)
		if sent := <-sentc; !sent.IsZero() {
			c.SentMs = ms(sent.Sub(t0))
			r.res.FanoutSentMaxMs = max(r.res.FanoutSentMaxMs, c.SentMs)
		}
		stopSent()
		lat := latencies(times, t0)
		p := summarize(lat)
		c.P50Ms, c.P99Ms, c.MaxMs = p.p50, p.p99, p.max
		if missing > 0 {
			r.note("figure 1 change %d: %d of %d agents did not apply it within %v; its percentiles cover those that did", k, missing, len(times), r.cfg.Timeout)
		} else {
			acked, err := r.admin.waitRecorded(ctx, r.dataPlanes[0], rev, r.cfg.Timeout)
			if err != nil {
				r.note("figure 1 change %d: %v", k, err)
			} else {
				c.AckedMs = ms(acked.Sub(t0))
				r.res.FanoutAckedMaxMs = max(r.res.FanoutAckedMaxMs, c.AckedMs)
			}
		}
		all = append(all, lat...)
		r.res.PerChange = append(r.res.PerChange, c)
		r.log.Info("change", "k", k, "revision", rev, "applied", c.Received, "sent_ms", c.SentMs, "p50_ms", c.P50Ms, "p99_ms", c.P99Ms, "max_ms", c.MaxMs, "acked_ms", c.AckedMs, "write_ms", c.WriteMs)
	}
	p := summarize(all)
	r.res.FanoutP50Ms, r.res.FanoutP99Ms, r.res.FanoutMaxMs = p.p50, p.p99, p.max
	return nil
}

// deltasSent reads the control plane's count of deltas sent on config
// streams.
func (r *run) deltasSent(ctx context.Context) (float64, error) {
	met, err := r.cp.metrics(ctx)
	if err != nil {
		return 0, err
	}
	return met["cairn_agent_stream_deltas_sent_total"], nil
}

// waitSent reads the count every 25 ms until it reaches want and returns
// when it did; the zero time when ctx ended first.
func (r *run) waitSent(ctx context.Context, want float64) time.Time {
	for {
		if n, err := r.deltasSent(ctx); err == nil && n >= want {
			return time.Now()
		}
		if wait.Sleep(ctx, 25*time.Millisecond) != nil {
			return time.Time{}
		}
	}
}

// serverMemory is a reading of the control plane's memory.
type serverMemory struct {
	rss, heap, heapInuse int64
	// stacks is go_memstats_stack_inuse_bytes: goroutine stacks, in the
	// RSS but not in the heap.
	stacks int64
	// live estimates the heap the last collection found live, from the
	// collector's next goal: goal = live + (live + stacks)·GOGC/100.
	live       int64
	goroutines int
}

// serverMemory reads the control plane's RSS from /proc and its Go heap
// from /metrics, the lowest of five readings over a second.
func (r *run) serverMemory(ctx context.Context) (serverMemory, error) {
	var m serverMemory
	for i := range 5 {
		if i > 0 {
			if err := wait.Sleep(ctx, 250*time.Millisecond); err != nil {
				return m, err
			}
		}
		met, err := r.cp.metrics(ctx)
		if err != nil {
			return m, err
		}
		heap, ok := met["go_memstats_heap_alloc_bytes"]
		if !ok {
			return m, errors.New("the control plane's /metrics has no go_memstats_heap_alloc_bytes")
		}
		if i == 0 || int64(heap) < m.heap {
			m.heap, m.heapInuse = int64(heap), int64(met["go_memstats_heap_inuse_bytes"])
		}
		m.stacks = int64(met["go_memstats_stack_inuse_bytes"])
		if g := met["go_gc_gogc_percent"] / 100; g > 0 {
			m.live = int64((met["go_memstats_next_gc_bytes"] - met["go_memstats_stack_inuse_bytes"]*g) / (1 + g))
		}
		m.goroutines = int(met["go_goroutines"])
	}
	rss, _, err := procMemory(r.cp.pid())
	m.rss = rss
	return m, err
}

// memory is figure 3, read with the fleet at rest: it waits out the
// agents' progress delay after the last change, so that the status reports
// applying it caused (each agent's deferred by a random delay up to it)
// have been sent, and what is read is connected agents rather than Report
// calls in flight.
func (r *run) memory(ctx context.Context) error {
	rest := r.cfg.Report.LongestProgressWait() + r.cfg.Settle
	if err := wait.Sleep(ctx, rest); err != nil {
		return err
	}
	r.res.MemoryRestMs = ms(rest)
	m, err := r.serverMemory(ctx)
	if err != nil {
		return err
	}
	n := float64(r.cfg.N + 1)
	r.res.ServerRSSIdleBytes, r.res.ServerRSSBytes = r.idle.rss, m.rss
	r.res.ServerHeapIdleBytes, r.res.ServerHeapBytes = r.idle.heap, m.heap
	r.res.BytesPerWatcher = float64(m.rss-r.idle.rss) / n
	r.res.HeapBytesPerWatcher = float64(m.heap-r.idle.heap) / n
	r.res.ServerHeapLiveBytes = m.live
	r.res.HeapLiveBytesPerAgent = float64(m.live-r.idle.live) / n
	r.res.ServerGoroutines = m.goroutines
	r.res.ServerStackBytes = m.stacks
	r.res.StackBytesPerAgent = float64(m.stacks-r.idle.stacks) / n
	var client int64
	seen := map[int]bool{}
	for _, pid := range r.workerPIDs {
		if pid == 0 {
			pid = os.Getpid()
		}
		if !seen[pid] {
			seen[pid] = true
			rss, _, _ := procMemory(pid)
			client += rss
		}
	}
	r.res.ClientRSSBytes = client
	if r.cfg.ProfileDir != "" {
		for _, p := range []string{"heap", "goroutine"} {
			if err := r.cp.profile(ctx, "lookup?name="+p, filepath.Join(r.cfg.ProfileDir, "controlplane-agents."+p+".pprof")); err != nil {
				r.note("profile: %v", err)
			}
		}
	}
	r.log.Info("memory", "rss", m.rss, "idle_rss", r.idle.rss, "heap", m.heap, "idle_heap", r.idle.heap,
		"bytes_per_agent", r.res.BytesPerWatcher, "heap_per_agent", r.res.HeapBytesPerWatcher, "live_heap_per_agent", r.res.HeapLiveBytesPerAgent,
		"stacks_per_agent", r.res.StackBytesPerAgent, "goroutines", m.goroutines)
	return nil
}

// single is figure 2: the lone agent's data plane, one change at a time.
func (r *run) single(ctx context.Context) error {
	var lat []time.Duration
	for k := range r.cfg.Single {
		rev := r.head[1] + 1
		if err := r.arm(groupSingle, rev); err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := r.write(ctx, 1); err != nil {
			return err
		}
		times, missing, err := r.wait(groupSingle)
		if err != nil {
			return err
		}
		if missing > 0 {
			r.note("figure 2 change %d: not applied within %v", k, r.cfg.Timeout)
			continue
		}
		lat = append(lat, latencies(times, t0)...)
		if (k+1)%100 == 0 {
			p := summarize(lat)
			r.log.Info("single agent progress", "changes", k+1, "p50_ms", p.p50, "p99_ms", p.p99)
		}
	}
	p := summarize(lat)
	r.res.SingleChanges = len(lat)
	r.res.SingleP50Ms, r.res.SingleP99Ms, r.res.SingleMaxMs = p.p50, p.p99, p.max
	r.log.Info("single agent", "changes", len(lat), "p50_ms", p.p50, "p99_ms", p.p99, "max_ms", p.max)
	return nil
}

func (r *run) churn(on bool) error {
	return r.eachWorker(func(_ int, w *loadgen.Worker) error { return w.SetChurn(on) })
}

// ingest is figure 5: every agent makes a new status every
// Report.ChurnEvery; the figure is the reports the control plane
// acknowledged per second.
func (r *run) ingest(ctx context.Context) error {
	if err := r.churn(true); err != nil {
		return err
	}
	r.profile(ctx, "ingest", false)
	// Two changes for every agent to be making reports.
	if err := wait.Sleep(ctx, 2*r.cfg.Report.ChurnEvery); err != nil {
		return err
	}
	s0, err := r.stats("")
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := wait.Sleep(ctx, r.cfg.IngestFor); err != nil {
		return err
	}
	s1, err := r.stats("")
	if err != nil {
		return err
	}
	dt := time.Since(t0).Seconds()
	r.profile(ctx, "ingest", true)
	if err := r.churn(false); err != nil {
		return err
	}
	r.res.StatusReportsPerSec = float64(s1.ReportsDelivered-s0.ReportsDelivered) / dt
	r.res.StatusBatchesPerSec = float64(s1.ReportCalls-s0.ReportCalls) / dt
	r.res.StatusOfferedPerSec = float64(s1.Agents) / r.cfg.Report.ChurnEvery.Seconds()
	r.res.StatusBacklog = s1.ReportsQueued
	if s1.ReportsDropped > 0 {
		r.note("figure 5: the agents' queues dropped %d reports (full)", s1.ReportsDropped)
	}
	r.log.Info("status ingest", "reports_per_sec", r.res.StatusReportsPerSec, "batches_per_sec", r.res.StatusBatchesPerSec, "backlog", s1.ReportsQueued)
	// The backlog drains while metrics reports (one per agent per
	// MetricsEvery) keep coming; past five minutes the later figures run
	// with what is left, and the note says how much that was.
	drain := time.Now()
	deadline := drain.Add(min(r.cfg.Timeout, 5*time.Minute))
	for {
		s, err := r.stats("")
		if err != nil {
			return err
		}
		if s.ReportsQueued == 0 {
			r.res.StatusDrainMs = ms(time.Since(drain))
			return nil
		}
		if time.Now().After(deadline) {
			r.res.StatusUndrained = s.ReportsQueued
			r.note("figure 5: %d reports still queued %v after the load stopped; the later figures ran with that backlog draining", s.ReportsQueued, time.Since(drain).Round(time.Second))
			return nil
		}
		if err := wait.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// throughput is figure 6: changes written back to back for ThroughputFor,
// and the time until every agent applied the last.
func (r *run) throughput(ctx context.Context) error {
	if err := wait.Sleep(ctx, r.cfg.Settle); err != nil {
		return err
	}
	r.profile(ctx, "throughput", false)
	defer r.profile(ctx, "throughput", true)
	var head atomic.Int64
	first := r.head[0]
	head.Store(first)
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		for time.Since(start) < r.cfg.ThroughputFor {
			rev, err := r.write(ctx, 0)
			if err != nil {
				done <- err
				return
			}
			head.Store(rev)
		}
		done <- nil
	}()
	var maxLag int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var werr error
wait:
	for {
		select {
		case werr = <-done:
			break wait
		case <-tick.C:
			h := head.Load()
			s, err := r.stats(groupFleet)
			if err != nil {
				return err
			}
			maxLag = max(maxLag, h-s.MinRevision)
		}
	}
	if werr != nil {
		return werr
	}
	wrote := time.Since(start)
	final := r.head[0]
	if err := r.arm(groupFleet, final); err != nil {
		return err
	}
	times, missing, err := r.wait(groupFleet)
	if err != nil {
		return err
	}
	var last time.Time
	for _, t := range times {
		if tt := time.Unix(0, t); t != 0 && tt.After(last) {
			last = tt
		}
	}
	if missing > 0 {
		r.note("figure 6: %d of %d agents had not applied revision %d %v after the writes ended", missing, len(times), final, r.cfg.Timeout)
		return nil
	}
	if _, err := r.admin.waitRecorded(ctx, r.dataPlanes[0], final, r.cfg.Timeout); err != nil {
		r.note("figure 6: %v", err)
	}
	count := int(final - first)
	r.res.ChangesWritten = count
	r.res.ChangesWritePerSec = float64(count) / wrote.Seconds()
	r.res.ChangesAllMs = ms(last.Sub(start))
	r.res.ChangesPerSec = float64(count) / last.Sub(start).Seconds()
	r.res.ChangesMaxLag = maxLag
	r.log.Info("throughput", "changes", count, "write_per_sec", r.res.ChangesWritePerSec, "changes_per_sec", r.res.ChangesPerSec, "max_lag", maxLag)
	return nil
}

// storms is figure 4: for each storm, kill the control plane, start it
// again with the storm's admission limits, write a change as soon as it
// serves, and time until every agent applied it (which it can only do on
// a resumed stream) and the control plane recorded every agent.
func (r *run) storms(ctx context.Context) error {
	for i, sc := range r.cfg.Storms {
		if err := wait.Sleep(ctx, r.cfg.Settle); err != nil {
			return err
		}
		var s Storm
		if err := r.phase("figure 4 storm "+sc.Name, func() error {
			var err error
			s, err = r.storm(ctx, sc)
			return err
		}); err != nil {
			return err
		}
		ph := r.res.Phases[len(r.res.Phases)-1]
		s.ServerCPUSeconds, s.AgentsCPUSeconds = ph.ServerCPUSeconds, ph.AgentsCPUSeconds
		r.res.Storms = append(r.res.Storms, s)
		if i == 0 {
			r.res.ReconnectAllMs, r.res.ReconnectPeakRSSBytes = s.AllMs, s.PeakRSSBytes
			r.res.ServerRestartMs, r.res.ReconnectWriteMs = s.ServerRestartMs, s.WriteMs
			r.res.ReconnectP50Ms, r.res.ReconnectP99Ms, r.res.ReconnectReceived = s.P50Ms, s.P99Ms, s.Received
			r.res.SnapshotBytesOnResume = s.SnapshotBytes
		}
	}
	return nil
}

func (r *run) storm(ctx context.Context, sc StormConfig) (Storm, error) {
	s := Storm{Name: sc.Name}
	rate, burst := sc.Rate, sc.Burst
	if rate == 0 {
		rate, burst = r.cfg.AdmitRate, r.cfg.AdmitBurst
	}
	var admission []string
	if rate > 0 {
		admission = r.admission(rate, burst)
		s.AdmitRate, s.AdmitBurst = rate, burst
	}
	rev := r.head[0] + 1
	if err := r.arm(groupFleet, rev); err != nil {
		return s, err
	}
	before, err := r.stats(groupFleet)
	if err != nil {
		return s, err
	}
	kill := time.Now()
	r.cpPID.Store(0)
	r.cp.kill()
	r.log.Info("control plane killed; restarting", "storm", sc.Name)
	if err := r.cp.start(ctx, admission, r.cfg.Timeout); err != nil {
		return s, err
	}
	r.cpPID.Store(int64(r.cp.pid()))
	s.ServerRestartMs = ms(time.Since(kill))
	r.log.Info("control plane restarted", "pid", r.cp.pid(), "took", time.Since(kill).Round(time.Millisecond))
	deadline := time.Now().Add(r.cfg.Timeout)
	for {
		_, err := r.write(ctx, 0)
		if err == nil {
			break
		}
		r.writes--
		if time.Now().After(deadline) || ctx.Err() != nil {
			return s, fmt.Errorf("write after restart: %w", err)
		}
		r.log.Info("write after restart failed; retrying", "error", err)
		if err := wait.Sleep(ctx, 100*time.Millisecond); err != nil {
			return s, err
		}
	}
	s.WriteMs = ms(time.Since(kill))
	times, missing, err := r.wait(groupFleet)
	if err != nil {
		return s, err
	}
	lat := latencies(times, kill)
	p := summarize(lat)
	s.P50Ms, s.P99Ms, s.Received = p.p50, p.p99, len(lat)
	if missing == 0 {
		s.AllMs = p.max
		if t, err := r.admin.waitRecorded(ctx, r.dataPlanes[0], rev, r.cfg.Timeout); err != nil {
			r.note("figure 4 %s: %v", sc.Name, err)
		} else {
			s.AckedMs = ms(t.Sub(kill))
		}
	} else {
		r.note("figure 4 %s: %d of %d agents had not applied the change written after the restart %v after the kill", sc.Name, missing, len(times), r.cfg.Timeout)
	}
	met, err := r.cp.metrics(ctx)
	if err != nil {
		return s, err
	}
	snap, ok := met["cairn_agent_stream_snapshot_bytes_total"]
	if !ok {
		r.note("figure 4: the control plane's /metrics has no cairn_agent_stream_snapshot_bytes_total")
	}
	s.SnapshotBytes = int64(snap)
	s.StreamsAdmitted = int64(met["cairn_agent_stream_admitted_total"])
	s.StreamsRefused = int64(met["cairn_agent_stream_refused_total"])
	s.ServerHeapBytes = int64(met["go_memstats_heap_alloc_bytes"])
	rss, hwm, err := procMemory(r.cp.pid())
	if err != nil {
		return s, err
	}
	s.PeakRSSBytes, s.ServerRSSAfterAll = hwm, rss
	after, err := r.stats(groupFleet)
	if err != nil {
		return s, err
	}
	s.AgentStreamEnds = after.StreamEnds - before.StreamEnds
	r.log.Info("reconnect storm", "storm", sc.Name, "all_ms", s.AllMs, "acked_ms", s.AckedMs, "received", s.Received,
		"snapshot_bytes", s.SnapshotBytes, "admitted", s.StreamsAdmitted, "refused", s.StreamsRefused, "peak_rss", hwm)
	return s, nil
}

// cleanup stops the agents and the control plane, notes the control
// plane's warnings, drops the database and removes a temporary work
// directory. Errors are logged: the figures are already in.
func (r *run) cleanup() {
	if r.stopFDs != nil {
		r.stopFDs()
	}
	for _, w := range r.workers {
		if w != nil {
			if err := w.Close(); err != nil {
				r.log.Warn("stop agents", "error", err)
			}
		}
	}
	if r.cp != nil {
		if err := r.cp.stop(time.Minute); err != nil {
			r.log.Warn("stop control plane", "error", err)
		}
		if tally := logTally(r.cp.logPath); len(tally) > 0 {
			if len(tally) > 8 {
				tally = tally[:8]
			}
			r.note("control plane warnings and errors over the run: %s", strings.Join(tally, "; "))
		}
	}
	for _, f := range r.files {
		f.Close()
	}
	if r.dropDB != nil {
		r.dropDB()
	}
	if r.cfg.AgentsDir != "" && r.agentsDir != "" && !r.cfg.Keep {
		_ = os.RemoveAll(r.agentsDir)
	}
	if r.tmpWork && !r.cfg.Keep {
		_ = os.RemoveAll(r.work)
	} else if r.work != "" {
		r.note("work directory kept: %s", r.work)
	}
}

// freshDatabase creates a database on the PostgreSQL server at adminURL
// and returns its URL, the server's version and a func that drops it.
func freshDatabase(ctx context.Context, adminURL string) (string, string, func(), error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, adminURL)
	if err != nil {
		return "", "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	var version string
	if err := conn.QueryRow(cctx, "SHOW server_version").Scan(&version); err != nil {
		return "", "", nil, fmt.Errorf("postgres: %w", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cairn_bench_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+name); err != nil {
		return "", "", nil, fmt.Errorf("postgres: create database: %w", err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	return u.String(), "PostgreSQL " + version, drop, nil
}

func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Redacted()
}

// freePorts returns n free loopback addresses. Another process could take
// one before the control plane binds it; nothing else on a benchmark
// machine hands out ports.
func freePorts(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// raiseNoFile raises this process's open-file limit to its hard limit
// (children inherit it) and returns the new limit.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raise the open-file limit to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}
