package sign

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// KeySetPayloadType is the payload type of a key set envelope. Only the root
// key signs it, and Verify refuses it: a signing key cannot vouch for keys.
const KeySetPayloadType = "application/vnd.cairn.keyset+json"

// Errors of Verify and UpdateKeySet, wrapped with detail; test with
// errors.Is. When an envelope has several signatures that fail for
// different reasons, the error names the most telling one: ErrExpiredKey
// over ErrBadSignature over ErrUnknownKey.
var (
	// ErrBadSignature: a signature by a known key does not verify; the
	// envelope was changed or forged.
	ErrBadSignature = errors.New("bad signature")
	// ErrUnknownKey: no signature names a key in the current key set (or,
	// for a key set, the root).
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrExpiredKey: the envelope is genuinely signed, but by a key outside
	// its validity window at the time of verification, either expired or
	// not yet valid. A key set whose every key has expired gets it too.
	ErrExpiredKey = errors.New("signing key not valid at this time")
	// ErrWrongType: the payload type is not the one the caller expects.
	ErrWrongType = errors.New("wrong payload type")
	// ErrStaleKeySet: the key set's version is not newer than the current
	// one: a replay, or the current set delivered again.
	ErrStaleKeySet = errors.New("stale key set")
	// ErrMalformed: the envelope or key set does not parse or breaks a
	// limit.
	ErrMalformed = errors.New("malformed")
)

// VerificationKey is a public key with its validity window.
type VerificationKey struct {
	// KeyID must be KeyID(PublicKey).
	KeyID     string            `json:"keyid"`
	PublicKey ed25519.PublicKey `json:"public_key"`
	// NotBefore starts the key's validity.
	NotBefore time.Time `json:"not_before"`
	// NotAfter ends the key's validity, including its grace period after
	// rotation; zero means open-ended.
	NotAfter time.Time `json:"not_after"`
}

// ValidAt reports whether k may verify at now: NotBefore ≤ now < NotAfter,
// or NotAfter is zero.
func (k VerificationKey) ValidAt(now time.Time) bool {
	return !now.Before(k.NotBefore) && (k.NotAfter.IsZero() || now.Before(k.NotAfter))
}

// KeySet is the set of signing keys agents accept, versioned.
type KeySet struct {
	// Version grows by one with every change.
	Version  int64             `json:"version"`
	IssuedAt time.Time         `json:"issued_at"`
	Keys     []VerificationKey `json:"keys"`
}

func (ks KeySet) clone() KeySet {
	ks.Keys = slices.Clone(ks.Keys)
	for i := range ks.Keys {
		ks.Keys[i].PublicKey = bytes.Clone(ks.Keys[i].PublicKey)
	}
	return ks
}

// Verifier holds the trusted root public key and the current verified key
// set, and checks envelopes against them. It is safe for concurrent use.
//
// A Verifier keeps its key set in memory only. An agent that restarts should
// persist the last key set envelope it accepted and feed it to
// UpdateKeySet first, so that a replayed older key set, which may name a key
// that has since been retired, is refused after the restart too.
type Verifier struct {
	root   ed25519.PublicKey
	rootID string

	mu  sync.RWMutex
	cur *keySet // never modified; UpdateKeySet swaps it
}

// keySet is a verified KeySet with its keys indexed by id.
type keySet struct {
	set  KeySet
	byID map[string]VerificationKey
}

// NewVerifier returns a Verifier that trusts key sets signed by root and has
// no key set yet, so Verify refuses everything until UpdateKeySet succeeds.
// A root that is not a 32-byte Ed25519 public key makes every UpdateKeySet
// fail with ErrMalformed.
func NewVerifier(root ed25519.PublicKey) *Verifier {
	root = bytes.Clone(root)
	return &Verifier{root: root, rootID: KeyID(root), cur: &keySet{}}
}

// KeySet returns a copy of the current key set; the zero KeySet before the
// first successful UpdateKeySet.
func (v *Verifier) KeySet() KeySet {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.cur.set.clone()
}

