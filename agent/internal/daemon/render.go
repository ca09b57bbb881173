package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/agent/internal/render"
)

// RenderConfig chooses documents to write to files for services that read
// their config from disk (package render).
type RenderConfig struct {
	// Rules choose the documents and files; nil renders nothing. No rule
	// may write inside the agent's data directory.
	Rules []render.Rule
	// ReloadCommand runs after files changed (argv, no shell); nil runs
	// nothing. It needs Rules.
	ReloadCommand []string
	// ReloadTimeout bounds a reload; 0 means render.DefaultReloadTimeout.
	ReloadTimeout time.Duration
}

// renderStateFile is where the renderer records the files it wrote, in
// the data directory.
const renderStateFile = "render.json"

// config returns the render.Config for the daemon's data directory dir.
func (rc RenderConfig) config(dir string) (render.Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return render.Config{}, fmt.Errorf("agent: data directory: %w", err)
	}
	return render.Config{Rules: rc.Rules, ReloadCommand: rc.ReloadCommand, ReloadTimeout: rc.ReloadTimeout,
		StateFile: filepath.Join(abs, renderStateFile)}, nil
}

// check refuses a render config that New would refuse later, or whose
// files would land in the data directory dir, where they could replace the
// agent's key or cache.
func (rc RenderConfig) check(dir string) error {
	if rc.Rules == nil {
		if rc.ReloadCommand != nil {
			return fmt.Errorf("agent: a reload command needs documents to render")
		}
		return nil
	}
	cfg, err := rc.config(dir)
	if err != nil {
		return err
	}
	if err := cfg.Check(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	data := filepath.Dir(cfg.StateFile)
	realData := resolve(data)
	inside := func(path, dir string) bool {
		return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
	}
	for _, r := range rc.Rules {
		// Symlinks are resolved on both sides: the data directory or a
		// rule may reach the same place through one.
		if inside(r.Path, data) || inside(resolve(r.Path), realData) {
			return fmt.Errorf("agent: render %s: %s is inside the data directory %s", r, r.Path, data)
		}
	}
	return nil
}

// resolve returns path with the symlinks of its longest existing prefix
// resolved; what does not exist yet is kept as written.
func resolve(path string) string {
	rest := ""
	for p := path; ; p = filepath.Dir(p) {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(real, rest)
		}
		if filepath.Dir(p) == p {
			return path
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

// startRender starts rendering from the config cache, tracked by wg, when
// rules are configured. It needs the cache, so it warns and renders
// nothing on an agent without config sync.
func (d *Daemon) startRender(ctx context.Context, wg *sync.WaitGroup) error {
	if d.cfg.Render.Rules == nil {
		return nil
	}
	if d.cache == nil {
		d.log.Warn("no config sync for this identity: not rendering files")
		return nil
	}
	cfg, err := d.cfg.Render.config(d.cfg.Dir)
	if err != nil {
		return err
	}
	cfg.Cache, cfg.Logger, cfg.OnPass = d.cache, d.log, d.changed.Notify
	r, err := render.New(cfg)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	d.render.Store(r)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.Run(ctx); err != nil {
			d.log.Error("rendering stopped", "error", err)
		}
	}()
	return nil
}
