package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cairnhq/cairn/certs"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// EnrollConfig configures Enroll.
type EnrollConfig struct {
	// Addr is the agent API address. Required.
	Addr string
	// Dir is where the identity is persisted. Required.
	Dir string
	// JoinToken is the single-use token from the admin API. Required; it
	// is sent once and never logged or stored.
	JoinToken string
	// Trust authenticates the control plane. Required.
	Trust Trust
	// Version is reported to the control plane.
	Version string
}

// Enroll creates a key, exchanges the join token and a CSR for an SVID,
// persists the identity in cfg.Dir and returns it.
func Enroll(ctx context.Context, cfg EnrollConfig) (*Source, error) {
	if cfg.Addr == "" || cfg.Dir == "" || cfg.JoinToken == "" {
		return nil, errors.New("enroll: address, directory and join token are required")
	}
	key, err := certs.NewKey()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	tlsConf, trust, err := cfg.Trust.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer conn.Close()
	resp, err := agentv1.NewEnrollmentServiceClient(conn).Enroll(ctx, &agentv1.EnrollRequest{
		JoinToken: cfg.JoinToken, Csr: csr, AgentVersion: cfg.Version, Hostname: hostname(),
	})
	if err != nil {
		// grpc reports a failed handshake as Unavailable, which a caller
		// would retry; a control plane we do not trust will not become
		// trustworthy by waiting.
		if terr := trust.failure(); terr != nil {
			return nil, fmt.Errorf("enroll: %w: %v", ErrUntrusted, terr)
		}
		return nil, fmt.Errorf("enroll: %w", err)
	}
	chain, err := parseDERs(resp.SvidChain)
	if err != nil {
		return nil, fmt.Errorf("enroll: svid: %w", err)
	}
	bundle, err := parseDERs(resp.Bundle)
	if err != nil {
		return nil, fmt.Errorf("enroll: bundle: %w", err)
	}
	info := Info{AgentID: resp.AgentId, TenantID: resp.TenantId, DataPlaneID: resp.DataPlaneId, SPIFFEID: resp.SpiffeId}
	src, err := newSource(cfg.Dir, info, chain, key, bundle)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if len(resp.SigningRootKey) != 0 {
		if len(resp.SigningRootKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("enroll: signing root key has %d bytes; want %d", len(resp.SigningRootKey), ed25519.PublicKeySize)
		}
		src.signingRoot = ed25519.PublicKey(resp.SigningRootKey)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := src.save(); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return src, nil
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Renew makes a new key, has the control plane sign it over conn (an mTLS
// connection from Dial), persists and switches to the new SVID. Open
// connections keep their handshake; new ones use the new SVID.
func (s *Source) Renew(ctx context.Context, client agentv1.IdentityServiceClient) error {
	key, err := certs.NewKey()
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	resp, err := client.RenewSVID(ctx, &agentv1.RenewSVIDRequest{Csr: csr})
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	chain, err := parseDERs(resp.SvidChain)
	if err != nil {
		return fmt.Errorf("renew: svid: %w", err)
	}
	bundle, err := parseDERs(resp.Bundle)
	if err != nil {
		return fmt.Errorf("renew: bundle: %w", err)
	}
	old := s.SVID()
	if err := s.set(chain, key, bundle); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := s.save(); err != nil {
		// Keep serving with the old SVID rather than one we could not
		// persist: a restart must find the key that matches.
		s.mu.Lock()
		s.svid = old
		s.mu.Unlock()
		return fmt.Errorf("renew: %w", err)
	}
	return nil
}

// UpdateBundle installs a trust bundle received on the config stream or
// from WatchBundle. The control plane sends the bundle at every stream's
// start: one this Source has already written to disk is not written
// again (one whose write failed is, when it comes again).
func (s *Source) UpdateBundle(ders [][]byte) error {
	cas, err := parseDERs(ders)
	if err != nil || len(cas) == 0 {
		return fmt.Errorf("update bundle: bad bundle: %v", err)
	}
	s.mu.RLock()
	same := s.saved != nil && s.saved.Equal(x509bundle.FromX509Authorities(s.td, cas))
	s.mu.RUnlock()
	if same {
		return nil
	}
	return s.setBundle(cas)
}
