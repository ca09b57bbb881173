// Package ca is the control plane's certificate authority for agent
// identity. An Authority keeps a few self-signed CA certificates in a
// directory, issues X.509-SVIDs to agents from their certificate signing
// requests, and rotates the signing CA so that every CA is in the trust
// bundle before it signs and stays there until the last SVID it signed has
// expired.
//
// Only the control plane may link this package; agents verify against the
// bundle with package certs and never hold a CA key. The Authority does not
// decide who is who: callers authenticate an agent and pass the SPIFFE ID it
// is to get.
//
// # Several replicas
//
// Control-plane replicas may share the directory (a shared volume). Every
// change to it (creating the first CA at Open, Prepare, Activate, Prune,
// MaybeRotate, and SignSVID when it records how long the signing CA is
// needed) holds an exclusive lock on the directory (certs.LockDir) and
// starts by reading the state file again, taking up whatever another
// Authority wrote. So replicas opening an empty directory at once make one
// CA, not one each; two replicas due to rotate prepare or activate one CA,
// not two; and no replica writes over another's change.
//
// Between changes an Authority works from memory: it publishes the bundle
// and signs with the CA it last read or wrote, and takes up another
// replica's rotation at its next MaybeRotate, or sooner when SignSVID
// records an expiry. So it lags by at most the interval between
// MaybeRotate calls, and the schedule leaves room for that:
//
//   - a prepared CA is in the bundle for CATTL/6 before any replica signs
//     with it, of which agents need at most MaxSVIDTTL to fetch it; a
//     lagging replica publishes it late by its lag, which must stay well
//     under the difference (about 60 days with the defaults; the control
//     plane checks every minute);
//   - a CA that stopped signing stays in the shared state, and so in the
//     bundle of every replica that has read it, until the last SVID
//     recorded for it has expired, whichever replica recorded it; and a
//     replica records before it hands out an SVID. A lagging
//     replica signs with its old active CA only SVIDs that expire within
//     an expiry already recorded for that CA; any other SVID makes it read
//     the directory and sign with the CA active there, so it never signs
//     with a CA another replica has removed.
//
// Replicas' clocks must agree, as for any certificate's validity.
package ca

import (
	"cmp"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	defaultCATTL      = 365 * 24 * time.Hour
	defaultMaxSVIDTTL = 24 * time.Hour
)

// Config configures an Authority.
type Config struct {
	// Dir holds the CA certificates, their keys, the state file and a lock
	// file. It is required and created with mode 0700 if missing. Several
	// processes may share it (see the package doc). Keys are written 0600
	// and never logged.
	Dir string
	// TrustDomain is the trust domain every CA and SVID belongs to. It is
	// required and must match the one Dir was created for.
	TrustDomain spiffeid.TrustDomain
	// CATTL is the lifetime of a new CA certificate; 0 means 365 days. It
	// must be at least 6×MaxSVIDTTL: a prepared CA is published for 1/6 of
	// a CA lifetime before it signs, and agents refresh the bundle at
	// least once per SVID lifetime, so all of them trust it in time.
	CATTL time.Duration
	// MaxSVIDTTL is the longest ttl SignSVID accepts; 0 means 24 hours.
	MaxSVIDTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives CA lifecycle events and, at debug level, issued
	// SVIDs; nil discards them.
	Logger *slog.Logger
}

// Authority is a CA with rotation. All methods are safe for concurrent use.
// Every change is on disk before it is visible to other callers, so what a
// caller has been handed (an SVID, a bundle) survives a crash.
type Authority struct {
	dir        string
	td         spiffeid.TrustDomain
	caTTL      time.Duration
	maxSVIDTTL time.Duration
	now        func() time.Time
	log        *slog.Logger

	// dirMu orders this Authority's changes to dir, and the directory lock
	// (certs.LockDir) orders them with other processes'. A change takes
	// dirMu, then the directory lock, then mu (see lockDir).
	dirMu sync.Mutex

	mu sync.RWMutex
	// cas is sorted newest first and is never modified in place: a change
	// builds a new slice of new entries, persists it, then swaps it in.
	cas []*authorityCA
	// The fields below change only with the directory lock and mu held.

	// discard lists CA ids whose files, if any, are garbage: a CA being
	// added or pruned when the process stopped. They are written into the
	// state file so that Open can tell them from files the state lost.
	discard []string
	// stateData is the state file as this Authority last read or wrote
	// it, nil after a failed write. A change that finds other bytes on
	// disk loads them first.
	stateData []byte

	// reported is cas as of the last MaybeRotate, or Open, so that
	// MaybeRotate reports a change whoever made it. Guarded by mu.
	reported []*authorityCA
}

// state is where a CA is in its life. All states are in the bundle.
type state string

