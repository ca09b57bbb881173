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
	for _, r := range rc.Rules {
		if r.Path == data || strings.HasPrefix(r.Path, data+string(filepath.Separator)) {
			return fmt.Errorf("agent: render %s: %s is inside the data directory %s", r, r.Path, data)
		}
	}
	return nil
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
	cfg.Cache, cfg.Logger = d.cache, d.log
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
