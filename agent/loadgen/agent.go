// Package loadgen simulates cairn-agents for the fleet benchmark
// (cmd/cairn-bench). Each simulated agent is a real client: it enrolls
// through the Enroll RPC with its own join token and key, holds its own
// SVID and its own mTLS connection, and runs the agent's own code for the
// work that scales with the fleet — agent/internal/configsync verifies
// every key set, delta, snapshot and heartbeat (Ed25519, chained state
// hashes) and applies it to an agent/internal/cache bbolt file, and
// agent/internal/report queues status and metrics on disk and delivers
// them. Nothing is skipped or faked on that path.
//
// What cairn-agent does and a simulated agent does not: the local API
// socket, file rendering and SVID renewal (the benchmark issues day-long
// SVIDs). Like cairn-agent, it holds one connection for its config
// stream (which also carries the trust bundle) and reports. The reconnect
// policy (full-jitter backoff from one second to 30 seconds, at least the
// control plane's retry hint, trusted up to ten minutes) is the daemon's:
// both use agent/internal/retry. No upgrade hook runs, so
// statuses carry no cluster versions.
//
// Agents of one process form a Fleet; a Worker drives a Fleet in another
// process (or in this one) over a line protocol, so one benchmark can
// spread more agents than one process may hold files for. It must not be
// linked into cairn-agent and must not import control-plane code.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/agent/internal/identity"
	"github.com/cairnhq/cairn/agent/internal/report"
	"github.com/cairnhq/cairn/agent/internal/retry"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/wait"
)

// Version is what simulated agents report as their agent version.
const Version = "loadgen"

// maxBackoff is cairn-agent's default --max-backoff.
const maxBackoff = 30 * time.Second

// ReportConfig is the simulated agents' reporting; zero fields take
// cairn-agent's defaults.
type ReportConfig struct {
	// StatusEvery re-sends an unchanged status; 0 means one minute.
	StatusEvery time.Duration `json:"status_every,omitempty"`
	// ProgressDelay defers a status that changed only in its applied
	// revision and state hash by a random time up to this; 0 means
	// cairn-agent's default (report.DefaultProgressDelay), negative sends
	// it at once.
	ProgressDelay time.Duration `json:"progress_delay,omitempty"`
	// MetricsEvery batches the agent's own metrics; 0 means 30 seconds.
	MetricsEvery time.Duration `json:"metrics_every,omitempty"`
	// PollEvery is how often the status is checked for a change nothing
	// signalled (report.Config.PollEvery); 0 means cairn-agent's
	// default, report.DefaultSignalledPoll. As in cairn-agent, the
	// config stream and the last error signal their changes.
	PollEvery time.Duration `json:"poll_every,omitempty"`
	// ChurnEvery is how often each agent's status changes while the fleet
	// churns (Fleet.SetChurn): the status-ingest load; 0 means one second.
	ChurnEvery time.Duration `json:"churn_every,omitempty"`
	// QueueMax bounds the on-disk queue; 0 means 10,000 reports.
	QueueMax int `json:"queue_max,omitempty"`
}

// LongestProgressWait is the longest a status report that only moves the
// applied revision waits with these settings: the progress delay
// (cairn-agent's default when 0), or the status re-send (StatusEvery,
// jittered up to +20%), which carries pending progress, when that comes
// first.
func (c ReportConfig) LongestProgressWait() time.Duration {
	d := c.ProgressDelay
	switch {
	case d == 0:
		d = report.DefaultProgressDelay
	case d < 0:
		return 0
	}
	every := c.StatusEvery
	if every <= 0 {
		every = time.Minute
	}
	return min(d, every*6/5)
}

// AgentConfig configures one simulated agent.
type AgentConfig struct {
	// Addr is the control plane's agent API. Required.
	Addr string
	// Dir is the agent's data directory: identity/, cache.db, reports.db.
	// Required.
	Dir string
	// JoinToken enrolls the agent. Required.
	JoinToken string
	// Pin is the CA pin ("sha256:<hex>") that authenticates the control
	// plane at enrollment. Required.
	Pin string
	// Report configures reporting.
	Report ReportConfig
	// Churn, when set and true, gives the status a "loadgen" check that
	// changes at every Agent.churnTick, so that each agent sends one
	// status report per tick: the status-ingest load. Nil means never.
	Churn *atomic.Bool
	// OnApplied is called, on the agent's own goroutine, with the cache's
	// state after each update the agent verified and applied; nil means
	// none.
	OnApplied func(cache.State)
	// Logger; nil discards.
	Logger *slog.Logger
}

// Agent is one simulated agent: enrolled, with its cache and report queue
// open. Run connects it.
type Agent struct {
	cfg      AgentConfig
	log      *slog.Logger
	src      *identity.Source
	cache    *cache.Cache
	syncer   *configsync.Syncer
	queue    *report.Queue
	reporter *report.Reporter

	changed     report.Signal // wakes the reporter: the status may have changed
	tick        atomic.Int64  // churn counter
	reportCalls atomic.Int64  // Report RPCs answered
	streamEnds  atomic.Int64  // config stream sessions that ended while running
	lastErr     report.LastError
}

