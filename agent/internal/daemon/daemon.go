// Package daemon is cairn-agent's main loop: it enrolls once with a join
// token (or loads the identity it persisted), keeps its SVID renewed and
// its trust bundle current over mTLS, and reconnects with exponential
// backoff and full jitter when the control plane is away. It must not
// import control-plane code.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/agent/internal/health"
	"github.com/cairnhq/cairn/agent/internal/identity"
	"github.com/cairnhq/cairn/agent/internal/localapi"
	"github.com/cairnhq/cairn/agent/internal/render"
	"github.com/cairnhq/cairn/agent/internal/report"
	"github.com/cairnhq/cairn/agent/internal/retry"
	"github.com/cairnhq/cairn/agent/internal/upgrade"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/wait"
)

// Config configures the agent daemon.
type Config struct {
	// Addr is the control plane's agent API address. Required.
	Addr string
	// Dir is the agent's data directory; the identity lives in Dir/identity.
	// Required.
	Dir string
	// JoinToken enrolls the agent when Dir holds no identity yet; ignored
	// once enrolled. Never logged.
	JoinToken string
	// Trust authenticates the control plane at enrollment.
	Trust identity.Trust
	// Version is reported to the control plane.
	Version string
	// SPIFFESocket, when set, takes the SVID from this SPIFFE Workload API
	// (SPIRE) instead of enrolling; Trust.BundleFile must then hold Cairn's
	// CA bundle and TrustDomain name Cairn's trust domain.
	SPIFFESocket string
	// TrustDomain is Cairn's trust domain, needed with SPIFFESocket.
	TrustDomain spiffeid.TrustDomain
	// DataPlaneID and SigningRootFile let an agent with SPIFFESocket sync
	// config: its data plane and the config-signing root public key (PEM).
	// Both or neither; without them such an agent syncs no config.
	DataPlaneID     string
	SigningRootFile string
	// LocalSocket is the Unix socket of the local read API; "" means
	// Dir/agent.sock.
	LocalSocket string
	// HTTPAddr serves /healthz and /metrics; "" serves neither.
	HTTPAddr string
	// Render writes chosen documents to files (render.go); the zero value
	// renders nothing.
	Render RenderConfig
	// Report configures status and metrics reporting (report.go); the zero
	// value uses the defaults.
	Report ReportConfig
	// UpgradeHook, when set, is run to bring each cluster to its desired
	// product version (package upgrade); UpgradeTimeout bounds one run (0
	// means upgrade.DefaultTimeout).
	UpgradeHook    []string
	UpgradeTimeout time.Duration
	// StaleAfter is configsync.Config.StaleAfter: how long without a fresh
	// signed heartbeat before the agent reports itself stale; 0 means
	// configsync.DefaultStaleAfter.
	StaleAfter time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// MaxBackoff caps reconnect delays; 0 means 30 seconds.
	MaxBackoff time.Duration
}

// ErrRevoked is returned by Run when the control plane refuses this
// agent's identity (revoked, or for a SPIRE agent, not mapped); it must be
// enrolled again with a new join token, or mapped.
var ErrRevoked = errors.New("agent refused by the control plane (revoked or unknown); enroll again with a new join token")

// Daemon is a running agent.
type Daemon struct {
	cfg Config
	log *slog.Logger
	// cache is the config cache while Run runs; nil without a syncer.
	cache *cache.Cache
	// render renders files while Run runs; nil when not rendering.
	// Set once rendering starts; the status reporter reads it from its
	// own goroutine.
	render atomic.Pointer[render.Renderer]
	// upgrader runs the upgrade hook; set before reporting starts, nil
	// without a hook.
	upgrader *upgrade.Upgrader
	// reporter reports status and metrics while Run runs; nil without a
	// syncer.
	reporter *report.Reporter
	lastErr  report.LastError
	// changed wakes the reporter when the status may have changed: the
	// syncer, renderer, upgrader, last error and SVID renewals notify it.
	changed report.Signal
}