// UpdateKeySet verifies a key set envelope and, if it is good, makes it the
// current key set. The envelope must have payload type KeySetPayloadType and
// a signature that names the root's key id and verifies under the root. Its
// payload must parse as a KeySet with a Version greater than the current one
// (ErrStaleKeySet otherwise), at most MaxKeys keys, each a 32-byte Ed25519
// key whose KeyID is KeyID(PublicKey), none repeated, none the root itself,
// none with NotAfter at or before NotBefore. A set whose keys have all
// expired at now is refused with ErrExpiredKey: it could verify nothing and
// would only displace a useful one. An empty set, which revokes every
// signing key, is accepted.
func (v *Verifier) UpdateKeySet(env Envelope, now time.Time) error {
	ks, err := v.checkKeySet(env, now)
	if err != nil {
		return fmt.Errorf("update key set: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur := v.cur.set.Version; ks.set.Version <= cur {
		if ks.set.Version == cur {
			return fmt.Errorf("update key set: %w: version %d is the current one", ErrStaleKeySet, cur)
		}
		return fmt.Errorf("update key set: %w: version %d is older than the current %d", ErrStaleKeySet, ks.set.Version, cur)
	}
	v.cur = ks
	return nil
}

// checkKeySet does everything UpdateKeySet does but the version check, which
// needs the lock.
func (v *Verifier) checkKeySet(env Envelope, now time.Time) (*keySet, error) {
	if env.PayloadType != KeySetPayloadType {
		return nil, fmt.Errorf("%w: %q; want %q", ErrWrongType, env.PayloadType, KeySetPayloadType)
	}
	if len(v.root) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: root key is %d bytes; want %d", ErrMalformed, len(v.root), ed25519.PublicKeySize)
	}
	if len(env.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d signatures, more than %d", ErrMalformed, len(env.Signatures), MaxSignatures)
	}
	msg := PAE(env.PayloadType, env.Payload)
	named, ok := false, false
	for _, s := range env.Signatures {
		if s.KeyID != v.rootID {
			continue
		}
		named = true
		if ed25519.Verify(v.root, msg, s.Sig) {
			ok = true
			break
		}
	}
	switch {
	case !named:
		return nil, fmt.Errorf("%w: key set is not signed by root key %s", ErrUnknownKey, v.rootID)
	case !ok:
		return nil, fmt.Errorf("%w: root key %s", ErrBadSignature, v.rootID)
	}

	var set KeySet
	dec := json.NewDecoder(bytes.NewReader(env.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&set); err != nil {
		return nil, fmt.Errorf("%w: key set: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: key set: data after the key set", ErrMalformed)
	}
	if len(set.Keys) > MaxKeys {
		return nil, fmt.Errorf("%w: key set version %d has %d keys, more than %d", ErrMalformed, set.Version, len(set.Keys), MaxKeys)
	}
	byID := make(map[string]VerificationKey, len(set.Keys))
	live := false
	for i, k := range set.Keys {
		if len(k.PublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: key set key %d is %d bytes; want %d", ErrMalformed, i, len(k.PublicKey), ed25519.PublicKeySize)
		}
		if id := KeyID(k.PublicKey); k.KeyID != id {
			return nil, fmt.Errorf("%w: key set key %d has id %q; its key's id is %s", ErrMalformed, i, k.KeyID, id)
		}
		if _, dup := byID[k.KeyID]; dup {
			return nil, fmt.Errorf("%w: key set lists key %s twice", ErrMalformed, k.KeyID)
		}
		if k.KeyID == v.rootID {
			return nil, fmt.Errorf("%w: key set lists the root key %s as a signing key", ErrMalformed, k.KeyID)
		}
		if !k.NotAfter.IsZero() && !k.NotAfter.After(k.NotBefore) {
			return nil, fmt.Errorf("%w: key set key %s ends (%v) before it starts (%v)", ErrMalformed, k.KeyID, k.NotAfter, k.NotBefore)
		}
		byID[k.KeyID] = k
		live = live || k.NotAfter.IsZero() || now.Before(k.NotAfter)
	}
	if len(set.Keys) > 0 && !live {
		return nil, fmt.Errorf("%w: every key in key set version %d has expired", ErrExpiredKey, set.Version)
	}
	return &keySet{set: set, byID: byID}, nil
}

// Verify checks env against the current key set at time now and returns its
// payload (env.Payload itself, not a copy) and the id of the key that
// verified it.
//
// The payload type must be wantType, which must not be KeySetPayloadType
// (ErrWrongType). At least one signature must name a key in the current set
// that is valid at now and verify under it over PAE(type, payload).
// Signatures by keys the set does not know are ignored when another one
// verifies; alone they get ErrUnknownKey.
func (v *Verifier) Verify(env Envelope, wantType string, now time.Time) (payload []byte, keyID string, err error) {
	if wantType == KeySetPayloadType {
		return nil, "", fmt.Errorf("verify: %w: key sets are checked with UpdateKeySet", ErrWrongType)
	}
	if env.PayloadType != wantType {
		return nil, "", fmt.Errorf("verify: %w: %q; want %q", ErrWrongType, env.PayloadType, wantType)
	}
	if len(env.Signatures) > MaxSignatures {
		return nil, "", fmt.Errorf("verify: %w: %d signatures, more than %d", ErrMalformed, len(env.Signatures), MaxSignatures)
	}
	v.mu.RLock()
	ks := v.cur
	v.mu.RUnlock()

	msg := PAE(env.PayloadType, env.Payload)
	var expired, bad *VerificationKey
	for _, s := range env.Signatures {
		k, ok := ks.byID[s.KeyID]
		if !ok {
			continue
		}
		if !ed25519.Verify(k.PublicKey, msg, s.Sig) {
			bad = &k
			continue
		}
		if !k.ValidAt(now) {
			expired = &k
			continue
		}
		return env.Payload, k.KeyID, nil
	}
	switch {
	case expired != nil:
		return nil, "", fmt.Errorf("verify: %w: key %s is valid from %v until %v, not at %v", ErrExpiredKey, expired.KeyID, expired.NotBefore, expired.NotAfter, now)
	case bad != nil:
		return nil, "", fmt.Errorf("verify: %w: key %s", ErrBadSignature, bad.KeyID)
	default:
		return nil, "", fmt.Errorf("verify: %w: no signature names a key in key set version %d", ErrUnknownKey, ks.set.Version)
	}
}
