package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/agent/internal/identity"
	"github.com/cairnhq/cairn/agent/internal/report"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// ReportConfig configures status and metrics reporting (package report).
type ReportConfig struct {
	// QueueMax bounds the on-disk report queue; 0 means 10,000 reports.
	QueueMax int
	// StatusEvery is how often an unchanged status is re-sent; 0 means one
	// minute.
	StatusEvery time.Duration
	// ProgressDelay is report.Config.ProgressDelay: at most how long a
	// status that changed only in its applied revision and state hash
	// waits; 0 means report.DefaultProgressDelay, negative means no wait.
	ProgressDelay time.Duration
	// MetricsEvery is how often metrics are batched; 0 means 30 seconds.
	MetricsEvery time.Duration
}

// reportQueueFile is the report queue in the data directory.
const reportQueueFile = "reports.db"

// startReports opens the report queue and starts the reporter and its
// delivery on the shared mTLS connection, tracked by wg.
func (d *Daemon) startReports(ctx context.Context, wg *sync.WaitGroup, src *identity.Source, conns *sharedConn, syncer *configsync.Syncer,
	fail func(error)) (func(), error) {
	max := d.cfg.Report.QueueMax
	if max == 0 {
		max = 10_000
	}
	q, err := report.OpenQueue(filepath.Join(d.cfg.Dir, reportQueueFile), max)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	r, err := report.New(report.Config{
		Queue: q, Logger: d.log, Changed: d.changed,
		StatusEvery: d.cfg.Report.StatusEvery, ProgressDelay: d.cfg.Report.ProgressDelay, MetricsEvery: d.cfg.Report.MetricsEvery,
		Status: func() *agentv1.AgentStatus { return d.status(src, syncer) },
		Sample: func() []*agentv1.MetricPoint { return d.sample(syncer) },
	})
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	d.reporter = r
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := r.Run(ctx); err != nil {
			fail(err)
		}
	}()
	go func() {
		defer wg.Done()
		err := d.keepStream(ctx, conns, "report delivery", func(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
			return r.Deliver(ctx, progressReports{agentv1.NewReportServiceClient(conn)})
		})
		if err != nil {
			fail(err)
		}
	}()
	return func() { q.Close() }, nil
}

// status is the agent's status report: what it applied, how fresh it is,
// and its local checks.
func (d *Daemon) status(src *identity.Source, syncer *configsync.Syncer) *agentv1.AgentStatus {
	st, stats := d.cache.State(), syncer.Stats()
	stale := syncer.Stale()
	checks := []*agentv1.Check{
		{Name: "config_stream", Healthy: stats.Connected, Detail: map[bool]string{true: "connected", false: "disconnected"}[stats.Connected]},
		// No time while fresh: it moves with every heartbeat, and a status
		// that changes each heartbeat would be re-sent each heartbeat.
		{Name: "config_fresh", Healthy: !stale, Detail: staleDetail(stale, stats.LastFresh)},
	}
	if svid := src.SVID(); svid != nil && len(svid.Certificates) > 0 {
		left := time.Until(svid.Certificates[0].NotAfter)
		checks = append(checks, &agentv1.Check{Name: "svid", Healthy: left > 0,
			Detail: "expires " + svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339)})
	}
	if r := d.render.Load(); r != nil {
		rs := r.Status()
		checks = append(checks, &agentv1.Check{Name: "render", Healthy: rs.Err == "" && !rs.ReloadPending, Detail: rs.Err})
	}
	lastErr := d.lastErr.Get()
	if rev, reason, detail := syncer.LastNack(); rev > st.Revision && lastErr == "" {
		lastErr = fmt.Sprintf("refused revision %d: %s: %s", rev, reason, detail)
	}
	out := &agentv1.AgentStatus{
		AppliedRevision: st.Revision, StateHash: st.StateHash, AgentVersion: d.cfg.Version,
		HostVersion: hostVersion(), Checks: checks, LastError: lastErr, Stale: stale,
	}
	if d.upgrader != nil {
		out.Clusters = d.upgrader.Clusters()
	}
	return out
}

func staleDetail(stale bool, lastFresh time.Time) string {
	if !stale {
		return ""
	}
	return "nothing fresh from the control plane since " + lastFresh.UTC().Format(time.RFC3339)
}

// sample is the agent's own metrics.
func (d *Daemon) sample(syncer *configsync.Syncer) []*agentv1.MetricPoint {
	st, stats := d.cache.State(), syncer.Stats()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	out := []*agentv1.MetricPoint{
		{Name: "cairn_agent_stream_connected", Value: b(stats.Connected)},
		{Name: "cairn_agent_applied_revision", Value: float64(st.Revision)},
		{Name: "cairn_agent_lag_revisions", Value: float64(max(stats.SignedHead-st.Revision, 0))},
		{Name: "cairn_agent_apply_seconds", Value: stats.LastApply.Seconds()},
		{Name: "cairn_agent_cache_bytes", Value: float64(d.cache.Size())},
		{Name: "cairn_agent_updates_applied_total", Value: float64(stats.Applied)},
		{Name: "cairn_agent_updates_refused_total", Value: float64(stats.Nacks)},
		{Name: "cairn_agent_stale", Value: b(syncer.Stale())},
	}
	if d.reporter != nil {
		rs := d.reporter.Stats()
		out = append(out,
			&agentv1.MetricPoint{Name: "cairn_agent_report_queue_length", Value: float64(rs.Queued)},
			&agentv1.MetricPoint{Name: "cairn_agent_reports_dropped_total", Value: float64(rs.Dropped)},
			&agentv1.MetricPoint{Name: "cairn_agent_pushed_points_dropped_total", Value: float64(rs.PushedDropped)})
	}
	return out
}

// hostVersion is the OS and, on Linux, the kernel release.
func hostVersion() string {
	v := runtime.GOOS + "/" + runtime.GOARCH
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		v += " " + strings.TrimSpace(string(b))
	}
	return v
}

// progressKey holds, in a session's context, what keepStream does when
// the session makes progress: it clears the error that ended the previous
// session, at once rather than when this (healthy, long) session ends.
type progressKey struct{}

// madeProgress tells keepStream that the session of ctx made progress.
func madeProgress(ctx context.Context) {
	if f, ok := ctx.Value(progressKey{}).(func()); ok {
		f()
	}
}

// progressStream is a config stream whose every received message counts
// as progress.
type progressStream struct {
	agentv1.ConfigService_StreamClient
}

func (s progressStream) Recv() (*agentv1.StreamResponse, error) {
	m, err := s.ConfigService_StreamClient.Recv()
	if err == nil {
		madeProgress(s.Context())
	}
	return m, err
}

// progressReports is a report client whose every acknowledged batch
// counts as progress.
type progressReports struct {
	agentv1.ReportServiceClient
}

func (c progressReports) Report(ctx context.Context, in *agentv1.ReportRequest, opts ...grpc.CallOption) (*agentv1.ReportResponse, error) {
	resp, err := c.ReportServiceClient.Report(ctx, in, opts...)
	if err == nil {
		madeProgress(ctx)
	}
	return resp, err
}
