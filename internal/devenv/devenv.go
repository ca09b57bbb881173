// Package devenv is `make dev`: it starts a local control plane on embedded
// SQLite with plaintext admin API, seeds a demo tenant, data plane and
// config document through the admin API, prints copy-paste next steps, and
// stops the processes it started when its context ends. It is a developer
// convenience; nothing in production imports it.
package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
)

// Config configures Run.
type Config struct {
	// Dir holds the SQLite database, the bootstrap token and logs. Required.
	Dir string
	// BinDir holds the built cairn-controlplane. Required.
	BinDir string
	// AdminAddr is the admin API address, e.g. 127.0.0.1:7443. Required.
	AdminAddr string
	// AgentAddr is the agent API address, e.g. 127.0.0.1:7444. Required.
	AgentAddr string
	// AgentHTTPAddr is the agent's /healthz and /metrics address; ""
	// serves neither.
	AgentHTTPAddr string
	// Out receives the next steps. Required.
	Out io.Writer
	// Ready, if set, is called with the printed next steps once the
	// environment is up; tests use it.
	Ready func(steps string)
}

// Demo object names; Run reuses them when they exist from an earlier run.
const (
	demoTenant    = "demo"
	demoDataPlane = "local"
	demoKind      = "cairn.dev/greeting"
	demoDoc       = "hello"
)

