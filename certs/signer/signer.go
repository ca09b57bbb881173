// Package signer is the control plane's custody of the keys that sign
// configuration deltas: a root key, which signs only key sets, and Ed25519
// signing keys, which sign deltas and are rotated on a schedule. It keeps
// them in a directory and hands out signed envelopes in the format of
// package sign.
//
// Only the control plane may link this package. Agents verify with
// certs/sign and hold the root's public key alone; they never see a private
// key. The signing keys are not the CA's keys (certs/ca) and the two must
// not be mixed.
//
// # Several replicas
//
// Control-plane replicas may share the directory (a shared volume). Every
// change to it (creating the keys at the first Open, Rotate, MaybeRotate)
// holds an exclusive lock on the directory (certs.LockDir) and starts by
// reading the state file again, taking up whatever another Signer wrote.
// So replicas opening an empty directory at once make one root, not one
// each; two replicas due to rotate make one new key, not two; and no
// replica writes over another's change.
//
// Between changes a Signer works from memory: it signs with the key that
// was active when it last read or wrote the directory, and publishes that
// key set. It learns of another replica's rotation at its next MaybeRotate,
// so it lags by at most the interval between MaybeRotate calls. That lag
// is harmless while it is much shorter than Grace, because on both sides
// of an activation both keys are in every replica's key set for Grace: the
// next key is published Grace before it signs (a replica that has read the
// directory once since then has it), and the retired key stays valid for
// Grace after it stopped signing. Agents accept a signature by any key in
// the key set they hold, so an envelope signed by either replica verifies
// with the key set of either; one a lagging replica signs with the retired
// key verifies for Grace less the lag. Rotate skips the publication and so
// has no such margin on its own; it is for emergencies.
package signer

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cairnhq/cairn/certs/sign"
)

const (
	defaultKeyTTL = 30 * 24 * time.Hour
	defaultGrace  = 7 * 24 * time.Hour
)

// Config configures a Signer.
type Config struct {
	// Dir holds the root key, the signing keys, the state file and a lock
	// file. It is required, created with mode 0700 if missing, and refused
	// if group or others may write to it. Several processes may share it
	// (see the package doc). Private keys are written 0600 as PKCS#8 PEM
	// and never logged.
	Dir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// KeyTTL is how long a signing key signs before MaybeRotate replaces
	// it; 0 means 30 days.
	KeyTTL time.Duration
	// Grace is how long a rotated-out key stays valid for verification,
	// and also how long MaybeRotate publishes the next key before it signs;
	// 0 means 7 days. Agents must fetch the key set at least once per Grace
	// to keep verifying new envelopes across a scheduled rotation.
	Grace time.Duration
	// Logger receives key lifecycle events, with key ids and never key
	// material; nil discards them.
	Logger *slog.Logger
}

// Signer signs envelopes with the active signing key and key sets with the
// root key, and rotates the signing key. All methods are safe for
// concurrent use. Every change is on disk before it is visible, so a key
// that has signed anything survives a crash.
type Signer struct {
	dir    string
	keyTTL time.Duration
	grace  time.Duration
	now    func() time.Time
	log    *slog.Logger

	root   ed25519.PrivateKey // fixed after Open
	rootID string

	// dirMu orders this Signer's changes to dir, and the directory lock
	// (certs.LockDir) orders them with other processes'. A change takes
	// dirMu, then the directory lock, then mu (see lockDir).
	dirMu sync.Mutex

	mu  sync.RWMutex
	cur *ring // never modified; a change builds a new one, persists it, then swaps it in
	// The fields below change only with the directory lock and mu held.

	// discard lists key ids whose files, if any, are garbage: a key being
	// added or pruned when the process stopped. It is written into the
	// state file so that Open can tell them from files the state lost.
	discard []string
	// stateData is the state file as this Signer last read or wrote it,
	// nil after a failed write. A change that finds other bytes on disk
	// loads them first.
	stateData []byte
	// reported is the ring as of the last MaybeRotate, or Open, so that
	// MaybeRotate reports a change whoever made it.
	reported *ring
}

// ring is the signing keys and the version of the key set they make.
type ring struct {
	keys     []*signingKey // newest first; entries are not modified in place
	version  int64
	issuedAt time.Time

	// keySetEnv is the key set signed by the root key, made once: every
	// config stream sends it at its start and checks it at each heartbeat.
	keySetOnce sync.Once
	keySetEnv  sign.Envelope
}

