package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/cairnhq/cairn/agent/internal/upgrade"
)

// upgradeStateFile is where the upgrader remembers what each cluster
// runs, in the data directory.
const upgradeStateFile = "upgrade.json"

// startUpgrades starts running the upgrade hook from the config cache,
// tracked by wg, when one is configured.
func (d *Daemon) startUpgrades(ctx context.Context, wg *sync.WaitGroup) error {
	if len(d.cfg.UpgradeHook) == 0 {
		return nil
	}
	if d.cache == nil {
		d.log.Warn("no config sync for this identity: not running the upgrade hook")
		return nil
	}
	u, err := upgrade.New(upgrade.Config{Cache: d.cache, Hook: d.cfg.UpgradeHook, Timeout: d.cfg.UpgradeTimeout,
		StateFile: filepath.Join(d.cfg.Dir, upgradeStateFile), Logger: d.log, OnChange: d.changed.Notify})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	d.upgrader = u
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := u.Run(ctx); err != nil {
			d.log.Error("upgrades stopped", "error", err)
		}
	}()
	return nil
}
