// Package identity is the agent's side of SPIFFE identity: enrollment with
// a join token, the persisted key, SVID and trust bundle, renewal, and the
// TLS configurations built from them. The private key is generated here and
// never leaves the agent's disk (mode 0600).
package identity

import (
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cairnhq/cairn/certs"
)

// Info is what enrollment told the agent about itself.
type Info struct {
	AgentID     string `json:"agent_id"`
	TenantID    string `json:"tenant_id"`
	DataPlaneID string `json:"data_plane_id"`
	SPIFFEID    string `json:"spiffe_id"`
}

// File names inside the identity directory.
const (
	svidFile    = "svid.pem" // certificate chain and private key, 0600
	bundleFile  = "bundle.pem"
	infoFile    = "identity.json"
	rootKeyFile = "signing-root.pem" // the config-signing root public key
)

// Source holds the agent's current SVID and trust bundle. It implements
// go-spiffe's x509svid.Source and x509bundle.Source, so TLS configurations
// built on it pick up a renewed SVID or a rotated bundle at the next
// handshake, without disturbing open connections.
type Source struct {
	dir  string
	info Info
	td   spiffeid.TrustDomain

	// workload, when set, supplies the SVID (SPIRE); svid is unused.
	workload x509svid.Source

	// signingRoot verifies config-signing key sets; nil when the control
	// plane gave none.
	signingRoot ed25519.PublicKey

	mu     sync.RWMutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	// saved is the bundle this Source last wrote to disk; nil until it
	// has written one.
	saved *x509bundle.Bundle
}

// SigningRoot is the public key that signs config-signing key sets, as
// received at enrollment; nil if none was.
func (s *Source) SigningRoot() ed25519.PublicKey { return s.signingRoot }

// External reports whether the SVID comes from a SPIFFE Workload API, so
// that Cairn neither renews nor persists it.
func (s *Source) External() bool { return s.workload != nil }

// Info returns the agent's identity.
func (s *Source) Info() Info { return s.info }

// TrustDomain is the agent's trust domain.
func (s *Source) TrustDomain() spiffeid.TrustDomain { return s.td }

// GetX509SVID implements x509svid.Source.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	if s.workload != nil {
		return s.workload.GetX509SVID()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.td {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bundle, nil
}

// SVID returns the current SVID.
func (s *Source) SVID() *x509svid.SVID {
	if s.workload != nil {
		svid, _ := s.workload.GetX509SVID()
		return svid
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid
}

// BundleCerts returns the current trust bundle's CA certificates.
func (s *Source) BundleCerts() []*x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bundle.X509Authorities()
}

