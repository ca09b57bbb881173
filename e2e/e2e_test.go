// Package e2e drives the real binaries as processes: the control plane
// with real TLS on PostgreSQL, and `make dev`'s flow with every printed
// next step executed as a shell command.
package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
	"github.com/cairnhq/cairn/internal/devenv"
	"github.com/cairnhq/cairn/internal/storetest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds every command once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "cairn-e2e-bin")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "github.com/cairnhq/cairn/cmd/...").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDevFlowPrintedStepsWork runs `make dev`'s flow against the built
// control plane and executes every grpcurl and curl line it prints.
// demoVersionTo is the demo rollout's target (internal/devenv).
const demoVersionTo = "1.1.0"

func TestDevFlowPrintedStepsWork(t *testing.T) {
	bin := binaries(t)
	dir := t.TempDir()
	addr, agentAddr, agentHTTP := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	steps := make(chan string, 1)
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		done <- devenv.Run(ctx, devenv.Config{Dir: dir, BinDir: bin, AdminAddr: addr, AgentAddr: agentAddr, AgentHTTPAddr: agentHTTP, Out: &out,
			Ready: func(s string) { steps <- s }})
	}()
	var text string
	select {
	case text = <-steps:
	case err := <-done:
		t.Fatalf("dev environment stopped before it was ready: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("dev environment not ready after 2 minutes")
	}
	var cmds []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "export ") || strings.HasPrefix(line, "go tool grpcurl") || strings.HasPrefix(line, "curl ") {
			cmds = append(cmds, line)
		}
	}
	if len(cmds) < 8 {
		t.Fatalf("found %d commands in the next steps; want at least 8:\n%s", len(cmds), text)
	}
	export := cmds[0]
	if !strings.HasPrefix(export, "export CAIRN_TOKEN=") {
		t.Fatalf("first step %q; want the token export", export)
	}
	for _, c := range cmds[1:] {
		t.Run(c[:min(len(c), 60)], func(t *testing.T) {
			cmd := exec.Command("bash", "-euo", "pipefail", "-c", export+"\n"+c)
			cmd.Dir = "." // the module, so `go tool grpcurl` resolves
			got, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s\nfailed: %v\n%s", c, err, got)
			}
			if len(bytes.TrimSpace(got)) == 0 || bytes.Contains(got, []byte(`"code":`)) || bytes.Contains(got, []byte("ERROR:")) {
				t.Fatalf("%s\nanswered:\n%s", c, got)
			}
		})
	}
	// The printed steps changed the demo document (revision 2); the local
	// agent received both revisions as signed deltas and applied them.
	agentLog := filepath.Join(dir, "agent.log")
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(agentLog)
		if strings.Contains(string(b), `msg="config delta applied" revision=2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not apply revision 2 within 30s:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The metric pushed through the agent's socket reached the control
	// plane through the agent's report queue.
	var metrics string
	for _, c := range cmds {
		if strings.Contains(c, "ListAgentMetrics") {
			metrics = strings.Replace(c, "cairn_agent_lag_revisions", "demo_requests_total", 1)
		}
	}
	if metrics == "" {
		t.Fatal("the next steps do not show ListAgentMetrics")
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		got, err := exec.Command("bash", "-euo", "pipefail", "-c", export+"\n"+metrics).CombinedOutput()
		if err == nil && bytes.Contains(got, []byte(`"demo-service"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pushed metric did not reach the control plane within 60s: %v\n%s", err, got)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The demo rollout runs to completion: the local agent's demo hook
	// upgrades each dispatched cluster and reports it; the incompatible
	// cluster is skipped with its rule.
	var getRollout, listRolloutClusters string
	for _, c := range cmds {
		switch {
		case strings.Contains(c, "RolloutService/GetRollout"):
			getRollout = c
		case strings.Contains(c, "RolloutService/ListRolloutClusters"):
			listRolloutClusters = c
		}
	}
	if getRollout == "" || listRolloutClusters == "" {
		t.Fatal("the next steps do not show the demo rollout")
	}
	deadline = time.Now().Add(3 * time.Minute)
	for {
		got, err := exec.Command("bash", "-euo", "pipefail", "-c", export+"\n"+getRollout).CombinedOutput()
		if err == nil && bytes.Contains(got, []byte(`"ROLLOUT_STATE_COMPLETED"`)) {
			if !bytes.Contains(got, []byte(`"succeeded": 5`)) || !bytes.Contains(got, []byte(`"skipped": 1`)) {
				t.Fatalf("the demo rollout completed with other counts than 5 succeeded, 1 skipped:\n%s", got)
			}
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(agentLog)
			t.Fatalf("the demo rollout did not complete within 3 minutes: %v\n%s\nagent log:\n%s", err, got, b)
		}
		time.Sleep(time.Second)
	}
	got, err := exec.Command("bash", "-euo", "pipefail", "-c", export+"\n"+listRolloutClusters).CombinedOutput()
	if err != nil || !bytes.Contains(got, []byte("host 3.2.0 is outside the range")) {
		t.Fatalf("the demo rollout's clusters do not show db-legacy skipped with its rule: %v\n%s", err, got)
	}
	// The printed cairnctl lines work too (the watch ends: the rollout is
	// complete).
	var ctl []string
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, filepath.Join(bin, "cairnctl")) {
			ctl = append(ctl, line)
		}
	}
	if len(ctl) < 2 {
		t.Fatalf("the next steps show %d cairnctl lines; want the rollout's status and the versions", len(ctl))
	}
	for _, c := range ctl {
		got, err := exec.Command("bash", "-euo", "pipefail", "-c", export+"\n"+c).CombinedOutput()
		if err != nil || !bytes.Contains(got, []byte(demoVersionTo)) {
			t.Fatalf("%s\nfailed: %v\n%s", c, err, got)
		}
		t.Logf("%s\n%s", c, got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("dev environment: %v", err)
	}
	// A second run reuses the demo objects instead of failing on them.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() {
		done <- devenv.Run(ctx2, devenv.Config{Dir: dir, BinDir: bin, AdminAddr: addr, AgentAddr: agentAddr, AgentHTTPAddr: agentHTTP, Out: &bytes.Buffer{},
			Ready: func(s string) { steps <- s }})
	}()
	select {
	case s := <-steps:
		for _, key := range []string{"config document ", "agent       "} {
			if !strings.Contains(s, strings.Split(strings.Split(text, key)[1], "\n")[0]) {
				t.Fatalf("second run did not reuse the demo %s:\n%s", strings.TrimSpace(key), s)
			}
		}
	case err := <-done:
		t.Fatalf("second run failed: %v", err)
	}
	cancel2()
	<-done
}