// New checks cfg.
func New(cfg Config) (*Daemon, error) {
	if cfg.Addr == "" || cfg.Dir == "" {
		return nil, errors.New("agent: Addr and Dir are required")
	}
	if err := cfg.Render.check(cfg.Dir); err != nil {
		return nil, err
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{cfg: cfg, log: log, changed: report.NewSignal()}
	d.lastErr.Changed = d.changed
	return d, nil
}

func (d *Daemon) identityDir() string { return d.cfg.Dir + "/identity" }

func (d *Daemon) localSocket() string {
	if d.cfg.LocalSocket != "" {
		return d.cfg.LocalSocket
	}
	return filepath.Join(d.cfg.Dir, "agent.sock")
}

// Run runs until ctx ends or the agent is revoked.
func (d *Daemon) Run(ctx context.Context) error {
	var src *identity.Source
	if d.cfg.SPIFFESocket != "" {
		var closeSource func() error
		var err error
		src, closeSource, err = identity.FromWorkloadAPI(ctx, identity.WorkloadAPIConfig{
			Socket: d.cfg.SPIFFESocket, Dir: d.identityDir(), TrustDomain: d.cfg.TrustDomain, BundleFile: d.cfg.Trust.BundleFile,
			DataPlaneID: d.cfg.DataPlaneID, SigningRootFile: d.cfg.SigningRootFile,
		})
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer closeSource()
		d.log.Info("agent identity from the SPIFFE Workload API", "spiffe_id", src.Info().SPIFFEID)
	} else {
		var err error
		if src, err = d.identity(ctx); err != nil {
			return err
		}
		info := src.Info()
		d.log.Info("agent identity", "agent_id", info.AgentID, "tenant_id", info.TenantID,
			"data_plane_id", info.DataPlaneID, "spiffe_id", info.SPIFFEID, "svid_expires", src.SVID().Certificates[0].NotAfter)
	}
	// One connection for the config stream (which carries the trust
	// bundle too) and report delivery; closed once they have stopped (Run
	// waits for them before it returns).
	conns := newSharedConn(func() (*grpc.ClientConn, error) { return src.Dial(d.cfg.Addr) })
	defer conns.close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var renewing sync.WaitGroup
	if !src.External() { // SPIRE renews external SVIDs itself
		renewing.Add(1)
		go func() {
			defer renewing.Done()
			if err := d.renewLoop(ctx, src); err != nil {
				cancel(err)
			}
		}()
	}
	syncer, closeCache, err := d.openSync(src)
	if err != nil {
		cancel(nil)
		renewing.Wait()
		return err
	}
	defer closeCache()
	// The config stream carries the trust bundle, except for an agent that
	// syncs no config and one whose SVID comes from SPIRE: it never calls
	// RenewSVID, whose answers would bring the bundle from a control plane
	// too old to send it on the stream, so it keeps a WatchBundle stream.
	followBundle := syncer == nil || src.External()
	// Rendering and upgrades first, so the first status report shows them.
	if err := d.startRender(ctx, &renewing); err != nil {
		cancel(err)
	}
	if err := d.startUpgrades(ctx, &renewing); err != nil {
		cancel(err)
	}
	if syncer != nil {
		// Reports first: the health server and the local API use the
		// reporter.
		closeReports, err := d.startReports(ctx, &renewing, src, conns, syncer, cancel)
		if err != nil {
			cancel(nil)
			renewing.Wait()
			return err
		}
		defer closeReports()
		renewing.Add(1)
		if followBundle {
			renewing.Add(1)
			go func() {
				defer renewing.Done()
				if err := d.configLoop(ctx, conns, syncer); err != nil {
					cancel(err)
				}
			}()
		}
		if d.cfg.HTTPAddr != "" {
			if err := d.serveHealth(ctx, &renewing, src, syncer); err != nil {
				cancel(err)
			}
		}
		local, err := localapi.New(localapi.Config{Socket: d.localSocket(), Cache: d.cache, Stale: syncer.Stale,
			Metrics: d.reporter, Logger: d.log})
		if err != nil {
			cancel(err)
		}
		go func() {
			defer renewing.Done()
			if local == nil {
				return
			}
			if err := local.Run(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	if followBundle {
		err = d.bundleLoop(ctx, src, conns)
	} else {
		err = d.configLoop(ctx, conns, syncer)
	}
	// Stop renewing before returning: a renewal in flight writes the
	// identity directory.
	cancel(nil)
	renewing.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// identity loads the persisted identity or enrolls.
func (d *Daemon) identity(ctx context.Context) (*identity.Source, error) {
	src, err := identity.Load(d.identityDir())
	if err == nil {
		return src, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if d.cfg.JoinToken == "" {
		return nil, errors.New("agent: not enrolled yet and no join token given")
	}
	for attempt := 0; ; attempt++ {
		src, err := identity.Enroll(ctx, identity.EnrollConfig{
			Addr: d.cfg.Addr, Dir: d.identityDir(), JoinToken: d.cfg.JoinToken, Trust: d.cfg.Trust, Version: d.cfg.Version,
		})
		if err == nil {
			d.log.Info("enrolled", "agent_id", src.Info().AgentID)
			return src, nil
		}
		if !retry.Retryable(err) {
			return nil, fmt.Errorf("agent: %w", err)
		}
		delay := d.backoff(attempt)
		d.log.Warn("enrollment failed; retrying", "error", err, "in", delay)
		if err := wait.Sleep(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// renewLoop renews the SVID when half its lifetime remains (±10%). Each
// renewal dials afresh: the control plane refuses calls on a connection
// whose handshake SVID has expired, and long-lived connections outlive
// the SVID they opened with.
//
// A renewal does not replace the shared connection (sharedConn): the
// streams on it keep working after its handshake SVID expires (the control
// plane refuses only new calls), and replacing it at each renewal would end
// them all half an SVID lifetime before anything needs it. It is replaced
// when a call on it is refused as unauthenticated.
func (d *Daemon) renewLoop(ctx context.Context, src *identity.Source) error {
	renew := func() error {
		conn, err := src.Dial(d.cfg.Addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		return src.Renew(ctx, agentv1.NewIdentityServiceClient(conn))
	}
	for {
		at := identity.RenewAt(src.SVID().Certificates[0])
		if err := wait.Sleep(ctx, time.Until(at)); err != nil {
			return nil
		}
		for attempt := 0; ; attempt++ {
			err := renew()
			if err == nil {
				d.log.Info("SVID renewed", "expires", src.SVID().Certificates[0].NotAfter)
				d.changed.Notify() // the status's svid check
				break
			}
			if status.Code(err) == codes.PermissionDenied {
				return ErrRevoked
			}
			// Retry sooner as expiry nears, but never in a tight loop, also
			// once the SVID has expired: at least a tenth of its lifetime,
			// at most a second.
			leaf := src.SVID().Certificates[0]
			floor := min(time.Second, leaf.NotAfter.Sub(leaf.NotBefore)/10)
			delay := max(min(d.backoff(attempt), time.Until(leaf.NotAfter)/10+time.Second), floor)
			d.log.Warn("SVID renewal failed; retrying", "error", err, "in", delay)
			if err := wait.Sleep(ctx, delay); err != nil {
				return nil
			}
		}
	}
}

// bundleLoop keeps a WatchBundle stream open, installing each bundle it
// sends: for an agent that syncs no config or whose SVID comes from SPIRE
// (the config stream carries the bundle otherwise).
func (d *Daemon) bundleLoop(ctx context.Context, src *identity.Source, conns *sharedConn) error {
	return d.keepStream(ctx, conns, "control plane stream", func(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
		stream, err := agentv1.NewIdentityServiceClient(conn).WatchBundle(ctx, &agentv1.WatchBundleRequest{})
		progress := false
		for err == nil {
			var msg *agentv1.WatchBundleResponse
			if msg, err = stream.Recv(); err == nil {
				progress = true
				madeProgress(ctx)
				if uerr := src.UpdateBundle(msg.Bundle); uerr != nil {
					d.log.Warn("ignoring trust bundle", "error", uerr)
				}
			}
		}
		return progress, err
	})
}

// keepStream runs session on the agent's shared mTLS connection (conns)
// until ctx ends, reconnecting with backoff (reset once a session made
// progress; at least the control plane's retry hint when it refused the
// stream for load), and on a new connection, so with the current SVID,
// when the old one was refused as unauthenticated. A refusal of the agent
// itself ends it with ErrRevoked.
func (d *Daemon) keepStream(ctx context.Context, conns *sharedConn, what string,
	session func(context.Context, *grpc.ClientConn) (progress bool, err error)) error {
	for attempt := 0; ; {
		conn, err := conns.get()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agent: dial %s: %w", d.cfg.Addr, err)
		}
		sctx, cancel := context.WithCancel(context.WithValue(ctx, progressKey{}, func() { d.lastErr.Clear(what) }))
		progress, err := session(sctx, conn)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if progress {
			attempt = 0
			d.lastErr.Clear(what)
		}
		if err != nil {
			d.lastErr.Set(what, err)
		}
		switch status.Code(err) {
		case codes.PermissionDenied:
			return fmt.Errorf("%w: %s", ErrRevoked, status.Convert(err).Message())
		case codes.Unauthenticated:
			// The connection's handshake SVID has expired. A new
			// connection presents the current one; closing this one ends
			// the other loops' streams on it too, and they reconnect,
			// after their own backoff, on the new one. The next turn's
			// get returns the new connection (or the dial's error).
			_, _ = conns.replace(conn)
		}
		delay := d.retryDelay(attempt, err)
		attempt++
		d.log.Warn(what+" ended; reconnecting", "error", err, "in", delay)
		if err := wait.Sleep(ctx, delay); err != nil {
			return nil
		}
	}
}

// openSync opens the config cache and the stream syncer. Agents without a
// signing root or data plane (SPIRE agents, for now) run without one.
func (d *Daemon) openSync(src *identity.Source) (*configsync.Syncer, func(), error) {
	info := src.Info()
	if src.SigningRoot() == nil || info.DataPlaneID == "" {
		d.log.Warn("no signing root or data plane in this identity: config is not synced")
		return nil, func() {}, nil
	}
	c, err := cache.Open(filepath.Join(d.cfg.Dir, "cache.db"))
	var corrupt *cache.CorruptError
	if errors.As(err, &corrupt) {
		d.log.Error("config cache was corrupt; starting afresh and asking for a snapshot", "reason", corrupt.Reason, "moved_to", corrupt.MovedTo)
	} else if err != nil {
		return nil, nil, fmt.Errorf("agent: config cache: %w", err)
	}
	st := c.State()
	d.log.Info("config cache", "revision", st.Revision, "state_hash", st.StateHash, "documents", len(c.List("")))
	cfg := configsync.Config{DataPlaneID: info.DataPlaneID, Root: src.SigningRoot(), Cache: c,
		StaleAfter: d.cfg.StaleAfter, Logger: d.log, OnChange: d.changed.Notify}
	if !src.External() { // see Run: a SPIRE agent follows the bundle with WatchBundle
		cfg.TrustBundle = src.UpdateBundle
	}
	s, err := configsync.New(cfg)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	d.cache = c
	return s, func() { c.Close() }, nil
}

// configLoop keeps a config stream open for the syncer.
func (d *Daemon) configLoop(ctx context.Context, conns *sharedConn, syncer *configsync.Syncer) error {
	return d.keepStream(ctx, conns, "config stream", func(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
		before := syncer.Stats().Applied
		stream, err := agentv1.NewConfigServiceClient(conn).Stream(ctx)
		if err == nil {
			err = syncer.Session(ctx, progressStream{stream})
		}
		return syncer.Stats().Applied > before, err
	})
}

// serveHealth starts /healthz and /metrics on HTTPAddr, tracked by wg.
func (d *Daemon) serveHealth(ctx context.Context, wg *sync.WaitGroup, src *identity.Source, syncer *configsync.Syncer) error {
	l, err := net.Listen("tcp", d.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("agent: health listener: %w", err)
	}
	srv, err := health.New(health.Config{Listener: l, Logger: d.log, State: func() health.Snapshot {
		st, stats := d.cache.State(), syncer.Stats()
		var expiry time.Time
		if svid := src.SVID(); svid != nil && len(svid.Certificates) > 0 {
			expiry = svid.Certificates[0].NotAfter
		}
		rs := d.reporter.Stats()
		return health.Snapshot{AppliedRevision: st.Revision, CacheBytes: d.cache.Size(), Applied: stats.Applied,
			Nacks: stats.Nacks, LastFresh: stats.LastFresh, Stale: syncer.Stale(), SVIDExpiry: expiry,
			Connected: stats.Connected, Lag: max(stats.SignedHead-st.Revision, 0),
			ReportsQueued: rs.Queued, ReportsDelivered: rs.Delivered, ReportsDropped: rs.Dropped}
	}})
	if err != nil {
		l.Close()
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Run(ctx); err != nil {
			d.log.Warn("health server", "error", err)
		}
	}()
	return nil
}
