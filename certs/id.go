package certs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// AgentIdentity is what an agent's SPIFFE ID says.
type AgentIdentity struct {
	TrustDomain spiffeid.TrustDomain
	TenantID    string
	DataPlaneID string
	AgentID     string
}

// AgentID builds spiffe://<td>/tenant/<tenant>/dataplane/<dp>/agent/<agent>.
// Each id must be a non-empty, valid SPIFFE path segment; Cairn uses UUIDs,
// but any valid segment is accepted so the format does not leak into here.
func AgentID(td spiffeid.TrustDomain, tenantID, dataPlaneID, agentID string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, errors.New("agent id: trust domain is empty")
	}
	for _, s := range []struct{ name, v string }{
		{"tenant id", tenantID},
		{"data plane id", dataPlaneID},
		{"agent id", agentID},
	} {
		if err := spiffeid.ValidatePathSegment(s.v); err != nil {
			return spiffeid.ID{}, fmt.Errorf("agent id: %s %q: %w", s.name, s.v, err)
		}
	}
	return spiffeid.FromSegments(td, "tenant", tenantID, "dataplane", dataPlaneID, "agent", agentID)
}

// ID returns the SPIFFE ID for a, or the zero ID if a does not make a valid
// one (use AgentID to learn why).
func (a AgentIdentity) ID() spiffeid.ID {
	id, err := AgentID(a.TrustDomain, a.TenantID, a.DataPlaneID, a.AgentID)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// ParseAgentID parses an ID built by AgentID. Any other path shape, including
// extra or missing segments, is an error: an ID that merely starts like an
// agent's must not be taken for one.
func ParseAgentID(id spiffeid.ID) (AgentIdentity, error) {
	if id.IsZero() {
		return AgentIdentity{}, errors.New("parse agent id: empty id")
	}
	// Path is "/tenant/<t>/dataplane/<dp>/agent/<a>", so the first element
	// of the split is the empty string before the leading slash.
	seg := strings.Split(id.Path(), "/")
	if len(seg) != 7 || seg[0] != "" || seg[1] != "tenant" || seg[3] != "dataplane" || seg[5] != "agent" {
		return AgentIdentity{}, fmt.Errorf("parse agent id %q: not of the form spiffe://<trust domain>/tenant/<id>/dataplane/<id>/agent/<id>", id)
	}
	for _, i := range []int{2, 4, 6} {
		if err := spiffeid.ValidatePathSegment(seg[i]); err != nil {
			return AgentIdentity{}, fmt.Errorf("parse agent id %q: %s: %w", id, seg[i-1], err)
		}
	}
	return AgentIdentity{
		TrustDomain: id.TrustDomain(),
		TenantID:    seg[2],
		DataPlaneID: seg[4],
		AgentID:     seg[6],
	}, nil
}
