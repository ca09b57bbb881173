package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
	"github.com/cairnhq/cairn/internal/fakeworkloadapi"
)

// spireAdmin is an admin API client set with the bootstrap token.
type spireAdmin struct {
	tenants adminv1connect.TenantServiceClient
	dps     adminv1connect.DataPlaneServiceClient
	agents  adminv1connect.AgentServiceClient
	configs adminv1connect.ConfigServiceClient
}

func newSpireAdmin(t *testing.T, base, tokenFile string) spireAdmin {
	t.Helper()
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	bearer := withToken(tok)
	return spireAdmin{
		tenants: adminv1connect.NewTenantServiceClient(http.DefaultClient, base, bearer),
		dps:     adminv1connect.NewDataPlaneServiceClient(http.DefaultClient, base, bearer),
		agents:  adminv1connect.NewAgentServiceClient(http.DefaultClient, base, bearer),
		configs: adminv1connect.NewConfigServiceClient(http.DefaultClient, base, bearer),
	}
}

// spireSVID issues an SVID from a stand-in SPIRE CA and serves it on a fake
// Workload API.
func spireSVID(t *testing.T, spireCA *ca.Authority, id spiffeid.ID) *fakeworkloadapi.Server {
	t.Helper()
	key, err := certs.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := spireCA.SignSVID(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wl := fakeworkloadapi.Start(t)
	if err := wl.SetX509SVID(id, chain, key, spireCA.BundleCerts()); err != nil {
		t.Fatal(err)
	}
	return wl
}

// TestSPIREAgent runs an agent that takes its SVID from a (fake) SPIFFE
// Workload API, against a control plane that trusts the SPIRE trust
// domain and maps the agent's SPIFFE ID to a data plane.
func TestSPIREAgent(t *testing.T) {
	bin := binaries(t)
	dir := t.TempDir()
	ctx := context.Background()
	adminAddr, agentAddr := freeAddr(t), freeAddr(t)
	tokenFile := filepath.Join(dir, "admin.token")
	base := "http://" + adminAddr
	args := []string{"--insecure", "--admin-addr", adminAddr, "--agent-addr", agentAddr, "--data-dir", dir, "--bootstrap-token-file", tokenFile}

	// First start: make the tenant and data plane the mapping names.
	p := start(t, bin, nil, args...)
	waitReady(t, p, http.DefaultClient, base)
	admin := newSpireAdmin(t, base, tokenFile)
	tn, err := admin.tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "acme"}}))
	if err != nil {
		t.Fatal(err)
	}
	dp, err := admin.dps.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
		TenantId: tn.Msg.Tenant.Id, Name: "use1", Region: "us-east-1", Cloud: adminv1.Cloud_CLOUD_AWS}}))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := admin.agents.GetTrustBundle(ctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	cairnBundle := filepath.Join(dir, "cairn-bundle.pem")
	if err := os.WriteFile(cairnBundle, []byte(tb.Msg.BundlePem), 0o644); err != nil {
		t.Fatal(err)
	}
	signingRoot := filepath.Join(dir, "signing-root.pem")
	if tb.Msg.SigningRootPem == "" {
		t.Fatal("GetTrustBundle returned no signing root")
	}
	if err := os.WriteFile(signingRoot, []byte(tb.Msg.SigningRootPem), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: dp.Msg.DataPlane.Id}},
		Kind:  "cairn.dev/greeting", Name: "hello",
		Content: &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: []byte("hi"), MediaType: "text/plain"}},
	}})); err != nil {
		t.Fatal(err)
	}
	p.stop(t)

	// A stand-in SPIRE CA in its own trust domain.
	spireTD := spiffeid.RequireTrustDomainFromString("spire.test")
	spireCA, err := ca.Open(ca.Config{Dir: filepath.Join(dir, "spire-ca"), TrustDomain: spireTD})
	if err != nil {
		t.Fatal(err)
	}
	spireBundle := filepath.Join(dir, "spire-bundle.pem")
	if err := os.WriteFile(spireBundle, certs.EncodeCertsPEM(spireCA.BundleCerts()), 0o644); err != nil {
		t.Fatal(err)
	}
	mapping, _ := json.Marshal([]map[string]string{{
		"spiffe_id_prefix": "spiffe://spire.test/ns/prod", "tenant_id": tn.Msg.Tenant.Id, "data_plane_id": dp.Msg.DataPlane.Id,
	}})
	mapFile := filepath.Join(dir, "spire-agents.json")
	if err := os.WriteFile(mapFile, mapping, 0o644); err != nil {
		t.Fatal(err)
	}
	p = start(t, bin, nil, append(args, "--spire-trust-domain", "spire.test", "--spire-bundle", spireBundle, "--spire-agents", mapFile)...)
	waitReady(t, p, http.DefaultClient, base)

	runAgent := func(wl *fakeworkloadapi.Server, dataDir string) (*exec.Cmd, *bytes.Buffer, chan error) {
		cmd := exec.Command(filepath.Join(bin, "cairn-agent"), "--control-plane", agentAddr, "--data-dir", dataDir,
			"--spiffe-socket", wl.Addr(), "--ca-bundle", cairnBundle, "--log-format", "text",
			"--data-plane-id", dp.Msg.DataPlane.Id, "--signing-root", signingRoot)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		return cmd, &out, done
	}

	// A mapped SPIRE identity is admitted and registered.
	id := spiffeid.RequireFromString("spiffe://spire.test/ns/prod/cairn-agent")
	_, out, done := runAgent(spireSVID(t, spireCA, id), filepath.Join(dir, "agent1"))
	var agentID string
	deadline := time.Now().Add(30 * time.Second)
	for agentID == "" {
		list, err := admin.agents.ListAgents(ctx, connect.NewRequest(&adminv1.ListAgentsRequest{DataPlaneId: dp.Msg.DataPlane.Id}))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range list.Msg.Agents {
			if a.SpiffeId == id.String() {
				agentID = a.Id
			}
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("agent exited: %v\n%s", err, out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("SPIRE agent not registered within 30s; agent output:\n%s", out)
		}
	}

	// It syncs its mapped data plane's config, verified under the signing
	// root it was given, and reports its status (the applied revision in
	// the status may lag the ACK by up to --status-progress-delay, 10s).
	deadline = time.Now().Add(60 * time.Second)
	for {
		got, err := admin.agents.GetAgent(ctx, connect.NewRequest(&adminv1.GetAgentRequest{Id: agentID}))
		if err != nil {
			t.Fatal(err)
		}
		a := got.Msg.Agent
		if a.GetSync().GetLastAppliedRevision() == 1 && a.GetStatus().GetAppliedRevision() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SPIRE agent did not apply and report revision 1 within 60s: sync %v status %v; output:\n%s", a.GetSync(), a.GetStatus(), out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Revocation ends it, as for an enrolled agent.
	if _, err := admin.agents.RevokeAgent(ctx, connect.NewRequest(&adminv1.RevokeAgentRequest{Id: agentID, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("revoked SPIRE agent exited with %v; want status 3\n%s", err, out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("revoked SPIRE agent still running after 20s\n%s", out)
	}

	// An identity the map does not name is refused and not registered.
	other := spiffeid.RequireFromString("spiffe://spire.test/ns/staging/cairn-agent")
	_, out2, done2 := runAgent(spireSVID(t, spireCA, other), filepath.Join(dir, "agent2"))
	select {
	case err := <-done2:
		done2 <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out2.String(), "not mapped") {
			t.Fatalf("unmapped SPIRE agent exited with %v; want status 3 saying it is not mapped\n%s", err, out2)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("unmapped SPIRE agent still running after 20s\n%s", out2)
	}
	list, err := admin.agents.ListAgents(ctx, connect.NewRequest(&adminv1.ListAgentsRequest{}))
	if err != nil || len(list.Msg.Agents) != 1 {
		t.Fatalf("agents = %v, %v; want only the mapped one", list, err)
	}
	p.stop(t)
}
