package signer

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"time"

	"github.com/cairnhq/cairn/certs/sign"
)

// Rotation moves a signing key through next → active → retired → pruned:
//
//   - next: in the key set but not signing, so that agents, which fetch the
//     key set at least once per Grace, know it before it signs;
//   - active: signs every new envelope;
//   - retired: no longer signs; in the key set with NotAfter = retirement +
//     Grace, so envelopes it signed keep verifying for Grace;
//   - pruned: out of the key set and its file deleted, once NotAfter has
//     passed.
//
// Every change to the key set raises its version by one.

// Rotate makes a new active signing key now, retires the active one with
// NotAfter = now + Grace and drops a published next key, which never signed.
// It also prunes expired keys. The new key is on disk before it signs.
//
// Unlike MaybeRotate it does not publish the new key first: agents verify
// its envelopes only once they have fetched the new key set. Use it when
// the active key must stop signing at once. Other Signers sharing the
// directory keep signing with the old key until their next MaybeRotate.
func (s *Signer) Rotate() error {
	unlock, err := s.lockDir()
	if err != nil {
		return fmt.Errorf("rotate signing key: %w", err)
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(); err != nil {
		return fmt.Errorf("rotate signing key: %w", err)
	}
	now := s.now()
	cur := s.cur
	nk, err := newSigningKey(now)
	if err != nil {
		return fmt.Errorf("rotate signing key: %w", err)
	}
	nk.state = stateActive
	nk.activatedAt = now
	next := &ring{keys: []*signingKey{nk}, version: cur.version + 1, issuedAt: now}
	var retired *signingKey
	for _, k := range s.prune(cur.keys, now) {
		switch k.state {
		case stateActive:
			retired = s.retire(k, now)
			next.keys = append(next.keys, retired)
		case stateRetired:
			next.keys = append(next.keys, k)
		}
	}
	if len(next.keys) > sign.MaxKeys {
		return fmt.Errorf("rotate signing key: the key set would hold %d keys, more than %d; wait for rotated-out keys to pass their grace period", len(next.keys), sign.MaxKeys)
	}
	if err := s.commit(next, nk); err != nil {
		return fmt.Errorf("rotate signing key: %w", err)
	}
	s.log.Info("signing key rotated", "key_id", nk.id, "retired_key_id", retired.id, "retired_until", retired.notAfter, "key_set_version", next.version)
	return nil
}

// MaybeRotate takes up changes that other Signers sharing the directory
// made, does what the rotation schedule calls for now, and reports whether
// the key set or the active key changed since the last MaybeRotate (or
// Open), by this call, an earlier Rotate or another Signer; if so, callers
// should send the new KeySetEnvelope to agents. The version grows with
// every change. Call it periodically, at least a few times per Grace: how
// often bounds how long this Signer lags another's rotation (see the
// package doc); a minute is plenty. An error reports no change; the next
// successful call reports it.
//
// The schedule is measured from the active key's activation:
//
//   - at KeyTTL − Grace it publishes the next key;
//   - at KeyTTL it activates the next key, but only once that has been
//     published for Grace (so a late publication delays activation, and the
//     active key keeps signing meanwhile), and retires the active one until
//     now + Grace;
//   - it prunes retired keys whose NotAfter has passed.
//
// An agent that fetches the key set at least once per Grace therefore
// always knows the key that signs, and an envelope stays verifiable for at
// least Grace after it was signed. With the defaults (30 days, 7 days) a
// key set holds at most three keys.
//
// Of several Signers sharing the directory that are due at once, the first
// to take the directory lock rotates and the others find the rotation done.
func (s *Signer) MaybeRotate() (changed bool, err error) {
	unlock, err := s.lockDir()
	if err != nil {
		return false, fmt.Errorf("rotate signing key: %w", err)
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(); err != nil {
		return false, fmt.Errorf("rotate signing key: %w", err)
	}
	now := s.now()
	cur := s.cur
	keys := s.prune(cur.keys, now)
	pruned := len(keys) != len(cur.keys)

	active, pending := cur.active(), cur.find(stateNext)
	age := now.Sub(active.activatedAt)
	var added, activated, retired *signingKey
	switch {
	case pending == nil && age >= s.keyTTL-s.grace:
		if len(keys) >= sign.MaxKeys {
			s.log.Warn("not publishing the next signing key: the key set is full", "keys", len(keys), "active_key_id", active.id)
			break
		}
		added, err = newSigningKey(now)
		if err != nil {
			return false, fmt.Errorf("publish signing key: %w", err)
		}
		added.state = stateNext
		keys = append([]*signingKey{added}, keys...)
	case pending != nil && age >= s.keyTTL && now.Sub(pending.notBefore) >= s.grace:
		for i, k := range keys {
			switch k.state {
			case stateNext:
				activated = k.clone()
				activated.state = stateActive
				activated.activatedAt = now
				keys[i] = activated
			case stateActive:
				retired = s.retire(k, now)
				keys[i] = retired
			}
		}
	}
	if !pruned && added == nil && activated == nil {
		return s.report(), nil
	}
	next := &ring{keys: keys, version: cur.version + 1, issuedAt: now}
	if err := s.commit(next, added); err != nil {
		return false, fmt.Errorf("rotate signing key: %w", err)
	}
	switch {
	case added != nil:
		s.log.Info("signing key published", "key_id", added.id, "active_key_id", active.id, "key_set_version", next.version)
	case activated != nil:
		s.log.Info("signing key activated", "key_id", activated.id, "retired_key_id", retired.id, "retired_until", retired.notAfter, "key_set_version", next.version)
	}
	return s.report(), nil
}

// report reports whether s.cur differs from what the last report saw. The
// caller holds mu.
func (s *Signer) report() bool {
	changed := !s.cur.same(s.reported)
	s.reported = s.cur
	return changed
}

// prune returns keys without the retired ones whose NotAfter has passed at
// now, in a new slice.
func (s *Signer) prune(keys []*signingKey, now time.Time) []*signingKey {
	return slices.DeleteFunc(slices.Clone(keys), func(k *signingKey) bool {
		return k.state == stateRetired && !now.Before(k.notAfter)
	})
}

// retire returns a retired copy of the active key k, valid for Grace from
// now. A clock that went back before k was published must not make its
// window empty.
func (s *Signer) retire(k *signingKey, now time.Time) *signingKey {
	r := k.clone()
	r.state = stateRetired
	r.notAfter = later(now, k.notBefore).Add(s.grace)
	return r
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// newSigningKey makes a key published at now; the caller sets its state.
func newSigningKey(now time.Time) (*signingKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &signingKey{
		id:        sign.KeyID(key.Public().(ed25519.PublicKey)),
		key:       key,
		notBefore: now,
	}, nil
}