// newSource checks that an SVID belongs to info and builds a Source.
func newSource(dir string, info Info, chain []*x509.Certificate, key crypto.Signer, bundle []*x509.Certificate) (*Source, error) {
	id, err := spiffeid.FromString(info.SPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s := &Source{dir: dir, info: info, td: id.TrustDomain()}
	if err := s.set(chain, key, bundle); err != nil {
		return nil, err
	}
	return s, nil
}

// set verifies the SVID against the bundle and that it names this agent,
// then makes them current.
func (s *Source) set(chain []*x509.Certificate, key crypto.Signer, bundle []*x509.Certificate) error {
	if len(chain) == 0 || len(bundle) == 0 {
		return errors.New("identity: empty SVID chain or bundle")
	}
	b := x509bundle.FromX509Authorities(s.td, bundle)
	id, _, err := x509svid.Verify(chain, b)
	if err != nil {
		return fmt.Errorf("identity: SVID does not verify against the bundle: %w", err)
	}
	if id.String() != s.info.SPIFFEID {
		return fmt.Errorf("identity: SVID names %s; this agent is %s", id, s.info.SPIFFEID)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(chain[0].PublicKey) {
		return errors.New("identity: the SVID is not for this agent's private key")
	}
	svid := &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
	s.mu.Lock()
	s.svid, s.bundle = svid, b
	s.mu.Unlock()
	return nil
}

// setBundle replaces the trust bundle, refusing one that no longer
// verifies the current SVID (that would cut the agent off).
func (s *Source) setBundle(bundle []*x509.Certificate) error {
	// An SVID from SPIRE chains to SPIRE's bundle, not this one.
	if s.workload == nil {
		svid := s.SVID()
		if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(s.td, bundle)); err != nil {
			return fmt.Errorf("identity: new bundle does not verify the current SVID: %w", err)
		}
	}
	s.mu.Lock()
	s.bundle = x509bundle.FromX509Authorities(s.td, bundle)
	s.mu.Unlock()
	return s.saveBundle()
}

// Load reads a persisted identity. It returns an error wrapping
// fs.ErrNotExist when the agent has not enrolled.
func Load(dir string) (*Source, error) {
	raw, err := os.ReadFile(filepath.Join(dir, infoFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	var info Info
	if err := json.Unmarshal(raw, &info); err != nil {
		return nil, fmt.Errorf("load identity: %s: %w", infoFile, err)
	}
	fi, err := os.Stat(filepath.Join(dir, svidFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load identity: %s is readable by others (mode %v); it holds the private key", svidFile, fi.Mode().Perm())
	}
	svidPEM, err := os.ReadFile(filepath.Join(dir, svidFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	chain, key, err := parseSVIDFile(svidPEM)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	bundlePEM, err := os.ReadFile(filepath.Join(dir, bundleFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	bundle, err := certs.ParseCertsPEM(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("load identity: %s: %w", bundleFile, err)
	}
	src, err := newSource(dir, info, chain, key, bundle)
	if err != nil {
		return nil, err
	}
	if src.signingRoot, err = readRootKey(filepath.Join(dir, rootKeyFile)); err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	return src, nil
}

// readRootKey reads the signing root public key; a missing file (an
// identity from before signing existed) gives nil.
func readRootKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pub, err := certs.ParseEd25519PublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return pub, nil
}

// save persists the identity: the SVID file (chain and key together, so a
// crash can never pair a key with another key's certificate), the bundle,
// and the info.
func (s *Source) save() error {
	svid := s.SVID()
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	data := append(certs.EncodeCertsPEM(svid.Certificates), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := certs.WriteFileAtomic(filepath.Join(s.dir, svidFile), data, 0o600); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := s.saveBundle(); err != nil {
		return err
	}
	if s.signingRoot != nil {
		if err := certs.WriteFileAtomic(filepath.Join(s.dir, rootKeyFile), certs.EncodeEd25519PublicKeyPEM(s.signingRoot), 0o644); err != nil {
			return fmt.Errorf("save identity: %w", err)
		}
	}
	info, _ := json.MarshalIndent(s.info, "", "  ")
	if err := certs.WriteFileAtomic(filepath.Join(s.dir, infoFile), append(info, '\n'), 0o600); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	return nil
}

func (s *Source) saveBundle() error {
	s.mu.RLock()
	b := s.bundle
	s.mu.RUnlock()
	if err := certs.WriteFileAtomic(filepath.Join(s.dir, bundleFile), certs.EncodeCertsPEM(b.X509Authorities()), 0o644); err != nil {
		return fmt.Errorf("save bundle: %w", err)
	}
	s.mu.Lock()
	s.saved = b
	s.mu.Unlock()
	return nil
}

func parseSVIDFile(b []byte) ([]*x509.Certificate, crypto.Signer, error) {
	var chain []*x509.Certificate
	var key crypto.Signer
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", svidFile, err)
			}
			chain = append(chain, c)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: private key: %w", svidFile, err)
			}
			signer, ok := k.(crypto.Signer)
			if !ok {
				return nil, nil, fmt.Errorf("%s: private key is not a signer", svidFile)
			}
			key = signer
		}
	}
	if len(chain) == 0 || key == nil {
		return nil, nil, fmt.Errorf("%s: want a certificate chain and a private key", svidFile)
	}
	return chain, key, nil
}

// RenewAt is when to renew an SVID: when half its lifetime remains, with
// ±10% of the lifetime as jitter so a fleet enrolled together does not
// renew together.
func RenewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(life))
	return leaf.NotBefore.Add(life/2 + jitter)
}
