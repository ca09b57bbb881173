// Package render writes chosen config documents from the agent's verified
// cache to files, for data-plane services that read their config from
// disk rather than from the local API, and runs a reload command after the
// files change.
//
// It renders from the cache only, at start and after every change the
// cache announces, so it keeps working while the control plane is away. A
// file is replaced by write-temp, fsync, rename and directory fsync, and
// only when its bytes or mode differ, so a reader sees the old file or the
// whole new one and an unchanged config reloads nothing. The reload
// command runs once after each pass that changed something, as a process
// (argv, no shell) with a timeout; a failure is logged, kept in Status and
// retried with backoff.
//
// It must not write anything but the rule paths and its state file, must
// not remove a file it did not write, and must not render a cache that has
// never held config: an empty fresh cache says nothing about what the
// files should hold. It does not verify or change the cache.
package render

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/internal/configstate"
)

// Defaults for Config fields left zero.
const (
	DefaultMode          os.FileMode = 0o644
	DefaultReloadTimeout             = 30 * time.Second
	DefaultMaxRetryDelay             = time.Minute
)

// firstRetryDelay is the wait before the first retry after a failed pass;
// it doubles up to MaxRetryDelay.
const firstRetryDelay = time.Second

// Rule chooses one document and the file it is written to.
type Rule struct {
	// Kind and Name choose the document, e.g. "cairn.dev/ingress" and
	// "main". Required.
	Kind, Name string
	// ClusterID chooses the document scoped to that cluster; "" chooses
	// the one scoped to the agent's data plane.
	ClusterID string
	// Path is the file, an absolute and clean path. Missing parent
	// directories are created 0755. Required.
	Path string
	// Mode is the file's permission bits, at most 0777; 0 means
	// DefaultMode.
	Mode os.FileMode
}

// String names the document the rule chooses, as the agent's --render flag
// does: KIND/NAME, with @CLUSTER_ID for a cluster's document.
func (r Rule) String() string {
	if r.ClusterID != "" {
		return r.Kind + "/" + r.Name + "@" + r.ClusterID
	}
	return r.Kind + "/" + r.Name
}

// key is the cache key of the rule's document in dataPlaneID.
func (r Rule) key(dataPlaneID string) string {
	if r.ClusterID != "" {
		return configstate.Key("cluster", r.ClusterID, r.Kind, r.Name)
	}
	return configstate.Key("data_plane", dataPlaneID, r.Kind, r.Name)
}

// Config configures a Renderer.
type Config struct {
	// Cache is the agent's config cache, read and watched. Required.
	Cache *cache.Cache
	// StateFile is where the renderer records the files it wrote (path and
	// SHA-256) and whether a reload is owed, so that after a restart it
	// still removes only its own files and still runs a reload that a
	// crash or failure left owed. Absolute; written 0600. Required.
	StateFile string
	// Rules choose the documents and files. At least one; no two rules
	// may write the same path.
	Rules []Rule
	// ReloadCommand runs after files changed: the program (a path, or a
	// name looked up in PATH by New) and its arguments, no shell. Its
	// environment is the agent's without CAIRN_AGENT_* variables. nil runs
	// nothing.
	ReloadCommand []string
	// ReloadTimeout bounds a reload; the command's process group is killed
	// when it expires. 0 means DefaultReloadTimeout.
	ReloadTimeout time.Duration
	// MaxRetryDelay caps the backoff between retries of a failed write or
	// reload (starting at one second); 0 means DefaultMaxRetryDelay.
	MaxRetryDelay time.Duration
	// OnPass, when set, is called after each pass, when Status may have
	// changed; it must not block.
	OnPass func()
	// Logger; nil discards.
	Logger *slog.Logger
}

