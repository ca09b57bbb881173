// Package upgrade brings the data plane's clusters to the product version
// the control plane wants for them. The control plane writes a cluster's
// desired version as a cluster-scoped config document of kind
// cairn.dev/desired-version ({"version": "1.3.0"}), so it arrives as a
// signed delta; the Upgrader runs the operator's upgrade hook for each
// cluster whose version differs, one at a time, and remembers what each
// cluster runs in a state file. Cairn does not know how to upgrade the
// product: the hook does (or, in a demo, pretends to). It must not run
// anything but the configured hook.
package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/hook"
	"github.com/cairnhq/cairn/certs"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// Kind is the document kind holding a cluster's desired version.
const Kind = "cairn.dev/desired-version"

// Defaults.
const (
	DefaultTimeout = 10 * time.Minute
	DefaultRetry   = time.Minute
)

// versionText is what a version may look like before it is put in the
// hook's environment: semver characters only.
var versionText = regexp.MustCompile(`^[0-9A-Za-z.+-]{1,64}$`)

// Config configures an Upgrader.
type Config struct {
	// Cache holds the desired-version documents. Required; not closed.
	Cache *cache.Cache
	// Hook is the upgrade command (argv, no shell). It runs with
	// CAIRN_CLUSTER_ID, CAIRN_TARGET_VERSION and CAIRN_CURRENT_VERSION (""
	// before the first upgrade) in its environment and must exit 0 once
	// the cluster runs the target version. Required.
	Hook []string
	// Timeout bounds one run of the hook; 0 means DefaultTimeout.
	Timeout time.Duration
	// Retry is how long after a failure the same target is tried again
	// (sooner when the desired version changes); 0 means DefaultRetry.
	Retry time.Duration
	// StateFile keeps what each cluster runs across restarts. Required.
	StateFile string
	// OnChange, when set, is called after a run of the hook changed what
	// Clusters returns; it must not block.
	OnChange func()
	// Logger; nil discards.
	Logger *slog.Logger
}

// clusterState is what the Upgrader knows of one cluster.
type clusterState struct {
	Version string `json:"version"`
	Healthy bool   `json:"healthy"`
	Detail  string `json:"detail,omitempty"`
	// Desired is the target last seen; FailedAt when it last failed.
	Desired  string    `json:"desired,omitempty"`
	FailedAt time.Time `json:"failed_at,omitzero"`
}

// Upgrader runs the upgrade hook. Clusters is safe to call at any time.
type Upgrader struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	states map[string]clusterState
}

// New checks cfg and loads the state file.
func New(cfg Config) (*Upgrader, error) {
	if cfg.Cache == nil || len(cfg.Hook) == 0 || cfg.StateFile == "" {
		return nil, errors.New("upgrade: Cache, Hook and StateFile are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Upgrader{cfg: cfg, log: log, states: map[string]clusterState{}}
	b, err := os.ReadFile(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("upgrade: %w", err)
	default:
		if err := json.Unmarshal(b, &u.states); err != nil {
			// Forgetting makes the hook run again for each cluster, which a
			// hook must tolerate anyway (it may be killed half-way).
			log.Warn("upgrade state file unreadable; starting afresh", "file", cfg.StateFile, "error", err)
			u.states = map[string]clusterState{}
		}
	}
	return u, nil
}

// Clusters returns each known cluster's version, health and target, by
// cluster id.
func (u *Upgrader) Clusters() []*agentv1.ClusterVersion {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]*agentv1.ClusterVersion, 0, len(u.states))
	for _, id := range slices.Sorted(maps.Keys(u.states)) {
		st := u.states[id]
		out = append(out, &agentv1.ClusterVersion{ClusterId: id, Version: st.Version, Healthy: st.Healthy,
			Detail: st.Detail, DesiredVersion: st.Desired})
	}
	return out
}

// Run upgrades from the cache as it is, then after every change it
// announces and whenever a failed upgrade is due again, until ctx ends (a
// nil return) or the cache is closed (an error).
func (u *Upgrader) Run(ctx context.Context) error {
	changes, stop := u.cfg.Cache.Watch()
	defer stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		next := u.pass(ctx)
		wait := time.Hour // nothing due: wait for a change
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		retry.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changes:
			if !ok {
				return errors.New("upgrade: cache closed")
			}
		case <-retry.C:
		}
	}
}

// desired reads the desired versions from the cache, by cluster id.
func (u *Upgrader) desired() map[string]string {
	out := map[string]string{}
	for _, d := range u.cfg.Cache.List("") {
		if d.Kind != Kind || d.ScopeType != "cluster" {
			continue
		}
		var body struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(d.Content, &body); err != nil || !versionText.MatchString(body.Version) {
			u.log.Warn("ignoring a desired-version document without a usable version", "cluster_id", d.ScopeId, "name", d.Name)
			continue
		}
		out[d.ScopeId] = body.Version
	}
	return out
}

// pass runs the hook for every cluster not at its desired version whose
// retry is due, and returns when the earliest remaining retry is due (zero
// if none).
func (u *Upgrader) pass(ctx context.Context) time.Time {
	var next time.Time
	want := u.desired()
	for _, id := range slices.Sorted(maps.Keys(want)) {
		target := want[id]
		u.mu.Lock()
		st := u.states[id]
		u.mu.Unlock()
		if st.Version == target && st.Healthy {
			continue
		}
		if st.Desired == target && !st.FailedAt.IsZero() {
			if due := st.FailedAt.Add(u.cfg.Retry); time.Now().Before(due) {
				if next.IsZero() || due.Before(next) {
					next = due
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return next
		}
		st = u.upgrade(ctx, id, st, target)
		if !st.Healthy && ctx.Err() == nil {
			if due := st.FailedAt.Add(u.cfg.Retry); next.IsZero() || due.Before(next) {
				next = due
			}
		}
	}
	return next
}

// upgrade runs the hook for one cluster and records the outcome.
func (u *Upgrader) upgrade(ctx context.Context, id string, st clusterState, target string) clusterState {
	u.log.Info("upgrading cluster", "cluster_id", id, "from", st.Version, "to", target)
	began := time.Now()
	out, err := hook.Run(ctx, u.cfg.Hook, u.cfg.Timeout,
		"CAIRN_CLUSTER_ID="+id, "CAIRN_TARGET_VERSION="+target, "CAIRN_CURRENT_VERSION="+st.Version)
	if ctx.Err() != nil {
		return st // stopping: the next start tries again
	}
	st.Desired = target
	if err != nil {
		st.Healthy, st.FailedAt = false, time.Now()
		st.Detail = fmt.Sprintf("upgrade to %s failed: %v", target, err)
		if out != "" {
			st.Detail += ": " + out
		}
		if len(st.Detail) > 1024 {
			st.Detail = st.Detail[:1024]
		}
		u.log.Warn("upgrade hook failed", "cluster_id", id, "target", target, "error", err, "output", out)
	} else {
		st.Version, st.Healthy, st.Detail, st.FailedAt = target, true, "", time.Time{}
		u.log.Info("cluster upgraded", "cluster_id", id, "version", target, "took", time.Since(began))
	}
	u.mu.Lock()
	u.states[id] = st
	b, _ := json.MarshalIndent(u.states, "", "  ")
	u.mu.Unlock()
	if u.cfg.OnChange != nil {
		u.cfg.OnChange()
	}
	if err := certs.WriteFileAtomic(u.cfg.StateFile, append(b, '\n'), 0o600); err != nil {
		u.log.Error("cannot save upgrade state", "file", u.cfg.StateFile, "error", err)
	}
	return st
}