// Enroll enrolls a new agent with cfg.JoinToken, retrying while the
// control plane is unavailable or busy as cairn-agent does, and opens its
// config cache and report queue.
func Enroll(ctx context.Context, cfg AgentConfig) (*Agent, error) {
	if cfg.Addr == "" || cfg.Dir == "" || cfg.JoinToken == "" || cfg.Pin == "" {
		return nil, errors.New("loadgen: Addr, Dir, JoinToken and Pin are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var src *identity.Source
	for attempt := 0; ; attempt++ {
		var err error
		src, err = identity.Enroll(ctx, identity.EnrollConfig{
			Addr: cfg.Addr, Dir: filepath.Join(cfg.Dir, "identity"), JoinToken: cfg.JoinToken,
			Trust: identity.Trust{Pin: cfg.Pin}, Version: Version,
		})
		if err == nil {
			break
		}
		if !retry.Retryable(err) || attempt >= 10 {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
		if err := wait.Sleep(ctx, retry.Backoff(attempt, maxBackoff)); err != nil {
			return nil, err
		}
	}
	info := src.Info()
	if src.SigningRoot() == nil || info.DataPlaneID == "" {
		return nil, errors.New("loadgen: enrolled without a signing root or data plane; the agent cannot sync config")
	}
	a := &Agent{cfg: cfg, log: log.With("agent_id", info.AgentID), src: src, changed: report.NewSignal()}
	a.lastErr.Changed = a.changed
	c, err := cache.Open(filepath.Join(cfg.Dir, "cache.db"))
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	a.cache = c
	a.syncer, err = configsync.New(configsync.Config{DataPlaneID: info.DataPlaneID, Root: src.SigningRoot(), Cache: c, Logger: a.log,
		TrustBundle: src.UpdateBundle, OnChange: a.changed.Notify})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	qmax := cfg.Report.QueueMax
	if qmax == 0 {
		qmax = 10_000
	}
	a.queue, err = report.OpenQueue(filepath.Join(cfg.Dir, "reports.db"), qmax)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	a.reporter, err = report.New(report.Config{
		Queue: a.queue, Logger: a.log, Status: a.status, Sample: a.sample, Changed: a.changed,
		StatusEvery: cfg.Report.StatusEvery, ProgressDelay: cfg.Report.ProgressDelay,
		MetricsEvery: cfg.Report.MetricsEvery, PollEvery: cfg.Report.PollEvery,
	})
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	return a, nil
}

// ID is the agent id the control plane gave at enrollment.
func (a *Agent) ID() string { return a.src.Info().AgentID }

// DataPlaneID is the agent's data plane.
func (a *Agent) DataPlaneID() string { return a.src.Info().DataPlaneID }

// Revision is the revision the agent's cache holds.
func (a *Agent) Revision() int64 { return a.cache.State().Revision }

// Close closes the cache and the report queue; call it after Run returned.
func (a *Agent) Close() error {
	return errors.Join(a.queue.Close(), a.cache.Close())
}

// Run connects the agent over one mTLS connection and keeps its config
// stream (with the trust bundle) and report delivery going, each reconnecting
// with cairn-agent's backoff, until ctx ends. It returns early only when
// the connection cannot be made at all or the agent is revoked.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := a.src.Dial(a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("loadgen: dial: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	states, stop := a.cache.Watch()
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		for st := range states {
			if a.cfg.OnApplied != nil {
				a.cfg.OnApplied(st)
			}
		}
	})
	wg.Go(func() {
		a.keep(ctx, cancel, whatConfig, func(ctx context.Context) (bool, error) { return a.configSession(ctx, conn) })
	})
	wg.Go(func() {
		a.keep(ctx, cancel, whatReports, func(ctx context.Context) (bool, error) {
			return a.reporter.Deliver(ctx, progressReports{agentv1.NewReportServiceClient(conn), a})
		})
	})
	wg.Go(func() {
		if err := a.reporter.Run(ctx); err != nil {
			a.log.Warn("reporter stopped", "error", err)
		}
	})
	<-ctx.Done()
	stop()
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// The loops' names, in status errors as the daemon names them.
const (
	whatConfig  = "config stream"
	whatReports = "report delivery"
)

// errRevoked ends Run: the control plane refused the agent itself.
var errRevoked = errors.New("loadgen: agent refused by the control plane (revoked or unknown)")

// keep runs session until ctx ends, as the daemon's keepStream does: after
// each end it waits a full-jitter backoff (reset when the session made
// progress), never less than the control plane's retry hint.
func (a *Agent) keep(ctx context.Context, fail context.CancelCauseFunc, what string, session func(context.Context) (bool, error)) {
	for attempt := 0; ; {
		sctx, cancel := context.WithCancel(ctx)
		progress, err := session(sctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if progress {
			attempt = 0
			a.lastErr.Clear(what)
		}
		if err != nil {
			a.lastErr.Set(what, err)
		}
		if status.Code(err) == codes.PermissionDenied {
			fail(fmt.Errorf("%w: %v", errRevoked, err))
			return
		}
		if what == whatConfig {
			a.streamEnds.Add(1)
		}
		delay := retry.Delay(attempt, maxBackoff, err)
		attempt++
		a.log.Debug(what+" ended; reconnecting", "error", err, "in", delay)
		if wait.Sleep(ctx, delay) != nil {
			return
		}
	}
}

func (a *Agent) configSession(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
	before := a.syncer.Stats().Applied
	stream, err := agentv1.NewConfigServiceClient(conn).Stream(ctx)
	if err == nil {
		err = a.syncer.Session(ctx, progressStream{stream, a})
	}
	return a.syncer.Stats().Applied > before, err
}

// progressStream is a config stream whose every received message counts
// as progress, as in the daemon.
type progressStream struct {
	agentv1.ConfigService_StreamClient
	a *Agent
}

func (s progressStream) Recv() (*agentv1.StreamResponse, error) {
	m, err := s.ConfigService_StreamClient.Recv()
	if err == nil {
		s.a.lastErr.Clear(whatConfig)
	}
	return m, err
}

// progressReports counts answered Report calls (status-ingest batches);
// each is progress.
type progressReports struct {
	agentv1.ReportServiceClient
	a *Agent
}

func (c progressReports) Report(ctx context.Context, in *agentv1.ReportRequest, opts ...grpc.CallOption) (*agentv1.ReportResponse, error) {
	resp, err := c.ReportServiceClient.Report(ctx, in, opts...)
	if err == nil {
		c.a.reportCalls.Add(1)
		c.a.lastErr.Clear(whatReports)
	}
	return resp, err
}

// status is the agent's status as cairn-agent makes it (checks
// config_stream, config_fresh and svid), plus a changing "loadgen" check
// while churning.
func (a *Agent) status() *agentv1.AgentStatus {
	st, stats := a.cache.State(), a.syncer.Stats()
	stale := a.syncer.Stale()
	fresh := ""
	if stale {
		fresh = "nothing fresh from the control plane since " + stats.LastFresh.UTC().Format(time.RFC3339)
	}
	checks := []*agentv1.Check{
		{Name: "config_stream", Healthy: stats.Connected, Detail: map[bool]string{true: "connected", false: "disconnected"}[stats.Connected]},
		{Name: "config_fresh", Healthy: !stale, Detail: fresh},
	}
	if svid := a.src.SVID(); svid != nil && len(svid.Certificates) > 0 {
		left := time.Until(svid.Certificates[0].NotAfter)
		checks = append(checks, &agentv1.Check{Name: "svid", Healthy: left > 0,
			Detail: "expires " + svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339)})
	}
	if a.cfg.Churn != nil && a.cfg.Churn.Load() {
		checks = append(checks, &agentv1.Check{Name: "loadgen", Healthy: true, Detail: strconv.FormatInt(a.tick.Load(), 10)})
	}
	lastErr := a.lastErr.Get()
	if rev, reason, detail := a.syncer.LastNack(); rev > st.Revision && lastErr == "" {
		lastErr = fmt.Sprintf("refused revision %d: %s: %s", rev, reason, detail)
	}
	return &agentv1.AgentStatus{
		AppliedRevision: st.Revision, StateHash: st.StateHash, AgentVersion: Version,
		HostVersion: hostVersion, Checks: checks, LastError: lastErr, Stale: stale,
	}
}

// churnTick changes the status's "loadgen" check while churning and wakes
// the reporter to send it.
func (a *Agent) churnTick() {
	a.tick.Add(1)
	a.changed.Notify()
}

// sample is the agent's own metrics, the set cairn-agent reports.
func (a *Agent) sample() []*agentv1.MetricPoint {
	st, stats := a.cache.State(), a.syncer.Stats()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	rs := a.reporter.Stats()
	return []*agentv1.MetricPoint{
		{Name: "cairn_agent_stream_connected", Value: b(stats.Connected)},
		{Name: "cairn_agent_applied_revision", Value: float64(st.Revision)},
		{Name: "cairn_agent_lag_revisions", Value: float64(max(stats.SignedHead-st.Revision, 0))},
		{Name: "cairn_agent_apply_seconds", Value: stats.LastApply.Seconds()},
		{Name: "cairn_agent_cache_bytes", Value: float64(a.cache.Size())},
		{Name: "cairn_agent_updates_applied_total", Value: float64(stats.Applied)},
		{Name: "cairn_agent_updates_refused_total", Value: float64(stats.Nacks)},
		{Name: "cairn_agent_stale", Value: b(a.syncer.Stale())},
		{Name: "cairn_agent_report_queue_length", Value: float64(rs.Queued)},
		{Name: "cairn_agent_reports_dropped_total", Value: float64(rs.Dropped)},
		{Name: "cairn_agent_pushed_points_dropped_total", Value: float64(rs.PushedDropped)},
	}
}

// hostVersion is the OS and, on Linux, the kernel release, read once.
var hostVersion = func() string {
	v := runtime.GOOS + "/" + runtime.GOARCH
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		v += " " + strings.TrimSpace(string(b))
	}
	return v
}()
