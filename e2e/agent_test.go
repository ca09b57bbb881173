package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cairnhq/cairn/certs"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
	"github.com/cairnhq/cairn/internal/storetest"
)

const e2eTrustDomain = "e2e.test"

// agentCP is a running control plane with a tenant and a data plane, and
// admin clients for it.
type agentCP struct {
	p           *process
	agentAddr   string
	agents      adminv1connect.AgentServiceClient
	dataPlaneID string
	pin         string
	bundlePEM   string
	tokens      []string // join tokens handed out, checked against output
}

// startAgentCP starts cairn-controlplane with plaintext admin, the agent
// API on a free port and the database at dbURL ("" for SQLite in its data
// directory), and creates a tenant and a data plane.
func startAgentCP(t *testing.T, dbURL string, extraArgs ...string) *agentCP {
	t.Helper()
	bin := binaries(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cp := &agentCP{agentAddr: freeAddr(t)}
	tokenFile := filepath.Join(dir, "admin.token")
	var env []string
	if dbURL != "" {
		env = append(env, "CAIRN_DATABASE_URL="+dbURL)
	}
	args := append([]string{
		"--insecure", "--admin-addr", addr, "--agent-addr", cp.agentAddr, "--data-dir", filepath.Join(dir, "data"),
		"--ca-dir", filepath.Join(dir, "ca"), "--trust-domain", e2eTrustDomain, "--agent-api-names", "localhost,127.0.0.1",
		"--bootstrap-token-file", tokenFile,
	}, extraArgs...)
	cp.p = start(t, bin, env, args...)
	base := "http://" + addr
	waitReady(t, cp.p, http.DefaultClient, base)

	b, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	bearer := withToken(tok)
	ctx := context.Background()
	tenant, err := adminv1connect.NewTenantServiceClient(http.DefaultClient, base, bearer).CreateTenant(ctx,
		connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "acme"}}))
	if err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	dp, err := adminv1connect.NewDataPlaneServiceClient(http.DefaultClient, base, bearer).CreateDataPlane(ctx,
		connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
			TenantId: tenant.Msg.Tenant.Id, Name: "edge", Region: "eu-west-1", Cloud: adminv1.Cloud_CLOUD_GCP,
		}}))
	if err != nil {
		t.Fatalf("CreateDataPlane: %v", err)
	}
	cp.dataPlaneID = dp.Msg.DataPlane.Id
	cp.agents = adminv1connect.NewAgentServiceClient(http.DefaultClient, base, bearer)

	tb, err := cp.agents.GetTrustBundle(ctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
	if err != nil {
		t.Fatalf("GetTrustBundle: %v", err)
	}
	if tb.Msg.TrustDomain != e2eTrustDomain || len(tb.Msg.Pins) != 1 {
		t.Fatalf("GetTrustBundle: trust domain %q, %d pins; want %q and 1", tb.Msg.TrustDomain, len(tb.Msg.Pins), e2eTrustDomain)
	}
	cas, err := certs.ParseCertsPEM([]byte(tb.Msg.BundlePem))
	if err != nil || len(cas) != 1 || certs.SPKIPin(cas[0]) != tb.Msg.Pins[0] {
		t.Fatalf("GetTrustBundle: bundle_pem does not hold the pinned CA (%v)", err)
	}
	cp.pin, cp.bundlePEM = tb.Msg.Pins[0], tb.Msg.BundlePem
	return cp
}

// joinToken creates a join token for the data plane.
func (cp *agentCP) joinToken(t *testing.T) string {
	t.Helper()
	resp, err := cp.agents.CreateJoinToken(context.Background(), connect.NewRequest(&adminv1.CreateJoinTokenRequest{DataPlaneId: cp.dataPlaneID}))
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	cp.tokens = append(cp.tokens, resp.Msg.JoinToken)
	return resp.Msg.JoinToken
}

func (cp *agentCP) listAgents(t *testing.T) []*adminv1.Agent {
	t.Helper()
	resp, err := cp.agents.ListAgents(context.Background(), connect.NewRequest(&adminv1.ListAgentsRequest{DataPlaneId: cp.dataPlaneID, PageSize: 100}))
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	return resp.Msg.Agents
}

// wantAgents fails unless ListAgents shows n agents.
func (cp *agentCP) wantAgents(t *testing.T, n int) []*adminv1.Agent {
	t.Helper()
	got := cp.listAgents(t)
	if len(got) != n {
		t.Fatalf("ListAgents shows %d agents; want %d", len(got), n)
	}
	return got
}