// Run starts the environment and blocks until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Dir == "" || cfg.BinDir == "" || cfg.AdminAddr == "" || cfg.AgentAddr == "" || cfg.Out == nil {
		return errors.New("devenv: Dir, BinDir, AdminAddr, AgentAddr and Out are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	tokenFile := filepath.Join(cfg.Dir, "admin.token")
	logPath := filepath.Join(cfg.Dir, "controlplane.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	defer logFile.Close()

	cp, exited, err := startProcess(filepath.Join(cfg.BinDir, "cairn-controlplane"), logFile,
		"--insecure", "--admin-addr", cfg.AdminAddr, "--agent-addr", cfg.AgentAddr, "--data-dir", cfg.Dir,
		"--bootstrap-token-file", tokenFile, "--log-format", "text")
	if err != nil {
		return fmt.Errorf("devenv: start control plane: %w", err)
	}
	defer stopProcess(cp, exited)

	base := "http://" + cfg.AdminAddr
	if err := waitReady(ctx, base, exited); err != nil {
		return fmt.Errorf("devenv: control plane did not become ready (see %s): %w", logPath, err)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	ids, err := seed(ctx, base, strings.TrimSpace(string(tok)))
	if err != nil {
		return fmt.Errorf("devenv: seed demo objects: %w", err)
	}
	ids.Addr, ids.Dir, ids.TokenFile, ids.Log = cfg.AdminAddr, cfg.Dir, tokenFile, logPath

	agentDir := filepath.Join(cfg.Dir, "agent")
	agentLogPath := filepath.Join(cfg.Dir, "agent.log")
	agentLog, err := os.OpenFile(agentLogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	defer agentLog.Close()
	agentArgs, err := agentStartArgs(ctx, base, strings.TrimSpace(string(tok)), ids.DataPlaneID, agentDir, cfg)
	if err != nil {
		return fmt.Errorf("devenv: prepare agent: %w", err)
	}
	ag, agentExited, err := startProcess(filepath.Join(cfg.BinDir, "cairn-agent"), agentLog, agentArgs...)
	if err != nil {
		return fmt.Errorf("devenv: start agent: %w", err)
	}
	defer stopProcess(ag, agentExited)
	info, err := waitEnrolled(ctx, filepath.Join(agentDir, "identity", "identity.json"), agentExited)
	_ = os.Remove(filepath.Join(cfg.Dir, "join.token"))
	if err != nil {
		return fmt.Errorf("devenv: agent did not enroll (see %s): %w", agentLogPath, err)
	}
	ids.AgentAddr, ids.AgentID, ids.AgentSPIFFEID, ids.AgentDir, ids.AgentLog = cfg.AgentAddr, info.AgentID, info.SPIFFEID, agentDir, agentLogPath
	ids.AgentHTTP = cfg.AgentHTTPAddr
	if ids.RolloutID, err = seedFleet(ctx, base, strings.TrimSpace(string(tok)), ids.DataPlaneID); err != nil {
		return fmt.Errorf("devenv: seed the demo fleet: %w", err)
	}
	ids.Cairnctl = filepath.Join(cfg.BinDir, "cairnctl")
	if !filepath.IsAbs(ids.Cairnctl) {
		ids.Cairnctl = "./" + ids.Cairnctl
	}
	ids.Product, ids.From, ids.To = demoProduct, demoFrom, demoTo
	var steps strings.Builder
	if err := nextSteps.Execute(&steps, ids); err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	fmt.Fprint(cfg.Out, steps.String())
	if cfg.Ready != nil {
		cfg.Ready(steps.String())
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-exited:
		return fmt.Errorf("devenv: control plane exited (see %s): %v", logPath, err)
	case err := <-agentExited:
		return fmt.Errorf("devenv: agent exited (see %s): %v", agentLogPath, err)
	}
}

// startProcess starts a binary with its output in log; exited receives
// Wait's result once.
func startProcess(bin string, log *os.File, args ...string) (*exec.Cmd, chan error, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd, exited, nil
}

// stopProcess interrupts a process and waits up to 15 s before killing it.
func stopProcess(cmd *exec.Cmd, exited chan error) {
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		exited <- err // let a concurrent reader see it too
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// agentStartArgs returns cairn-agent's arguments: with a fresh join token
// and the CA pin when the agent has not enrolled yet, else just its
// address and directory.
func agentStartArgs(ctx context.Context, base, tok, dataPlaneID, agentDir string, cfg Config) ([]string, error) {
	// Short report intervals, so the next steps show metrics within seconds.
	args := []string{"--control-plane", cfg.AgentAddr, "--data-dir", agentDir, "--log-format", "text",
		"--metrics-interval", "5s", "--status-interval", "30s"}
	if cfg.AgentHTTPAddr != "" {
		args = append(args, "--http-addr", cfg.AgentHTTPAddr)
	}
	hook, err := writeDemoHook(cfg.Dir)
	if err != nil {
		return nil, err
	}
	args = append(args, "--upgrade-hook", hook)
	if _, err := os.Stat(filepath.Join(agentDir, "identity", "identity.json")); err == nil {
		return args, nil
	}
	agents := adminv1connect.NewAgentServiceClient(http.DefaultClient, base, bearer(tok))
	jt, err := agents.CreateJoinToken(ctx, connect.NewRequest(&adminv1.CreateJoinTokenRequest{DataPlaneId: dataPlaneID}))
	if err != nil {
		return nil, err
	}
	tb, err := agents.GetTrustBundle(ctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
	if err != nil {
		return nil, err
	}
	// A file, not an argument: arguments are visible to other users.
	tokenFile := filepath.Join(cfg.Dir, "join.token")
	if err := os.WriteFile(tokenFile, []byte(jt.Msg.JoinToken), 0o600); err != nil {
		return nil, err
	}
	return append(args, "--join-token-file", tokenFile, "--ca-pin", tb.Msg.Pins[0]), nil
}

type agentInfo struct {
	AgentID  string `json:"agent_id"`
	SPIFFEID string `json:"spiffe_id"`
}

// waitEnrolled waits for the agent to persist its identity.
func waitEnrolled(ctx context.Context, path string, exited chan error) (agentInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if b, err := os.ReadFile(path); err == nil {
			var info agentInfo
			if err := json.Unmarshal(b, &info); err == nil && info.AgentID != "" {
				return info, nil
			}
		}
		select {
		case <-ctx.Done():
			return agentInfo{}, ctx.Err()
		case err := <-exited:
			exited <- err
			return agentInfo{}, fmt.Errorf("agent exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitReady(ctx context.Context, base string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("control plane exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// demoIDs are what the next steps refer to.
type demoIDs struct {
	Addr, Dir, TokenFile, Log                             string
	TenantID, DataPlaneID, DocumentID                     string
	AgentAddr, AgentID, AgentSPIFFEID, AgentDir, AgentLog string
	AgentHTTP                                             string
	Cairnctl, RolloutID, Product, From, To                string
}

func bearer(tok string) connect.Option {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	}))
}

// seed creates the demo objects, or finds them from an earlier run.
func seed(ctx context.Context, base, tok string) (demoIDs, error) {
	var ids demoIDs
	hc := http.DefaultClient
	tenants := adminv1connect.NewTenantServiceClient(hc, base, bearer(tok))
	dps := adminv1connect.NewDataPlaneServiceClient(hc, base, bearer(tok))
	cfgs := adminv1connect.NewConfigServiceClient(hc, base, bearer(tok))

	lt, err := tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{LabelSelector: "cairn.dev/demo"}))
	if err != nil {
		return ids, err
	}
	for _, t := range lt.Msg.Tenants {
		if t.Name == demoTenant {
			ids.TenantID = t.Id
		}
	}
	if ids.TenantID == "" {
		t, err := tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{
			Name: demoTenant, DisplayName: "Demo Corp", Labels: map[string]string{"cairn.dev/demo": "true", "tier": "gold"},
		}}))
		if err != nil {
			return ids, err
		}
		ids.TenantID = t.Msg.Tenant.Id
	}

	ld, err := dps.ListDataPlanes(ctx, connect.NewRequest(&adminv1.ListDataPlanesRequest{TenantId: ids.TenantID}))
	if err != nil {
		return ids, err
	}
	for _, d := range ld.Msg.DataPlanes {
		if d.Name == demoDataPlane {
			ids.DataPlaneID = d.Id
		}
	}
	if ids.DataPlaneID == "" {
		d, err := dps.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
			TenantId: ids.TenantID, Name: demoDataPlane, Region: "local-1", Cloud: adminv1.Cloud_CLOUD_OTHER,
			Labels: map[string]string{"env": "dev"},
		}}))
		if err != nil {
			return ids, err
		}
		ids.DataPlaneID = d.Msg.DataPlane.Id
	}

	key := &adminv1.ConfigKey{Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: ids.DataPlaneID}}, Kind: demoKind, Name: demoDoc}
	gd, err := cfgs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Key: key}))
	switch {
	case err == nil:
		ids.DocumentID = gd.Msg.Document.Id
	case connect.CodeOf(err) == connect.CodeNotFound:
		content, _ := structpb.NewStruct(map[string]any{"message": "hello from cairn", "replicas": 3})
		d, err := cfgs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
			Scope: key.Scope, Kind: demoKind, Name: demoDoc,
			Content: &adminv1.ConfigDocument_Structured{Structured: content},
		}}))
		if err != nil {
			return ids, err
		}
		ids.DocumentID = d.Msg.Document.Id
	default:
		return ids, err
	}
	return ids, nil
}

