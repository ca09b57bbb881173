package agentapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// SPIRE lets agents that take their SVIDs from a SPIFFE Workload API
// (SPIRE) connect without enrolling: the control plane trusts that trust
// domain's bundle and maps each agent SPIFFE ID to a data plane.
type SPIRE struct {
	// TrustDomain is SPIRE's trust domain; it must differ from Cairn's.
	TrustDomain spiffeid.TrustDomain
	// Bundle is SPIRE's CA certificates (`spire-server bundle show`).
	Bundle []*x509.Certificate
	// Agents maps SPIFFE IDs to data planes; the first match wins.
	Agents []SPIREMapping
}

// SPIREMapping maps one SPIFFE ID, or every ID under a path prefix, to a
// data plane.
type SPIREMapping struct {
	// SPIFFEID matches exactly; IDPrefix matches IDs that start with it
	// followed by "/". Exactly one is set.
	SPIFFEID    string `json:"spiffe_id,omitempty"`
	IDPrefix    string `json:"spiffe_id_prefix,omitempty"`
	TenantID    string `json:"tenant_id"`
	DataPlaneID string `json:"data_plane_id"`
}

// LoadSPIRE reads the SPIRE bundle (PEM) and the mapping file (JSON: a list
// of SPIREMapping) and checks them.
func LoadSPIRE(trustDomain, bundleFile, mapFile string) (*SPIRE, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("spire trust domain: %w", err)
	}
	b, err := os.ReadFile(bundleFile)
	if err != nil {
		return nil, fmt.Errorf("spire bundle: %w", err)
	}
	cas, err := certs.ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("spire bundle %s: %w", bundleFile, err)
	}
	raw, err := os.ReadFile(mapFile)
	if err != nil {
		return nil, fmt.Errorf("spire agent map: %w", err)
	}
	var m []SPIREMapping
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("spire agent map %s: %w", mapFile, err)
	}
	sp := &SPIRE{TrustDomain: td, Bundle: cas, Agents: m}
	return sp, sp.check()
}

func (sp *SPIRE) check() error {
	if len(sp.Bundle) == 0 {
		return errors.New("spire: empty bundle")
	}
	for i, m := range sp.Agents {
		pattern := m.SPIFFEID
		if (m.SPIFFEID == "") == (m.IDPrefix == "") {
			return fmt.Errorf("spire agent map entry %d: set exactly one of spiffe_id and spiffe_id_prefix", i)
		}
		if pattern == "" {
			pattern = m.IDPrefix
		}
		id, err := spiffeid.FromString(pattern)
		if err != nil || id.TrustDomain() != sp.TrustDomain {
			return fmt.Errorf("spire agent map entry %d: %q is not a SPIFFE ID in %s", i, pattern, sp.TrustDomain)
		}
		if _, err := uuid.Parse(m.TenantID); err != nil {
			return fmt.Errorf("spire agent map entry %d: tenant_id: %w", i, err)
		}
		if _, err := uuid.Parse(m.DataPlaneID); err != nil {
			return fmt.Errorf("spire agent map entry %d: data_plane_id: %w", i, err)
		}
	}
	return nil
}

// lookup returns the mapping for id.
func (sp *SPIRE) lookup(id spiffeid.ID) (SPIREMapping, bool) {
	s := id.String()
	for _, m := range sp.Agents {
		if m.SPIFFEID == s || (m.IDPrefix != "" && strings.HasPrefix(s, strings.TrimSuffix(m.IDPrefix, "/")+"/")) {
			return m, true
		}
	}
	return SPIREMapping{}, false
}

// spireAgentNamespace derives stable agent ids from SPIRE SPIFFE IDs.
var spireAgentNamespace = uuid.MustParse("5d0c1d2e-8f54-4c43-9d8e-63c3a6b0c9a1")

// bundles is the set of CAs a client certificate may chain to: Cairn's,
// and SPIRE's when configured.
func (s *Server) bundles() x509bundle.Source {
	set := x509bundle.NewSet(s.cfg.CA.Bundle())
	if s.cfg.SPIRE != nil {
		set.Add(x509bundle.FromX509Authorities(s.cfg.SPIRE.TrustDomain, s.cfg.SPIRE.Bundle))
	}
	return set
}

// authenticateSPIRE maps a SPIRE-issued SVID to an agent, registering it
// on first contact. Its SVID was verified against SPIRE's bundle in the
// handshake.
func (s *Server) authenticateSPIRE(ctx context.Context, id spiffeid.ID) (caller, error) {
	m, ok := s.cfg.SPIRE.lookup(id)
	if !ok {
		return caller{}, status.Errorf(codes.PermissionDenied, "%s is not mapped to a data plane", id)
	}
	agentID := uuid.NewSHA1(spireAgentNamespace, []byte(id.String())).String()
	ag, err := slotted(ctx, s.slots, func() (store.Agent, error) {
		return s.cfg.Store.RegisterExternalAgent(ctx, store.Agent{
			ID: agentID, TenantID: m.TenantID, DataPlaneID: m.DataPlaneID, SPIFFEID: id.String(), AgentVersion: "spire",
		})
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return caller{}, status.Errorf(codes.PermissionDenied, "%s maps to data plane %s, which does not exist", id, m.DataPlaneID)
	case errors.Is(err, store.ErrFailedPrecondition):
		return caller{}, status.Errorf(codes.PermissionDenied, "agent %s: %v", agentID, err)
	case err != nil:
		return caller{}, status.Error(codes.Unavailable, "cannot check agent registration")
	case ag.RevokeTime != nil:
		return caller{}, status.Errorf(codes.PermissionDenied, "agent %s is revoked", agentID)
	}
	return caller{
		AgentIdentity: certs.AgentIdentity{TrustDomain: id.TrustDomain(), TenantID: ag.TenantID, DataPlaneID: ag.DataPlaneID, AgentID: ag.ID},
		External:      true,
	}, nil
}