// testPKI writes a CA and a server certificate for 127.0.0.1/localhost.
func testPKI(t *testing.T, dir string) (caFile, certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cairn test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cairn-controlplane"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return write("ca.pem", "CERTIFICATE", caDER), write("tls.pem", "CERTIFICATE", der), write("tls.key", "PRIVATE KEY", keyDER), pool
}

// withToken makes admin API clients send the bearer token on every call.
func withToken(tok string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	}))
}

type process struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan error
}

func start(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(filepath.Join(bin, "cairn-controlplane"), args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *process) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("control plane exited with %v after SIGINT; stderr:\n%s", err, p.stderr)
		}
		p.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not stop within 30s of SIGINT")
	}
}

func waitReady(t *testing.T, p *process, client *http.Client, base string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("control plane exited: %v\n%s", err, p.stderr)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("control plane not ready within a minute:\n%s", p.stderr)
}

// TestControlPlaneTLSOnPostgres runs the binary with real TLS on a fresh
// PostgreSQL database and speaks to it with grpcurl, grpc-go, gRPC-Web and
// Connect clients; then restarts it and checks the state and token
// survived.
func TestControlPlaneTLSOnPostgres(t *testing.T) {
	bin := binaries(t)
	dir := t.TempDir()
	dbURL := storetest.PostgresURL(t)
	caFile, certFile, keyFile, pool := testPKI(t, dir)
	addr := freeAddr(t)
	tokenFile := filepath.Join(dir, "admin.token")
	env := []string{"CAIRN_DATABASE_URL=" + dbURL, "CAIRN_TLS_CERT=" + certFile, "CAIRN_TLS_KEY=" + keyFile}
	args := []string{"--admin-addr", addr, "--data-dir", dir, "--bootstrap-token-file", tokenFile}

	p := start(t, bin, env, args...)
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	base := "https://" + addr
	waitReady(t, p, tlsClient, base)
	tokBytes, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokBytes))

	// grpcurl over TLS: reflection lists every service.
	out, err := exec.Command("go", "tool", "grpcurl", "-cacert", caFile, addr, "list").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	for _, svc := range []string{"cairn.admin.v1.TenantService", "cairn.admin.v1.ConfigService", "cairn.admin.v1.AuditService", "cairn.admin.v1.TokenService"} {
		if !strings.Contains(string(out), svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, out)
		}
	}

	// grpc-go (the real gRPC implementation) creates a tenant.
	ctx := context.Background()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tenants := adminv1.NewTenantServiceClient(conn)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	created, err := tenants.CreateTenant(authed, &adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "acme"}})
	if err != nil {
		t.Fatalf("grpc-go CreateTenant: %v", err)
	}
	if _, err := tenants.GetTenant(ctx, &adminv1.GetTenantRequest{Id: created.Tenant.Id}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call without token: got %v; want Unauthenticated", err)
	}

	// gRPC-Web and Connect clients read it back.
	bearer := withToken(tok)
	for name, opt := range map[string]connect.ClientOption{"grpc-web": connect.WithGRPCWeb(), "connect": connect.WithProtoJSON()} {
		c := adminv1connect.NewTenantServiceClient(tlsClient, base, bearer, opt)
		got, err := c.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: created.Tenant.Id}))
		if err != nil || got.Msg.Tenant.Name != "acme" {
			t.Fatalf("%s GetTenant = %v, %v", name, got, err)
		}
	}

	// Restart on the same database: state and token survive.
	p.stop(t)
	// Output is complete once the process has exited.
	if strings.Contains(p.stderr.String(), tok) || strings.Contains(p.stdout.String(), tok) {
		t.Fatal("the bootstrap token appears in the control plane's output")
	}
	if strings.Contains(p.stderr.String(), "postgres@") && !strings.Contains(dbURL, "postgres@") {
		t.Fatal("database URL logged")
	}
	// Logs are JSON, one line per call, each with a request id. Read
	// them once the process has exited, when all its output is in.
	var rpcLines int
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		var rec map[string]any
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] == "rpc" {
			rpcLines++
			if id, _ := rec["request_id"].(string); id == "" {
				t.Fatalf("rpc log line without request id: %q", line)
			}
		}
	}
	if rpcLines < 4 {
		t.Fatalf("got %d rpc log lines; want at least 4", rpcLines)
	}

	p2 := start(t, bin, env, args...)
	waitReady(t, p2, tlsClient, base)
	got, err := tenants.GetTenant(authed, &adminv1.GetTenantRequest{Id: created.Tenant.Id})
	if err != nil || got.Tenant.Name != "acme" {
		t.Fatalf("after restart GetTenant = %v, %v", got, err)
	}
	p2.stop(t)
}

