package ca

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cairnhq/cairn/certs"
)

// Rotation moves a new CA through prepared → active → retiring → removed,
// with overlaps so that no SVID in use stops verifying:
//
//   - prepared: in the bundle but not signing, so agents learn to trust it
//     (they fetch the bundle whenever they renew their SVID);
//   - active: signs every new SVID;
//   - retiring: no longer signs, still in the bundle until the last SVID it
//     signed has expired; then Prune removes it and its files.
//
// Prepare, Activate and Prune do one step each, now; MaybeRotate does them
// on a schedule.

// Prepare creates a new CA in state prepared, so that it is in the bundle
// before it signs. It fails if a CA is already prepared.
func (a *Authority) Prepare() error {
	unlock, err := a.lockDir()
	if err != nil {
		return fmt.Errorf("prepare CA: %w", err)
	}
	defer unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshLocked(); err != nil {
		return fmt.Errorf("prepare CA: %w", err)
	}
	return a.prepareLocked(a.now())
}

func (a *Authority) prepareLocked(now time.Time) error {
	if c := a.findLocked(statePrepared); c != nil {
		return fmt.Errorf("prepare CA: CA %s is already prepared", c.id)
	}
	c, err := a.newCA(now)
	if err != nil {
		return fmt.Errorf("prepare CA: %w", err)
	}
	c.state = statePrepared
	next, err := a.addCA(a.cas, c)
	if err != nil {
		return fmt.Errorf("prepare CA: %w", err)
	}
	a.cas = next
	a.log.Info("CA prepared", "ca", c.id, "pin", certs.SPKIPin(c.cert), "not_after", c.cert.NotAfter)
	return nil
}

// Activate makes the prepared CA the one that signs, and the active one
// retiring. It fails if no CA is prepared. Unlike MaybeRotate it does not
// wait for the prepared CA to have been published for long: agents that
// have not fetched the bundle since Prepare will not trust new SVIDs.
func (a *Authority) Activate() error {
	unlock, err := a.lockDir()
	if err != nil {
		return fmt.Errorf("activate CA: %w", err)
	}
	defer unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshLocked(); err != nil {
		return fmt.Errorf("activate CA: %w", err)
	}
	return a.activateLocked(a.now())
}

func (a *Authority) activateLocked(now time.Time) error {
	if a.findLocked(statePrepared) == nil {
		return errors.New("activate CA: no CA is prepared")
	}
	var activated, retired *authorityCA
	next := make([]*authorityCA, len(a.cas))
	for i, c := range a.cas {
		switch c.state {
		case statePrepared:
			c = c.clone()
			c.state = stateActive
			c.activatedAt = now
			activated = c
		case stateActive:
			c = c.clone()
			c.state = stateRetiring
			retired = c
		}
		next[i] = c
	}
	sortCAs(next)
	if err := a.writeState(next); err != nil {
		return fmt.Errorf("activate CA: %w", err)
	}
	a.cas = next
	a.log.Info("CA activated", "ca", activated.id, "pin", certs.SPKIPin(activated.cert), "not_after", activated.cert.NotAfter, "retiring_ca", retired.id)
	return nil
}

// Prune removes retiring CAs that no unexpired SVID needs: those whose
// last_svid_expiry has passed or, if they never signed, that were activated
// before now, and those whose own certificate has expired. It deletes their
// files.
func (a *Authority) Prune() error {
	unlock, err := a.lockDir()
	if err != nil {
		return fmt.Errorf("prune CA: %w", err)
	}
	defer unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshLocked(); err != nil {
		return fmt.Errorf("prune CA: %w", err)
	}
	_, err = a.pruneLocked(a.now())
	return err
}