const (
	statePrepared state = "prepared" // in the bundle, not signing yet
	stateActive   state = "active"   // signs SVIDs; exactly one
	stateRetiring state = "retiring" // in the bundle until its SVIDs expire
)

type authorityCA struct {
	id    string // lowercase hex serial; names the files
	cert  *x509.Certificate
	key   crypto.Signer
	state state

	createdAt   time.Time
	activatedAt time.Time // zero until active
	// lastSVIDExpiry bounds the NotAfter of every SVID this CA signed,
	// rounded up (see SignSVID); zero if it never signed.
	lastSVIDExpiry time.Time
}

func (c *authorityCA) clone() *authorityCA {
	n := *c
	return &n
}

// Open loads the authority in cfg.Dir, or creates one with a new active CA
// if Dir is empty or missing; of several processes opening an empty Dir at
// once, one creates the CA and the others load it. It refuses a key file
// that group or others can read, a state file that disagrees with the files
// next to it, and CAs that do not belong to cfg.TrustDomain.
func Open(cfg Config) (*Authority, error) {
	if cfg.Dir == "" {
		return nil, errors.New("ca: Config.Dir is required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: Config.TrustDomain is required")
	}
	a := &Authority{
		dir:        cfg.Dir,
		td:         cfg.TrustDomain,
		caTTL:      cfg.CATTL,
		maxSVIDTTL: cfg.MaxSVIDTTL,
		now:        cfg.Now,
		log:        cfg.Logger,
	}
	if a.caTTL == 0 {
		a.caTTL = defaultCATTL
	}
	if a.maxSVIDTTL == 0 {
		a.maxSVIDTTL = defaultMaxSVIDTTL
	}
	if a.maxSVIDTTL < 0 || a.caTTL < 0 {
		return nil, errors.New("ca: negative CATTL or MaxSVIDTTL")
	}
	if a.caTTL < 6*a.maxSVIDTTL {
		return nil, fmt.Errorf("ca: CATTL %v is less than 6×MaxSVIDTTL (%v)", a.caTTL, 6*a.maxSVIDTTL)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := a.load(); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	a.reported = a.cas
	return a, nil
}

// Bundle returns the trust bundle: the CAs that are prepared, active or
// retiring. Agents must trust all of them.
func (a *Authority) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(a.td, a.BundleCerts())
}

// BundleCerts returns the certificates in Bundle, newest first.
func (a *Authority) BundleCerts() []*x509.Certificate {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]*x509.Certificate, len(a.cas))
	for i, c := range a.cas {
		out[i] = c.cert
	}
	return out
}

// Active returns the CA certificate that signs SVIDs now.
func (a *Authority) Active() *x509.Certificate {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.activeLocked().cert
}

// Pin returns the SPKI pin (certs.SPKIPin) of the active CA: what an admin
// gives a new agent so it can trust the control plane on first contact.
func (a *Authority) Pin() string {
	return certs.SPKIPin(a.Active())
}

// PinAll returns the pins of the bundle's CAs, newest first. During a
// rotation an agent enrolled with any of them is talking to this authority.
func (a *Authority) PinAll() []string {
	cs := a.BundleCerts()
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = certs.SPKIPin(c)
	}
	return out
}

// activeLocked returns the active CA. Open guarantees there is exactly one
// and every change keeps it so.
func (a *Authority) activeLocked() *authorityCA {
	for _, c := range a.cas {
		if c.state == stateActive {
			return c
		}
	}
	panic("ca: no active CA")
}

func (a *Authority) findLocked(s state) *authorityCA {
	for _, c := range a.cas {
		if c.state == s {
			return c
		}
	}
	return nil
}

// sameCAs reports whether x and y are the same CAs in the same states:
// the same bundle and the same signing CA.
func sameCAs(x, y []*authorityCA) bool {
	return slices.EqualFunc(x, y, func(a, b *authorityCA) bool {
		return a.id == b.id && a.state == b.state
	})
}

// sortCAs orders newest first: by NotBefore, then (for CAs made in the same
// second) by state, prepared before active before retiring, then by id.
func sortCAs(cas []*authorityCA) {
	rank := map[state]int{statePrepared: 0, stateActive: 1, stateRetiring: 2}
	slices.SortFunc(cas, func(x, y *authorityCA) int {
		return cmp.Or(
			y.cert.NotBefore.Compare(x.cert.NotBefore),
			cmp.Compare(rank[x.state], rank[y.state]),
			cmp.Compare(x.id, y.id),
		)
	})
}

// MaxSVIDTTL is the longest lifetime SignSVID grants.
func (a *Authority) MaxSVIDTTL() time.Duration { return a.maxSVIDTTL }