var nextSteps = template.Must(template.New("steps").Parse(`
Cairn is running locally.
  admin API   http://{{.Addr}}  (gRPC, gRPC-Web and Connect/JSON; plaintext because --insecure)
  agent API   {{.AgentAddr}}  (grpc-go, SPIFFE mTLS)
  logs        {{.Log}}, {{.AgentLog}}
  demo        tenant {{.TenantID}}
              data plane {{.DataPlaneID}}
              config document {{.DocumentID}}
  agent       {{.AgentID}} (enrolled with a join token, running; identity in {{.AgentDir}}/identity)
              {{.AgentSPIFFEID}}

Try it (in another terminal, from this directory):

  export CAIRN_TOKEN=$(cat {{.TokenFile}})

  # what the server offers (reflection; no token needed)
  go tool grpcurl -plaintext {{.Addr}} list
  go tool grpcurl -plaintext {{.Addr}} describe cairn.admin.v1.ConfigService

  # the demo config document, over gRPC
  go tool grpcurl -plaintext -H "authorization: Bearer $CAIRN_TOKEN" -d '{"id":"{{.DocumentID}}"}' {{.Addr}} cairn.admin.v1.ConfigService/GetConfigDocument

  # what the agent serves to data-plane services, from its verified cache (Unix socket)
  go tool grpcurl -plaintext -unix {{.AgentDir}}/agent.sock cairn.agent.v1.LocalConfigService/ListDocuments

  # watch the agent apply what you change (signed deltas over mTLS), in another terminal:
  #   go tool grpcurl -plaintext -unix {{.AgentDir}}/agent.sock cairn.agent.v1.LocalConfigService/Watch
  #   tail -f {{.AgentLog}}

  # change it (the etag from the previous answer makes the write conditional; omit it to overwrite)
  go tool grpcurl -plaintext -H "authorization: Bearer $CAIRN_TOKEN" -d '{"id":"{{.DocumentID}}","structured":{"message":"changed","replicas":5}}' {{.Addr}} cairn.admin.v1.ConfigService/UpdateConfigDocument

  # the same API as JSON over HTTP
  curl -s -H "authorization: Bearer $CAIRN_TOKEN" -H 'content-type: application/json' -d '{"labelSelector":"tier in (gold,silver)"}' http://{{.Addr}}/cairn.admin.v1.TenantService/ListTenants

  # who changed what
  curl -s -H "authorization: Bearer $CAIRN_TOKEN" -H 'content-type: application/json' -d '{"resourceId":"{{.DocumentID}}"}' http://{{.Addr}}/cairn.admin.v1.AuditService/ListAuditEvents

  # the enrolled agent, as the control plane sees it: stream position (sync) and its own report (status)
  curl -s -H "authorization: Bearer $CAIRN_TOKEN" -H 'content-type: application/json' -d '{"dataPlaneId":"{{.DataPlaneID}}"}' http://{{.Addr}}/cairn.admin.v1.AgentService/ListAgents

  # a data-plane service pushes a metric through the agent; within seconds the control plane has it
  go tool grpcurl -plaintext -unix -d '{"source":"demo-service","points":[{"name":"demo_requests_total","value":42}]}' {{.AgentDir}}/agent.sock cairn.agent.v1.LocalMetricsService/Push
  go tool grpcurl -plaintext -H "authorization: Bearer $CAIRN_TOKEN" -d '{"agent_id":"{{.AgentID}}","name":"cairn_agent_lag_revisions"}' {{.Addr}} cairn.admin.v1.AgentService/ListAgentMetrics

  # a rollout of {{.Product}} {{.From}} -> {{.To}} over six simulated clusters, started for you: S-curve waves with
  # soaks, the sensitive cluster last, db-legacy skipped (its host is too old for {{.To}}). Each dispatch writes the
  # cluster's desired version into config; the agent's demo upgrade hook ({{.Dir}}/demo-upgrade.sh) pretends to
  # upgrade it and the agent reports the version back, which verifies the cluster.
  {{.Cairnctl}} --server http://{{.Addr}} rollout status {{.RolloutID}} --watch
  go tool grpcurl -plaintext -H "authorization: Bearer $CAIRN_TOKEN" -d '{"id":"{{.RolloutID}}"}' {{.Addr}} cairn.admin.v1.RolloutService/GetRollout
  go tool grpcurl -plaintext -H "authorization: Bearer $CAIRN_TOKEN" -d '{"rollout_id":"{{.RolloutID}}"}' {{.Addr}} cairn.admin.v1.RolloutService/ListRolloutClusters
  {{.Cairnctl}} --server http://{{.Addr}} versions --query product={{.Product}}

  # the agent API, with the agent's own SVID as client certificate
  go tool grpcurl -cert {{.AgentDir}}/identity/svid.pem -key {{.AgentDir}}/identity/svid.pem -cacert {{.AgentDir}}/identity/bundle.pem {{.AgentAddr}} list

  # health, readiness, metrics
  curl -s http://{{.Addr}}/readyz; curl -s http://{{.Addr}}/metrics | grep cairn_admin_rpc
{{- if .AgentHTTP}}
  curl -s http://{{.AgentHTTP}}/healthz; curl -s http://{{.AgentHTTP}}/metrics | grep cairn_agent_{{end}}

Press Ctrl-C to stop. State stays in {{.Dir}}; delete it to start afresh.
`))