// keyState is where a signing key is in its life. All states are in the
// key set.
type keyState string

const (
	stateNext    keyState = "next"    // published, so agents learn it, but not signing yet
	stateActive  keyState = "active"  // signs; exactly one
	stateRetired keyState = "retired" // verifies until notAfter, then pruned
)

type signingKey struct {
	id          string
	key         ed25519.PrivateKey
	state       keyState
	notBefore   time.Time // when it was published
	activatedAt time.Time // zero while next
	notAfter    time.Time // zero unless retired
}

func (k *signingKey) clone() *signingKey {
	n := *k
	return &n
}

func (k *signingKey) public() ed25519.PublicKey {
	return k.key.Public().(ed25519.PublicKey)
}

// Open loads the signer in cfg.Dir, or creates one with a new root key and
// a first signing key if Dir is empty or missing; of several processes
// opening an empty Dir at once, one creates the keys and the others load
// them. It refuses key files that group or others can access, key files
// the state file does not list, and a state file that disagrees with the
// keys next to it.
func Open(cfg Config) (*Signer, error) {
	if cfg.Dir == "" {
		return nil, errors.New("signer: Config.Dir is required")
	}
	s := &Signer{
		dir:    cfg.Dir,
		keyTTL: cfg.KeyTTL,
		grace:  cfg.Grace,
		now:    cfg.Now,
		log:    cfg.Logger,
	}
	if s.keyTTL == 0 {
		s.keyTTL = defaultKeyTTL
	}
	if s.grace == 0 {
		s.grace = defaultGrace
	}
	if s.keyTTL < 0 || s.grace < 0 {
		return nil, errors.New("signer: negative KeyTTL or Grace")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.reported = s.cur
	return s, nil
}

// RootPublicKey returns the root's public key, which agents get at
// enrollment and verify key sets with.
func (s *Signer) RootPublicKey() ed25519.PublicKey {
	return bytes.Clone(s.root.Public().(ed25519.PublicKey))
}

// Sign signs payload with the active signing key (sign.SignEnvelope). Key
// sets come only from KeySetEnvelope: agents refuse an envelope of type
// sign.KeySetPayloadType that a signing key signed.
func (s *Signer) Sign(payloadType string, payload []byte) sign.Envelope {
	s.mu.RLock()
	key := s.cur.active().key
	s.mu.RUnlock()
	return sign.SignEnvelope(payloadType, payload, key)
}

// KeySetEnvelope returns the current key set, signed by the root key: the
// active key, the next one if it is published, and rotated-out keys that
// have not been pruned. The same version always gives the same bytes; it
// is signed once per version, and callers must not modify it.
func (s *Signer) KeySetEnvelope() sign.Envelope {
	s.mu.RLock()
	r, root := s.cur, s.root
	s.mu.RUnlock()
	r.keySetOnce.Do(func() {
		data, err := json.Marshal(r.keySet())
		if err != nil {
			// A KeySet of times, strings and bytes always encodes.
			panic(err)
		}
		r.keySetEnv = sign.SignEnvelope(sign.KeySetPayloadType, data, root)
	})
	return r.keySetEnv
}

// KeySetVersion is the version of the current key set.
func (s *Signer) KeySetVersion() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur.version
}

func (r *ring) keySet() sign.KeySet {
	ks := sign.KeySet{Version: r.version, IssuedAt: r.issuedAt.UTC()}
	for _, k := range r.keys {
		ks.Keys = append(ks.Keys, sign.VerificationKey{
			KeyID:     k.id,
			PublicKey: k.public(),
			NotBefore: k.notBefore.UTC(),
			NotAfter:  k.notAfter.UTC(),
		})
	}
	return ks
}

// active returns the active key. Open guarantees there is exactly one and
// every change keeps it so.
func (r *ring) active() *signingKey {
	if k := r.find(stateActive); k != nil {
		return k
	}
	panic("signer: no active signing key")
}

// same reports whether r and o are the same key set with the same active
// key: what a Signer signs with and publishes.
func (r *ring) same(o *ring) bool {
	return r.version == o.version && r.issuedAt.Equal(o.issuedAt) &&
		slices.EqualFunc(r.keys, o.keys, func(a, b *signingKey) bool {
			return a.id == b.id && a.state == b.state && a.notAfter.Equal(b.notAfter)
		})
}

func (r *ring) find(st keyState) *signingKey {
	for _, k := range r.keys {
		if k.state == st {
			return k
		}
	}
	return nil
}
