package identity

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/cairnhq/cairn/certs"
)

// WorkloadAPIConfig configures FromWorkloadAPI.
type WorkloadAPIConfig struct {
	// Socket is the SPIFFE Workload API address, e.g.
	// unix:///run/spire/sockets/agent.sock. Required.
	Socket string
	// Dir keeps the Cairn trust bundle as it rotates. Required.
	Dir string
	// TrustDomain is Cairn's trust domain, whose control plane the agent
	// authorizes. Required.
	TrustDomain spiffeid.TrustDomain
	// BundleFile is Cairn's CA bundle (PEM), used until Dir holds a newer
	// one. Required on first start.
	BundleFile string
	// DataPlaneID is the data plane the control plane maps this agent's
	// SPIFFE ID to, and SigningRootFile the config-signing root public key
	// (PEM, from the admin API's GetTrustBundle): together they let the
	// agent verify and apply its data plane's config. Empty: no config sync.
	DataPlaneID     string
	SigningRootFile string
}

// FromWorkloadAPI returns a Source whose SVID comes from a SPIFFE Workload
// API (a SPIRE agent) and follows its rotation, and which trusts the Cairn
// control plane through Cairn's CA bundle. Such an agent never enrolls or
// renews with Cairn; the control plane maps its SPIFFE ID to a data plane.
// Close the returned source's Workload API client with the returned func.
func FromWorkloadAPI(ctx context.Context, cfg WorkloadAPIConfig) (*Source, func() error, error) {
	if cfg.Socket == "" || cfg.Dir == "" || cfg.TrustDomain.IsZero() {
		return nil, nil, errors.New("workload API: socket, directory and trust domain are required")
	}
	if (cfg.DataPlaneID == "") != (cfg.SigningRootFile == "") {
		return nil, nil, errors.New("workload API: a data plane ID and a signing root go together")
	}
	var root ed25519.PublicKey
	if cfg.SigningRootFile != "" {
		b, err := os.ReadFile(cfg.SigningRootFile)
		if err != nil {
			return nil, nil, fmt.Errorf("workload API: signing root: %w", err)
		}
		if root, err = certs.ParseEd25519PublicKeyPEM(b); err != nil {
			return nil, nil, fmt.Errorf("workload API: signing root %s: %w", cfg.SigningRootFile, err)
		}
	}
	path := filepath.Join(cfg.Dir, bundleFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if cfg.BundleFile == "" {
			return nil, nil, errors.New("workload API: Cairn's CA bundle is needed (--ca-bundle)")
		}
		b, err = os.ReadFile(cfg.BundleFile)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("workload API: cairn bundle: %w", err)
	}
	cas, err := certs.ParseCertsPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("workload API: cairn bundle: %w", err)
	}
	ws, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.Socket)))
	if err != nil {
		return nil, nil, fmt.Errorf("workload API %s: %w", cfg.Socket, err)
	}
	svid, err := ws.GetX509SVID()
	if err != nil {
		ws.Close()
		return nil, nil, fmt.Errorf("workload API: %w", err)
	}
	s := &Source{
		dir:         cfg.Dir,
		info:        Info{SPIFFEID: svid.ID.String(), DataPlaneID: cfg.DataPlaneID},
		signingRoot: root,
		td:          cfg.TrustDomain,
		workload:    ws,
		bundle:      x509bundle.FromX509Authorities(cfg.TrustDomain, cas),
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		ws.Close()
		return nil, nil, fmt.Errorf("workload API: %w", err)
	}
	return s, ws.Close, nil
}