func (a *Authority) pruneLocked(now time.Time) (bool, error) {
	var gone []*authorityCA
	next := slices.DeleteFunc(slices.Clone(a.cas), func(c *authorityCA) bool {
		if c.state != stateRetiring {
			return false
		}
		needed := c.lastSVIDExpiry
		if needed.IsZero() {
			needed = c.activatedAt
		}
		if needed.IsZero() {
			// Not recorded (a hand-edited state file): keep it while it
			// could verify anything.
			needed = c.cert.NotAfter
		}
		if c.cert.NotAfter.Before(needed) {
			needed = c.cert.NotAfter
		}
		if now.After(needed) {
			gone = append(gone, c)
			return true
		}
		return false
	})
	if len(gone) == 0 {
		return false, nil
	}
	for _, c := range gone {
		a.discard = append(a.discard, c.id)
	}
	if err := a.writeState(next); err != nil {
		a.discard = a.discard[:len(a.discard)-len(gone)]
		return false, fmt.Errorf("prune CA: %w", err)
	}
	a.cas = next
	for _, c := range gone {
		if err := a.removeCAFiles(c.id); err != nil {
			// Still listed in discard; the next Open deletes the files.
			return true, fmt.Errorf("prune CA: %w", err)
		}
		a.discard = slices.DeleteFunc(a.discard, func(id string) bool { return id == c.id })
		a.log.Info("CA removed", "ca", c.id, "last_svid_expiry", c.lastSVIDExpiry)
	}
	if err := a.writeState(next); err != nil {
		return true, fmt.Errorf("prune CA: %w", err)
	}
	return true, nil
}

// MaybeRotate takes up changes that other Authorities sharing the
// directory made, does what the rotation schedule calls for now, and
// reports whether the bundle or the signing CA changed since the last
// MaybeRotate (or Open), by this call, by Prepare, Activate or Prune, or by
// another Authority; if so, callers should send the new bundle to agents.
// It may report a change together with an error. Call it periodically; how
// often bounds how long this Authority lags another's rotation (see the
// package doc); a minute is plenty.
//
// The schedule is measured against the active CA's lifetime L (NotAfter −
// NotBefore):
//
//   - at L/2 it prepares the next CA;
//   - at 2L/3 it activates the prepared CA, but only once that has been in
//     the bundle for L/6 (so a late Prepare delays activation). Open
//     requires L ≥ 6×MaxSVIDTTL, and agents renew, fetching the bundle, at
//     least once per SVID lifetime, so by then every agent trusts the new
//     CA;
//   - it activates anyway when the active CA has less than MaxSVIDTTL left:
//     after a long control plane outage an authority that cannot sign is
//     worse than agents that must refetch the bundle;
//   - it prunes retiring CAs whose SVIDs have all expired.
//
// With the defaults (L = 365 days, 24-hour SVIDs) the next CA is prepared
// about 6 months into the active one's life, starts signing about 2 months
// later, and the old CA leaves the bundle a day after that, once its last
// SVID has expired, some 4 months before it would have expired itself.
//
// Of several Authorities sharing the directory that are due at once, the
// first to take the directory lock rotates and the others find the
// rotation done.
func (a *Authority) MaybeRotate() (changed bool, err error) {
	unlock, err := a.lockDir()
	if err != nil {
		return a.report(), fmt.Errorf("rotate CA: %w", err)
	}
	defer unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshLocked(); err != nil {
		return a.reportLocked(), fmt.Errorf("rotate CA: %w", err)
	}
	now := a.now()
	active := a.activeLocked()
	life := active.cert.NotAfter.Sub(active.cert.NotBefore)
	age := now.Sub(active.cert.NotBefore)

	prepared := a.findLocked(statePrepared)
	if prepared == nil && age >= life/2 {
		if err := a.prepareLocked(now); err != nil {
			return a.reportLocked(), err
		}
		prepared = a.findLocked(statePrepared)
	}
	if prepared != nil {
		published := now.Sub(prepared.createdAt)
		due := age >= life*2/3 && published >= life/6
		emergency := active.cert.NotAfter.Sub(now) < a.maxSVIDTTL
		if due || emergency {
			if emergency && !due {
				a.log.Warn("activating CA early: the active CA is about to expire", "active_ca", active.id, "not_after", active.cert.NotAfter)
			}
			if err := a.activateLocked(now); err != nil {
				return a.reportLocked(), err
			}
		}
	}
	_, err = a.pruneLocked(now)
	return a.reportLocked(), err
}

// report is reportLocked for a caller that does not hold mu.
func (a *Authority) report() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reportLocked()
}

// reportLocked reports whether a.cas differs from what the last report
// saw. The caller holds mu.
func (a *Authority) reportLocked() bool {
	changed := !sameCAs(a.cas, a.reported)
	a.reported = a.cas
	return changed
}
