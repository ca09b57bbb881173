// Package admintest starts a real admin API server for tests: a fresh
// store, the bootstrap operator token, the server from package server on a
// loopback port, and the generated connect clients that talk to it over the
// Connect protocol (HTTP/1.1) or gRPC (h2c). It fakes nothing but the clock.
// Only tests may import it.
package admintest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/server"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
	"github.com/cairnhq/cairn/internal/storetest"
)

// Config configures Start.
type Config struct {
	// StoreURL names the database (store.Config.URL); "" means a fresh
	// SQLite file in a temporary directory.
	StoreURL string
	// MaxMessageBytes is server.Config.MaxMessageBytes; 0 means the
	// server's default.
	MaxMessageBytes int
	// Now is the server's clock for token expiry; nil means time.Now.
	Now func() time.Time
}

// The release Start puts in the catalog, so calls can name one that
// exists.
const (
	SeedProduct = "demo"
	SeedVersion = "1.0.0"
)

// Server is a running admin API server.
type Server struct {
	// URL is the server's base URL, http://127.0.0.1:<port>.
	URL string
	// Store is the store the server uses, for assertions that need to
	// look below the API. Tests should prefer the API.
	Store *store.Store
	// OperatorToken is the bootstrap token: operator-wide, admin role.
	OperatorToken string
	// OperatorTokenID is its public ID.
	OperatorTokenID string

	http1 *http.Client // HTTP/1.1, for the Connect protocol
	h2c   *http.Client // HTTP/2 with prior knowledge, for gRPC
}

// Protocol is the wire protocol a client speaks.
type Protocol int

// The protocols the admin API serves.
const (
	// Connect is the Connect protocol (binary protobuf) over HTTP/1.1.
	Connect Protocol = iota
	// GRPC is gRPC over cleartext HTTP/2.
	GRPC
)

// String returns "connect" or "grpc".
func (p Protocol) String() string {
	if p == GRPC {
		return "grpc"
	}
	return "connect"
}

// Protocols lists every Protocol, for table tests.
var Protocols = []Protocol{Connect, GRPC}

// Start opens a store, bootstraps the operator token through a bootstrap
// file in a temporary directory, and serves the admin API on 127.0.0.1:0
// until the test ends. Server logs go to tb.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(newTBWriter(tb), &slog.HandlerOptions{Level: slog.LevelInfo}))

	url := cfg.StoreURL
	if url == "" {
		url = storetest.SQLiteURL(tb)
	}
	st, err := store.Open(ctx, store.Config{URL: url, Logger: log})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(st.Close)

	path := filepath.Join(tb.TempDir(), "bootstrap-token")
	if err := auth.Bootstrap(ctx, st, path, io.Discard); err != nil {
		tb.Fatalf("bootstrap: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read bootstrap token: %v", err)
	}
	secret := strings.TrimSpace(string(b))
	sec, err := auth.ParseSecret(secret)
	if err != nil {
		tb.Fatalf("parse bootstrap token: %v", err)
	}
	if _, err := st.CreateRelease(ctx, store.Actor{ID: "admintest"}, store.Release{Product: SeedProduct, Version: SeedVersion,
		State: store.ReleaseStable}); err != nil {
		tb.Fatalf("seed release: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	srv, err := server.New(server.Config{
		Listener: l, Store: st, Logger: log, MaxMessageBytes: cfg.MaxMessageBytes, Now: cfg.Now,
	})
	if err != nil {
		_ = l.Close()
		tb.Fatalf("server.New: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("server Run: %v", err)
		}
	})

	h1 := &http.Transport{}
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	tb.Cleanup(func() {
		h1.CloseIdleConnections()
		h2.CloseIdleConnections()
	})
	return &Server{
		URL:             "http://" + l.Addr().String(),
		Store:           st,
		OperatorToken:   secret,
		OperatorTokenID: sec.ID,
		http1:           &http.Client{Transport: h1},
		h2c:             &http.Client{Transport: h2},
	}
}

// tbWriter sends log lines to tb until the test's cleanups start, so a
// late log line cannot panic a finished test.
type tbWriter struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
}