var (
	// kindRE and nameRE are what the admin API accepts for a document's
	// kind and name.
	kindRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// Check checks what an operator chooses: the rules and the reload command
// and timeout. New also requires Cache and StateFile. The errors name the
// rule.
func (cfg Config) Check() error {
	if len(cfg.Rules) == 0 {
		return errors.New("render: no rules")
	}
	paths := map[string]Rule{}
	for _, r := range cfg.Rules {
		switch {
		case r.Kind == "" || len(r.Kind) > 253 || !kindRE.MatchString(r.Kind):
			return fmt.Errorf("render %s: kind %q: want 1-253 letters, digits, '.', '-', '_' or '/', starting and ending with a letter or digit", r, r.Kind)
		case !nameRE.MatchString(r.Name):
			return fmt.Errorf("render %s: name %q: want a DNS label", r, r.Name)
		case strings.ContainsAny(r.ClusterID, "/@= \t\n"):
			return fmt.Errorf("render %s: cluster id %q: not an id", r, r.ClusterID)
		case !filepath.IsAbs(r.Path) || filepath.Clean(r.Path) != r.Path || r.Path == "/":
			return fmt.Errorf("render %s: path %q: want an absolute, clean file path", r, r.Path)
		case r.Mode&^os.ModePerm != 0:
			return fmt.Errorf("render %s: mode %#o: want permission bits only, at most 0777", r, uint32(r.Mode))
		case r.Path == cfg.StateFile:
			return fmt.Errorf("render %s: path %q is the renderer's state file", r, r.Path)
		}
		if other, dup := paths[r.Path]; dup {
			return fmt.Errorf("render %s and %s: both write %s", other, r, r.Path)
		}
		paths[r.Path] = r
	}
	if cfg.ReloadCommand != nil && (len(cfg.ReloadCommand) == 0 || cfg.ReloadCommand[0] == "") {
		return errors.New("render: reload command without a program")
	}
	if cfg.ReloadTimeout < 0 || cfg.MaxRetryDelay < 0 {
		return errors.New("render: negative reload timeout or retry delay")
	}
	return nil
}

// Status is what the renderer has done, for the agent's health and status
// reports.
type Status struct {
	// Revision is the cache revision the last pass rendered; 0 before the
	// first pass or while the cache has never held config.
	Revision int64
	// LastPass is when the last pass ended; zero before the first.
	LastPass time.Time
	// Err is what went wrong in the last pass (writes and the reload,
	// joined); "" when it succeeded. A failed pass is retried.
	Err string
	// LastFailure is when a pass last failed; zero if none has.
	LastFailure time.Time
	// Missing names the rules (see Rule.String) whose document the cache
	// lacked in the last pass; their files are removed if the renderer
	// wrote them, left alone otherwise.
	Missing []string
	// ReloadPending: files changed and the reload command has not yet
	// succeeded since.
	ReloadPending bool
	// Writes, Removals and WriteFailures count file writes, removals and
	// failed writes or removals since New.
	Writes, Removals, WriteFailures int64
	// Reloads and ReloadFailures count reload command runs that succeeded
	// and that failed (exit status, timeout, not startable) since New.
	Reloads, ReloadFailures int64
}

// Renderer renders documents to files. Run runs once; Status is safe to
// call at any time, from any goroutine.
type Renderer struct {
	cfg   Config
	log   *slog.Logger
	rules []Rule

	// Owned by Run.
	state   fileState
	missing map[string]bool
	// counts are the current pass's additions to the status counters,
	// published with the rest of the pass by finish.
	counts Status

	mu     sync.Mutex
	status Status
}

// New checks cfg and resolves the reload command's program.
func New(cfg Config) (*Renderer, error) {
	if cfg.Cache == nil || cfg.StateFile == "" {
		return nil, errors.New("render: Cache and StateFile are required")
	}
	if !filepath.IsAbs(cfg.StateFile) {
		return nil, fmt.Errorf("render: state file %q is not an absolute path", cfg.StateFile)
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.ReloadCommand != nil {
		prog, err := exec.LookPath(cfg.ReloadCommand[0])
		if err != nil {
			return nil, fmt.Errorf("render: reload command: %w", err)
		}
		cfg.ReloadCommand = append([]string{prog}, cfg.ReloadCommand[1:]...)
	}
	if cfg.ReloadTimeout == 0 {
		cfg.ReloadTimeout = DefaultReloadTimeout
	}
	if cfg.MaxRetryDelay == 0 {
		cfg.MaxRetryDelay = DefaultMaxRetryDelay
	}
	rules := slices.Clone(cfg.Rules)
	for i := range rules {
		if rules[i].Mode == 0 {
			rules[i].Mode = DefaultMode
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Renderer{cfg: cfg, log: log, rules: rules, missing: map[string]bool{}}, nil
}

// Status returns what the renderer had done when its last pass ended.
func (r *Renderer) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Missing = slices.Clone(s.Missing)
	return s
}

// Run renders once from the cache as it is, then after every change it
// announces, until ctx ends (a nil return) or the cache is closed (an
// error). A pass that fails is retried after a backoff, or sooner when the
// cache changes. A reload still running when ctx ends is killed and stays
// owed for the next start. Run must not be called twice.
func (r *Renderer) Run(ctx context.Context) error {
	// Subscribe before the first pass, so no change falls between.
	changes, stop := r.cfg.Cache.Watch()
	defer stop()
	r.state = r.loadState()
	r.forgetUnruled()
	r.removeTempFiles()
	var retry *time.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for failures := 0; ; {
		if err := r.pass(ctx); err != nil && ctx.Err() == nil {
			delay := min(firstRetryDelay<<min(failures, 16), r.cfg.MaxRetryDelay)
			failures++
			r.log.Warn("render failed; retrying", "error", err, "in", delay)
			retry = resetTimer(retry, delay)
		} else {
			failures = 0
			if retry != nil {
				retry.Stop()
			}
		}
		var retryC <-chan time.Time
		if failures > 0 {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changes:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("render: config cache closed")
			}
		case <-retryC:
		}
	}
}

// resetTimer returns a timer firing after d, reusing t if it is not nil.
func resetTimer(t *time.Timer, d time.Duration) *time.Timer {
	if t == nil {
		return time.NewTimer(d)
	}
	t.Reset(d)
	return t
}

// pass brings every rule's file in line with the cache and runs the reload
// command if a file changed now or in an earlier pass whose reload did not
// succeed. Writes and the reload go ahead even when another rule's file
// fails: each file holds either its old or its new document, and the
// service should get what could be written.
func (r *Renderer) pass(ctx context.Context) error {
	st := r.cfg.Cache.State()
	var errs []error
	var missing []string
	if st.DataPlaneID == "" {
		r.log.Debug("config cache has never held config; rendering nothing yet")
	} else {
		actions, missed, err := r.plan(st)
		missing = missed
		if err != nil {
			errs = append(errs, err)
		}
		// Owe the reload durably before the first file changes, so a crash
		// between the rename and the reload still reloads on the next start.
		owed := r.state.ReloadPending
		if len(actions) > 0 && r.cfg.ReloadCommand != nil && !owed {
			r.state.ReloadPending = true
			if err := r.saveState(); err != nil {
				r.state.ReloadPending = false
				return r.finish(st, missing, append(errs, err))
			}
		}
		changed := false
		for _, a := range actions {
			if err := r.apply(a, st.Revision); err != nil {
				errs = append(errs, err)
			} else {
				changed = true
			}
		}
		if !changed && !owed && r.state.ReloadPending {
			// Every change failed: nothing new to reload.
			r.state.ReloadPending, r.state.dirty = false, true
		}
		if r.state.dirty {
			if err := r.saveState(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if r.state.ReloadPending && r.cfg.ReloadCommand != nil {
		if err := r.reload(ctx); err != nil {
			errs = append(errs, err)
		} else {
			r.state.ReloadPending = false
			if err := r.saveState(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return r.finish(st, missing, errs)
}

// finish records a pass in the status and returns its errors, joined.
func (r *Renderer) finish(st cache.State, missing []string, errs []error) error {
	err := errors.Join(errs...)
	if r.cfg.OnPass != nil {
		defer r.cfg.OnPass() // after the lock below is released
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Revision = st.Revision
	r.status.LastPass = time.Now()
	r.status.Missing = missing
	r.status.ReloadPending = r.state.ReloadPending
	r.status.Writes += r.counts.Writes
	r.status.Removals += r.counts.Removals
	r.status.WriteFailures += r.counts.WriteFailures
	r.status.Reloads += r.counts.Reloads
	r.status.ReloadFailures += r.counts.ReloadFailures
	r.counts = Status{}
	r.status.Err = ""
	if err != nil {
		r.status.Err = err.Error()
		r.status.LastFailure = r.status.LastPass
	}
	return err
}
