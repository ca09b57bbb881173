// Package devenv is `make dev`: it starts a local control plane on embedded
// SQLite with plaintext admin API, seeds a demo tenant, data plane and
// config document through the admin API, prints copy-paste next steps, and
// stops the processes it started when its context ends. It is a developer
// convenience; nothing in production imports it.
package devenv

import (
	"context"
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
	if cfg.Dir == "" || cfg.BinDir == "" || cfg.AdminAddr == "" || cfg.Out == nil {
		return errors.New("devenv: Dir, BinDir, AdminAddr and Out are required")
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

	cp := exec.Command(filepath.Join(cfg.BinDir, "cairn-controlplane"),
		"--insecure", "--admin-addr", cfg.AdminAddr, "--data-dir", cfg.Dir,
		"--bootstrap-token-file", tokenFile, "--log-format", "text")
	cp.Stdout, cp.Stderr = logFile, logFile
	if err := cp.Start(); err != nil {
		return fmt.Errorf("devenv: start control plane: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cp.Wait() }()
	defer func() {
		_ = cp.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cp.Process.Kill()
			<-exited
		}
	}()

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
	Addr, Dir, TokenFile, Log         string
	TenantID, DataPlaneID, DocumentID string
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
  logs        {{.Log}}
  demo        tenant {{.TenantID}}
              data plane {{.DataPlaneID}}
              config document {{.DocumentID}}

Try it (in another terminal, from this directory):

  export CAIRN_TOKEN=$(cat {{.TokenFile}})

  # what the server offers (reflection; no token needed)
  go tool grpcurl -plaintext {{.Addr}} list
  go tool grpcurl -plaintext {{.Addr}} describe cairn.admin.v1.ConfigService

  # the demo config document, over gRPC
  go tool grpcurl -plaintext -H "authorization: Bearer $CAIRN_TOKEN" -d '{"id":"{{.DocumentID}}"}' {{.Addr}} cairn.admin.v1.ConfigService/GetConfigDocument

  # change it (the etag from the previous answer makes the write conditional; omit it to overwrite)
  go tool grpcurl -plaintext -H "authorization: Bearer $CAIRN_TOKEN" -d '{"id":"{{.DocumentID}}","structured":{"message":"changed","replicas":5}}' {{.Addr}} cairn.admin.v1.ConfigService/UpdateConfigDocument

  # the same API as JSON over HTTP
  curl -s -H "authorization: Bearer $CAIRN_TOKEN" -H 'content-type: application/json' -d '{"labelSelector":"tier in (gold,silver)"}' http://{{.Addr}}/cairn.admin.v1.TenantService/ListTenants

  # who changed what
  curl -s -H "authorization: Bearer $CAIRN_TOKEN" -H 'content-type: application/json' -d '{"resourceId":"{{.DocumentID}}"}' http://{{.Addr}}/cairn.admin.v1.AuditService/ListAuditEvents

  # health, readiness, metrics
  curl -s http://{{.Addr}}/readyz; curl -s http://{{.Addr}}/metrics | grep cairn_admin_rpc

Press Ctrl-C to stop. State stays in {{.Dir}}; delete it to start afresh.
`))