func newTBWriter(tb testing.TB) *tbWriter {
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return w
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// Clients are the admin API's service clients, all sending one token.
type Clients struct {
	Tenants    adminv1connect.TenantServiceClient
	DataPlanes adminv1connect.DataPlaneServiceClient
	Clusters   adminv1connect.ClusterServiceClient
	Configs    adminv1connect.ConfigServiceClient
	Audit      adminv1connect.AuditServiceClient
	Tokens     adminv1connect.TokenServiceClient
	Agents     adminv1connect.AgentServiceClient
	Releases   adminv1connect.ReleaseServiceClient
	Rollouts   adminv1connect.RolloutServiceClient
}

// Clients returns clients speaking p that send "Authorization: Bearer
// token" on every call, unless token is "" or the request already has an
// Authorization header.
func (s *Server) Clients(p Protocol, token string, opts ...connect.ClientOption) Clients {
	hc := s.http1
	if p == GRPC {
		hc = s.h2c
		opts = append([]connect.ClientOption{connect.WithGRPC()}, opts...)
	}
	opts = append(opts, connect.WithInterceptors(bearer(token)))
	return Clients{
		Tenants:    adminv1connect.NewTenantServiceClient(hc, s.URL, opts...),
		DataPlanes: adminv1connect.NewDataPlaneServiceClient(hc, s.URL, opts...),
		Clusters:   adminv1connect.NewClusterServiceClient(hc, s.URL, opts...),
		Configs:    adminv1connect.NewConfigServiceClient(hc, s.URL, opts...),
		Audit:      adminv1connect.NewAuditServiceClient(hc, s.URL, opts...),
		Tokens:     adminv1connect.NewTokenServiceClient(hc, s.URL, opts...),
		Agents:     adminv1connect.NewAgentServiceClient(hc, s.URL, opts...),
		Releases:   adminv1connect.NewReleaseServiceClient(hc, s.URL, opts...),
		Rollouts:   adminv1connect.NewRolloutServiceClient(hc, s.URL, opts...),
	}
}

// Operator returns Connect-protocol clients holding the bootstrap token.
func (s *Server) Operator() Clients { return s.Clients(Connect, s.OperatorToken) }

func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" && req.Header().Get("Authorization") == "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}
}

// Token is a token created through the API, with its secret.
type Token struct {
	*adminv1.ApiToken
	Secret string
}

// CreateToken creates a token through the bootstrap token: tenantID ""
// makes it operator-wide.
func (s *Server) CreateToken(tb testing.TB, tenantID string, role adminv1.Role, ttl ...time.Duration) Token {
	tb.Helper()
	req := &adminv1.CreateTokenRequest{TenantId: tenantID, Role: role, Description: "test " + role.String()}
	if len(ttl) > 0 {
		req.Ttl = durationpb.New(ttl[0])
	}
	resp, err := s.Operator().Tokens.CreateToken(context.Background(), connect.NewRequest(req))
	if err != nil {
		tb.Fatalf("CreateToken(tenant %q, %v): %v", tenantID, role, err)
	}
	return Token{ApiToken: resp.Msg.Token, Secret: resp.Msg.Secret}
}

// Tenant is one tenant's objects, made by SeedTenant.
type Tenant struct {
	Tenant    *adminv1.Tenant
	DataPlane *adminv1.DataPlane
	Cluster   *adminv1.Cluster
	// DataPlaneDoc is scoped to DataPlane, ClusterDoc to Cluster.
	DataPlaneDoc *adminv1.ConfigDocument
	ClusterDoc   *adminv1.ConfigDocument
	// Admin is a tenant-scoped admin token.
	Admin Token
}