// TestControlPlaneRefusesPlaintextWithoutInsecure checks the binary will
// not serve plaintext by accident, and prints the token once on a fresh
// install without a token file.
func TestControlPlaneStartupRules(t *testing.T) {
	bin := binaries(t)
	dir := t.TempDir()
	p := start(t, bin, nil, "--data-dir", dir, "--admin-addr", freeAddr(t))
	select {
	case err := <-p.done:
		p.done <- err
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Fatalf("without TLS or --insecure: exit %v; want 2", err)
		}
		if !strings.Contains(p.stderr.String(), "--insecure") {
			t.Fatalf("error does not explain the fix:\n%s", p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("control plane started without TLS or --insecure")
	}

	addr := freeAddr(t)
	p = start(t, bin, nil, "--data-dir", dir, "--admin-addr", addr, "--insecure")
	waitReady(t, p, http.DefaultClient, "http://"+addr)
	p.stop(t) // its output is complete once it has exited
	if !strings.Contains(p.stdout.String(), "Bootstrap operator token") || !strings.Contains(p.stdout.String(), "cairn_") {
		t.Fatalf("fresh install did not print the bootstrap token:\n%s", p.stdout)
	}
	if strings.Contains(p.stderr.String(), "cairn_") {
		t.Fatal("the bootstrap token reached the log")
	}
	p = start(t, bin, nil, "--data-dir", dir, "--admin-addr", addr, "--insecure")
	waitReady(t, p, http.DefaultClient, "http://"+addr)
	p.stop(t)
	if strings.Contains(p.stdout.String(), "Bootstrap operator token") {
		t.Fatal("the bootstrap token was printed a second time")
	}
}
