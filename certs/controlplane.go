package certs

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// ControlPlaneID is the SPIFFE ID the control plane serves the agent API
// with, spiffe://<trust domain>/controlplane; agents authorize exactly it.
func ControlPlaneID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromPath(td, "/controlplane")
}