// SeedTenant creates, with the bootstrap token, a tenant called name with
// one data plane, one cluster, a config document scoped to each, and a
// tenant-scoped admin token.
func (s *Server) SeedTenant(tb testing.TB, name string) Tenant {
	tb.Helper()
	ctx := context.Background()
	op := s.Operator()
	var out Tenant
	t, err := op.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{
		Name: name, DisplayName: "Tenant " + name, Labels: map[string]string{"owner": name},
	}}))
	if err != nil {
		tb.Fatalf("CreateTenant %s: %v", name, err)
	}
	out.Tenant = t.Msg.Tenant
	dp, err := op.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
		TenantId: out.Tenant.Id, Name: "dp-" + name, Region: "us-east-1", Cloud: adminv1.Cloud_CLOUD_AWS,
		Labels: map[string]string{"owner": name, "env": "prod"},
	}}))
	if err != nil {
		tb.Fatalf("CreateDataPlane %s: %v", name, err)
	}
	out.DataPlane = dp.Msg.DataPlane
	props, err := structpb.NewStruct(map[string]any{"plan": "enterprise", "nodes": 3})
	if err != nil {
		tb.Fatal(err)
	}
	c, err := op.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
		DataPlaneId: out.DataPlane.Id, Name: "c-" + name, Labels: map[string]string{"owner": name},
		Properties: props, DesiredVersion: "1.2.3", HostVersion: "5.4.0",
	}}))
	if err != nil {
		tb.Fatalf("CreateCluster %s: %v", name, err)
	}
	out.Cluster = c.Msg.Cluster
	content, err := structpb.NewStruct(map[string]any{"port": 443, "owner": name})
	if err != nil {
		tb.Fatal(err)
	}
	d1, err := op.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: out.DataPlane.Id}},
		Kind:  "cairn.dev/ingress", Name: "main", Labels: map[string]string{"owner": name},
		Content: &adminv1.ConfigDocument_Structured{Structured: content},
	}}))
	if err != nil {
		tb.Fatalf("CreateConfigDocument (data plane) %s: %v", name, err)
	}
	out.DataPlaneDoc = d1.Msg.Document
	d2, err := op.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_ClusterId{ClusterId: out.Cluster.Id}},
		Kind:  "cairn.dev/tuning", Name: "main", Labels: map[string]string{"owner": name},
		Content: &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: []byte("owner: " + name + "\n"), MediaType: "application/yaml"}},
	}}))
	if err != nil {
		tb.Fatalf("CreateConfigDocument (cluster) %s: %v", name, err)
	}
	out.ClusterDoc = d2.Msg.Document
	out.Admin = s.CreateToken(tb, out.Tenant.Id, adminv1.Role_ROLE_ADMIN)
	return out
}

// AuditEvents returns every audit event, newest first, read through the
// API with the bootstrap token.
func (s *Server) AuditEvents(tb testing.TB) []*adminv1.AuditEvent {
	tb.Helper()
	var out []*adminv1.AuditEvent
	req := &adminv1.ListAuditEventsRequest{PageSize: 1000}
	for {
		resp, err := s.Operator().Audit.ListAuditEvents(context.Background(), connect.NewRequest(req))
		if err != nil {
			tb.Fatalf("ListAuditEvents: %v", err)
		}
		out = append(out, resp.Msg.Events...)
		if resp.Msg.NextPageToken == "" {
			return out
		}
		req.PageToken = resp.Msg.NextPageToken
	}
}

// WantCode fails the test unless err is a connect error with code want.
func WantCode(tb testing.TB, err error, want connect.Code) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error; want %v", want)
	}
	if got := connect.CodeOf(err); got != want {
		tb.Fatalf("got code %v (%v); want %v", got, err, want)
	}
}

// FieldViolations returns the field violations of the google.rpc.BadRequest
// details of err, or an error if err has none.
func FieldViolations(err error) ([]*errdetails.BadRequest_FieldViolation, error) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil, fmt.Errorf("%v is not a connect error", err)
	}
	var out []*errdetails.BadRequest_FieldViolation
	found := false
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			return nil, fmt.Errorf("detail %s: %w", d.Type(), err)
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			found = true
			out = append(out, br.FieldViolations...)
		}
	}
	if !found {
		return nil, fmt.Errorf("error %v has no google.rpc.BadRequest detail", err)
	}
	return out, nil
}

// WantInvalidField fails the test unless err is InvalidArgument with a
// google.rpc.BadRequest detail naming field.
func WantInvalidField(tb testing.TB, err error, field string) {
	tb.Helper()
	WantCode(tb, err, connect.CodeInvalidArgument)
	fvs, ferr := FieldViolations(err)
	if ferr != nil {
		tb.Fatal(ferr)
	}
	var fields []string
	for _, fv := range fvs {
		if fv.Field == field {
			return
		}
		fields = append(fields, fv.Field)
	}
	tb.Fatalf("got field violations %q; want one for %q (error %v)", fields, field, err)
}

// Clock is a settable clock for server.Config.Now.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock stopped at now.
func NewClock(now time.Time) *Clock { return &Clock{now: now} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
