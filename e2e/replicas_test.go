package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// replicas start control planes on one PostgreSQL database that share the
// CA and signing directories, as a deployment shares a volume.
type replicas struct {
	t                          *testing.T
	bin, dbURL, dir, tokenFile string
	extra                      []string
}

// replica is one running control plane of replicas.
type replica struct {
	p                *process
	admin, agentAddr string
}

// newReplicas prepares a fresh database and directories; extra flags go
// to every replica.
func newReplicas(t *testing.T, extra ...string) *replicas {
	dir := t.TempDir()
	return &replicas{t: t, bin: binaries(t), dbURL: storetest.PostgresURL(t), dir: dir,
		tokenFile: filepath.Join(dir, "admin.token"), extra: extra}
}

// start starts a replica and waits until it is ready.
func (rs *replicas) start(name string) replica {
	r := replica{admin: freeAddr(rs.t), agentAddr: freeAddr(rs.t)}
	r.p = start(rs.t, rs.bin, []string{"CAIRN_DATABASE_URL=" + rs.dbURL}, append([]string{
		"--insecure", "--admin-addr", r.admin, "--agent-addr", r.agentAddr,
		"--data-dir", filepath.Join(rs.dir, name), "--ca-dir", filepath.Join(rs.dir, "ca"),
		"--signing-dir", filepath.Join(rs.dir, "signing"), "--trust-domain", e2eTrustDomain,
		"--agent-api-names", "localhost,127.0.0.1", "--bootstrap-token-file", rs.tokenFile}, rs.extra...)...)
	waitReady(rs.t, r.p, http.DefaultClient, "http://"+r.admin)
	return r
}

// TestTwoReplicas runs two control planes on one PostgreSQL database,
// sharing the CA and signing directories as a deployment shares a volume:
// an agent enrolled through replica A streams from replica B, and a change
// committed through A reaches it through B. Correctness rests on B's
// polling of the database, not on LISTEN/NOTIFY. The latency is logged,
// not asserted: BENCHMARKS.md has the figures.
func TestTwoReplicas(t *testing.T) {
	rs := newReplicas(t)
	tokenFile := rs.tokenFile
	a := rs.start("a")
	b := rs.start("b")

	b64, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b64))
	bearer := withToken(tok)
	baseA, baseB := "http://"+a.admin, "http://"+b.admin
	ctx := context.Background()
	tn, err := adminv1connect.NewTenantServiceClient(http.DefaultClient, baseA, bearer).CreateTenant(ctx,
		connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "acme"}}))
	if err != nil {
		t.Fatal(err)
	}
	dp, err := adminv1connect.NewDataPlaneServiceClient(http.DefaultClient, baseA, bearer).CreateDataPlane(ctx,
		connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{TenantId: tn.Msg.Tenant.Id, Name: "edge", Region: "eu-west-1", Cloud: adminv1.Cloud_CLOUD_AWS}}))
	if err != nil {
		t.Fatal(err)
	}
	dpID := dp.Msg.DataPlane.Id
	agentsA := adminv1connect.NewAgentServiceClient(http.DefaultClient, baseA, bearer)
	agentsB := adminv1connect.NewAgentServiceClient(http.DefaultClient, baseB, bearer)
	configsA := adminv1connect.NewConfigServiceClient(http.DefaultClient, baseA, bearer)

	// Both replicas publish the same trust: one CA, one signing root.
	tbA, err := agentsA.GetTrustBundle(ctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	tbB, err := agentsB.GetTrustBundle(ctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if tbA.Msg.Pins[0] != tbB.Msg.Pins[0] || tbA.Msg.SigningRootPem != tbB.Msg.SigningRootPem {
		t.Fatal("the replicas publish different CAs or signing roots")
	}
	jt, err := agentsA.CreateJoinToken(ctx, connect.NewRequest(&adminv1.CreateJoinTokenRequest{DataPlaneId: dpID}))
	if err != nil {
		t.Fatal(err)
	}

	// The agent enrolls with replica B's agent API using a token made at A.
	cpB := &agentCP{agentAddr: b.agentAddr, dataPlaneID: dpID, pin: tbA.Msg.Pins[0], tokens: []string{jt.Msg.JoinToken}}
	dataDir, err := os.MkdirTemp("", "rep") // short: the agent's socket lives here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	ag := startAgent(t, cpB, "agent", agentOpts{dataDir: dataDir, token: jt.Msg.JoinToken, pin: cpB.pin})

	conn, err := grpc.NewClient("unix://"+filepath.Join(dataDir, "agent.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := agentv1.NewLocalConfigServiceClient(conn)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	watch, err := local.Watch(wctx, &agentv1.WatchRequest{Kind: "cairn.dev/flag"}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Watch: %v\nagent output:\n%s", err, ag.out)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("first watch message: %v\nagent output:\n%s", err, ag.out)
	}

	// Changes committed through A reach the agent streaming from B.
	var worst time.Duration
	for i := range 5 {
		name := "flag-" + string(rune('a'+i))
		committed := time.Now()
		_, err := configsA.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
			Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: dpID}},
			Kind:  "cairn.dev/flag", Name: name,
			Content: &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: []byte("on"), MediaType: "text/plain"}},
		}}))
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := watch.Recv()
			if err != nil {
				t.Fatalf("watch: %v\nagent output:\n%s", err, ag.out)
			}
			if len(m.Documents) == i+1 {
				break
			}
		}
		d := time.Since(committed)
		worst = max(worst, d)
		t.Logf("change %d committed at A, applied by the agent on B after %v", i+1, d)
	}
	t.Logf("worst of 5: %v", worst)

	// B records the agent's position; A, reading the same database,
	// answers the fleet question.
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := agentsA.ListAgents(ctx, connect.NewRequest(&adminv1.ListAgentsRequest{DataPlaneId: dpID, BehindRevision: 5}))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Msg.Agents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent still behind revision 5 after 60s: %v", list.Msg.Agents[0].GetSync())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Revoking through A ends the agent's streams on B.
	list, err := agentsA.ListAgents(ctx, connect.NewRequest(&adminv1.ListAgentsRequest{DataPlaneId: dpID}))
	if err != nil || len(list.Msg.Agents) != 1 {
		t.Fatalf("ListAgents: %v, %v", list, err)
	}
	if _, err := agentsA.RevokeAgent(ctx, connect.NewRequest(&adminv1.RevokeAgentRequest{Id: list.Msg.Agents[0].Id})); err != nil {
		t.Fatal(err)
	}
	if code := ag.exitCode(t, 60*time.Second); code != 3 {
		t.Fatalf("revoked agent exited %d; want 3\n%s", code, ag.out)
	}
}
