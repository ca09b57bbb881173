package daemon

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/agent/internal/identity"
	"github.com/cairnhq/cairn/agent/internal/render"
)

// TestStatusReadsRendererRaceFree wires reports and rendering in the
// order Run does: startReports starts Reporter.Run, whose first poll calls
// d.status at once, and d.status reads d.render; then startRender writes
// d.render, with no synchronization. Run it with -race to see the data
// race (without -race the only visible effect is a first status without
// the render check).
func TestStatusReadsRendererRaceFree(t *testing.T) {
	f := startFakeCP(t)
	cfg, _ := config(t, f, f.newToken())
	out := filepath.Join(t.TempDir(), "out", "ingress.json")
	cfg.Render = RenderConfig{Rules: []render.Rule{{Kind: "cairn.dev/ingress", Name: "main", Path: out}}}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	src, err := identity.Enroll(ctx, identity.EnrollConfig{Addr: cfg.Addr, Dir: d.identityDir(), JoinToken: cfg.JoinToken,
		Trust: cfg.Trust, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.Open(filepath.Join(cfg.Dir, "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	root, _, _ := ed25519.GenerateKey(nil)
	syncer, err := configsync.New(configsync.Config{DataPlaneID: "dp-1", Root: root, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	d.cache = c
	conns := newSharedConn(func() (*grpc.ClientConn, error) { return src.Dial(cfg.Addr) })
	defer conns.close()
	var wg sync.WaitGroup
	closeReports, err := d.startReports(ctx, &wg, src, conns, syncer, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.startRender(ctx, &wg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	closeReports()
	c.Close()
}