// stop stops the control plane with SIGINT, expecting a clean exit, and
// checks that no join token reached its output.
func (cp *agentCP) stop(t *testing.T) {
	t.Helper()
	cp.p.stop(t)
	out := cp.p.stdout.String() + cp.p.stderr.String()
	for _, tok := range cp.tokens {
		if strings.Contains(out, tok) {
			t.Errorf("a join token appears in the control plane's output")
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// agentProc is a running cairn-agent.
type agentProc struct {
	name    string
	dataDir string
	cmd     *exec.Cmd
	out     *syncBuffer // stdout and stderr
	done    chan struct{}
	err     error // set when done is closed
}

// agentOpts is how to start an agent.
type agentOpts struct {
	dataDir   string
	token     string // passed in a --join-token-file, unless tokenEnv
	tokenEnv  bool   // pass the token as CAIRN_AGENT_JOIN_TOKEN instead
	pin       string
	caBundle  string
	extraArgs []string
	// owner, if set, is the test whose end stops the agent, for an agent
	// that outlives the subtest starting it.
	owner *testing.T
}

func startAgent(t *testing.T, cp *agentCP, name string, o agentOpts) *agentProc {
	t.Helper()
	args := []string{"--control-plane", cp.agentAddr, "--data-dir", o.dataDir, "--log-format", "json"}
	var env []string
	if o.token != "" && o.tokenEnv {
		env = append(env, "CAIRN_AGENT_JOIN_TOKEN="+o.token)
	} else if o.token != "" {
		f := filepath.Join(t.TempDir(), "join-token")
		if err := os.WriteFile(f, []byte(o.token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--join-token-file", f)
	}
	if o.pin != "" {
		args = append(args, "--ca-pin", o.pin)
	}
	if o.caBundle != "" {
		args = append(args, "--ca-bundle", o.caBundle)
	}
	args = append(args, o.extraArgs...)
	a := &agentProc{name: name, dataDir: o.dataDir, out: &syncBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(filepath.Join(binaries(t), "cairn-agent"), args...)
	a.cmd.Env = append(os.Environ(), env...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	owner := t
	if o.owner != nil {
		owner = o.owner
	}
	owner.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		<-a.done
		if owner.Failed() {
			owner.Logf("%s output:\n%s", a.name, a.out)
		}
		for _, tok := range cp.tokens {
			if strings.Contains(a.out.String(), tok) {
				owner.Errorf("a join token appears in %s's output", a.name)
			}
		}
	})
	return a
}

func (a *agentProc) running() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// exitCode waits up to d for the agent to exit and returns its code.
func (a *agentProc) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-a.done:
	case <-time.After(d):
		t.Fatalf("%s still running after %v:\n%s", a.name, d, a.out)
	}
	var ee *exec.ExitError
	switch {
	case a.err == nil:
		return 0
	case errors.As(a.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", a.name, a.err)
	return -1
}

// interrupt stops the agent with SIGINT and returns its exit code.
func (a *agentProc) interrupt(t *testing.T) int {
	t.Helper()
	_ = a.cmd.Process.Signal(os.Interrupt)
	return a.exitCode(t, 30*time.Second)
}

// waitLog waits until the agent has logged msg, failing if it exits
// first.
func (a *agentProc) waitLog(t *testing.T, msg string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(a.out.String(), `"msg":"`+msg+`"`) {
		if !a.running() {
			t.Fatalf("%s exited (%v) before logging %q:\n%s", a.name, a.err, msg, a.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v:\n%s", a.name, msg, d, a.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// identityInfo reads the agent's identity.json.
func (a *agentProc) identityInfo(t *testing.T) (agentID, spiffeID string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dataDir, "identity", "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		AgentID  string `json:"agent_id"`
		SPIFFEID string `json:"spiffe_id"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	return info.AgentID, info.SPIFFEID
}

// svidLeaf reads the first certificate of the agent's svid.pem.
func svidLeaf(t *testing.T, dataDir string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "identity", "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			t.Fatal("svid.pem holds no certificate")
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}

// checkIdentityFiles checks the persisted identity's files and modes.
func checkIdentityFiles(t *testing.T, dataDir string) {
	t.Helper()
	dir := filepath.Join(dataDir, "identity")
	for name, want := range map[string]os.FileMode{"": 0o700, "svid.pem": 0o600, "identity.json": 0o600, "bundle.pem": 0o644, "signing-root.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v; want %v", filepath.Join(dir, name), fi.Mode().Perm(), want)
		}
	}
}

func TestAgentLifecycleSQLite(t *testing.T) {
	testAgentLifecycle(t, "")
}

func TestAgentLifecyclePostgres(t *testing.T) {
	testAgentLifecycle(t, storetest.PostgresURL(t))
}

// testAgentLifecycle drives cairn-agent against cairn-controlplane:
// enrollment with a pin and with a bundle, restart from disk, refused
// tokens and pins, and revocation.
func testAgentLifecycle(t *testing.T, dbURL string) {
	cp := startAgentCP(t, dbURL)
	root := t.TempDir()
	outer := t
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	tokenA := cp.joinToken(t)
	var first *agentProc
	var firstID string
	step("enroll with a CA pin", func(t *testing.T) {
		first = startAgent(t, cp, "agent-1", agentOpts{dataDir: filepath.Join(root, "a1"), token: tokenA, pin: cp.pin})
		first.waitLog(t, "enrolled", time.Minute)
		first.waitLog(t, "agent identity", time.Minute)
		got := cp.wantAgents(t, 1)[0]
		var spiffeID string
		firstID, spiffeID = first.identityInfo(t)
		if got.Id != firstID || got.SpiffeId != spiffeID || !strings.HasPrefix(spiffeID, "spiffe://"+e2eTrustDomain+"/") {
			t.Fatalf("ListAgents shows %s %s; identity.json says %s %s", got.Id, got.SpiffeId, firstID, spiffeID)
		}
		if got.AgentVersion == "" || got.RevokeTime != nil {
			t.Fatalf("agent version %q, revoke time %v; want a version and no revocation", got.AgentVersion, got.RevokeTime)
		}
		checkIdentityFiles(t, first.dataDir)
		if leaf := svidLeaf(t, first.dataDir); leaf.URIs[0].String() != spiffeID {
			t.Fatalf("svid.pem names %s; want %s", leaf.URIs[0], spiffeID)
		}
		if code := first.interrupt(t); code != 0 {
			t.Fatalf("agent exit code %d after SIGINT; want 0", code)
		}
	})

	step("restart reuses the identity", func(t *testing.T) {
		before := svidLeaf(t, first.dataDir)
		first = startAgent(t, cp, "agent-1 restarted", agentOpts{dataDir: first.dataDir, owner: outer})
		first.waitLog(t, "agent identity", time.Minute)
		if strings.Contains(first.out.String(), `"msg":"enrolled"`) {
			t.Fatal("the restarted agent enrolled again")
		}
		if id, _ := first.identityInfo(t); id != firstID {
			t.Fatalf("agent id %s after restart; want %s", id, firstID)
		}
		if !svidLeaf(t, first.dataDir).Equal(before) {
			t.Fatal("svid.pem changed on restart")
		}
		cp.wantAgents(t, 1)
		// Still running a moment later: the control plane accepted it.
		time.Sleep(time.Second)
		if !first.running() {
			t.Fatalf("restarted agent exited: %v\n%s", first.err, first.out)
		}
	})

	step("a used join token is refused", func(t *testing.T) {
		a := startAgent(t, cp, "agent-2 (used token)", agentOpts{dataDir: filepath.Join(root, "a2"), token: tokenA, pin: cp.pin})
		if code := a.exitCode(t, 30*time.Second); code != 1 {
			t.Fatalf("agent with a used join token: exit code %d; want 1\n%s", code, a.out)
		}
		if !strings.Contains(a.out.String(), "join token is invalid, used or expired") {
			t.Errorf("the agent's output does not give the refusal:\n%s", a.out)
		}
		cp.wantAgents(t, 1)
		if _, err := os.Stat(filepath.Join(a.dataDir, "identity", "svid.pem")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("svid.pem of the refused agent: %v; want none", err)
		}
	})

	step("enroll with a CA bundle file", func(t *testing.T) {
		bundle := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(bundle, []byte(cp.bundlePEM), 0o644); err != nil {
			t.Fatal(err)
		}
		a := startAgent(t, cp, "agent-3 (bundle)", agentOpts{dataDir: filepath.Join(root, "a3"), token: cp.joinToken(t), tokenEnv: true, caBundle: bundle})
		a.waitLog(t, "enrolled", time.Minute)
		cp.wantAgents(t, 2)
		checkIdentityFiles(t, a.dataDir)
		if code := a.interrupt(t); code != 0 {
			t.Fatalf("agent exit code %d after SIGINT; want 0", code)
		}
	})

	step("a wrong CA pin is refused and leaves the token unused", func(t *testing.T) {
		tokenC := cp.joinToken(t)
		wrongPin := otherPin(t)
		a := startAgent(t, cp, "agent-4 (wrong pin)", agentOpts{dataDir: filepath.Join(root, "a4"), token: tokenC, pin: wrongPin})
		t.Run("exits non-zero", func(t *testing.T) {
			if code := a.exitCode(t, 30*time.Second); code == 0 {
				t.Fatal("agent with a wrong pin exited 0; want non-zero")
			}
		})
		// Give it a few attempts.
		time.Sleep(3 * time.Second)
		if a.running() && !strings.Contains(a.out.String(), "enrollment failed") {
			t.Fatalf("agent with a wrong pin neither failed nor exited:\n%s", a.out)
		}
		if !strings.Contains(a.out.String(), "CA pin") {
			t.Errorf("the agent's output does not say the pin did not match:\n%s", a.out)
		}
		cp.wantAgents(t, 2)
		if a.running() {
			a.interrupt(t)
		}
		ok := startAgent(t, cp, "agent-4 (right pin)", agentOpts{dataDir: filepath.Join(root, "a4"), token: tokenC, pin: cp.pin})
		ok.waitLog(t, "enrolled", time.Minute)
		cp.wantAgents(t, 3)
		if code := ok.interrupt(t); code != 0 {
			t.Fatalf("agent exit code %d after SIGINT; want 0", code)
		}
	})

	step("revocation stops the running agent with code 3", func(t *testing.T) {
		if !first.running() {
			t.Fatalf("agent-1 is not running: %v", first.err)
		}
		began := time.Now()
		resp, err := cp.agents.RevokeAgent(context.Background(), connect.NewRequest(&adminv1.RevokeAgentRequest{Id: firstID, Reason: "e2e"}))
		if err != nil {
			t.Fatalf("RevokeAgent: %v", err)
		}
		if resp.Msg.Agent.RevokeTime == nil {
			t.Fatal("RevokeAgent returned an agent without revoke_time")
		}
		code := first.exitCode(t, 20*time.Second)
		t.Logf("revoked agent exited %v after RevokeAgent", time.Since(began).Round(time.Millisecond))
		if code != 3 {
			t.Fatalf("revoked agent exit code %d; want 3\n%s", code, first.out)
		}
		// Starting it again does not help.
		again := startAgent(t, cp, "agent-1 after revocation", agentOpts{dataDir: first.dataDir})
		if code := again.exitCode(t, 30*time.Second); code != 3 {
			t.Fatalf("revoked agent restarted: exit code %d; want 3\n%s", code, again.out)
		}
		cp.wantAgents(t, 3)
	})

	cp.stop(t)
}

// otherPin is a well-formed pin of a key no control plane has.
func otherPin(t *testing.T) string {
	t.Helper()
	key, err := certs.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return certs.SPKIPin(&x509.Certificate{RawSubjectPublicKeyInfo: spki})
}

// TestAgentSVIDRotation runs the control plane with the shortest SVID
// lifetime and watches the agent renew.
func TestAgentSVIDRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for an SVID renewal, up to a minute")
	}
	cp := startAgentCP(t, "", "--svid-ttl", "1m")
	dir := filepath.Join(t.TempDir(), "agent")
	a := startAgent(t, cp, "agent", agentOpts{dataDir: dir, token: cp.joinToken(t), pin: cp.pin})
	a.waitLog(t, "enrolled", time.Minute)
	first := svidLeaf(t, dir)
	firstExpiry := cp.wantAgents(t, 1)[0].SvidExpireTime.AsTime()
	t.Logf("first SVID: serial %x, lifetime %v", first.SerialNumber, first.NotAfter.Sub(first.NotBefore))

	// Renewal is due at 40-60% of the 90s life (60s plus 30s backdating),
	// 6-24s after issue; allow for a loaded machine.
	began := time.Now()
	deadline := began.Add(60 * time.Second)
	for svidLeaf(t, dir).SerialNumber.Cmp(first.SerialNumber) == 0 {
		if !a.running() {
			t.Fatalf("agent exited: %v\n%s", a.err, a.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("svid.pem not renewed within 60s:\n%s", a.out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	renewed := svidLeaf(t, dir)
	t.Logf("SVID renewed %v after the check began; new serial %x", time.Since(began).Round(time.Second), renewed.SerialNumber)
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed SVID expires %v; want after the first's %v", renewed.NotAfter, first.NotAfter)
	}
	if renewed.URIs[0].String() != first.URIs[0].String() {
		t.Errorf("renewed SVID names %s; want %s", renewed.URIs[0], first.URIs[0])
	}
	checkIdentityFiles(t, dir)
	a.waitLog(t, "SVID renewed", 10*time.Second)
	if got := cp.wantAgents(t, 1)[0].SvidExpireTime.AsTime(); !got.After(firstExpiry) {
		t.Errorf("ListAgents svid_expire_time %v after renewal; want after %v", got, firstExpiry)
	}

	// The agent keeps running on its new SVID and stops cleanly.
	time.Sleep(2 * time.Second)
	if !a.running() {
		t.Fatalf("agent exited after renewal: %v\n%s", a.err, a.out)
	}
	if code := a.interrupt(t); code != 0 {
		t.Fatalf("agent exit code %d after SIGINT; want 0", code)
	}
	cp.stop(t)
	if strings.Contains(a.out.String(), `"level":"ERROR"`) {
		t.Errorf("agent logged errors:\n%s", a.out)
	}
}
