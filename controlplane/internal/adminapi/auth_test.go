package adminapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// TestAuthentication aims every RPC, over Connect (POST and GET) and gRPC,
// with no token, malformed ones, unknown ones, a wrong secret, an expired
// and a revoked token: each is Unauthenticated and nothing is written.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := admintest.NewClock(time.Now())
	s := admintest.Start(t, admintest.Config{Now: clock.Now})
	acme := s.SeedTenant(t, "acme")
	tg := targetOf(acme)

	// Tokens that work now and stop working below.
	expiring := s.CreateToken(t, "", adminv1.Role_ROLE_ADMIN, time.Hour)
	revoked := s.CreateToken(t, "", adminv1.Role_ROLE_ADMIN)
	if expiring.ExpireTime == nil {
		t.Fatalf("token created with a ttl has no expire_time")
	}
	// Reads only: the control calls must not change anything.
	for _, tok := range []admintest.Token{expiring, revoked} {
		c := s.Clients(admintest.Connect, tok.Secret)
		if _, err := c.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: tg.tenantID})); err != nil {
			t.Fatalf("token %s before expiry/revocation: got %v; want it to work", tok.Id, err)
		}
		if _, err := c.Tokens.ListTokens(ctx, connect.NewRequest(&adminv1.ListTokensRequest{})); err != nil {
			t.Fatalf("token %s before expiry/revocation: got %v; want it to work", tok.Id, err)
		}
	}
	if _, err := s.Operator().Tokens.RevokeToken(ctx, connect.NewRequest(&adminv1.RevokeTokenRequest{Id: revoked.Id})); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	clock.Advance(2 * time.Hour)

	opID := s.OperatorTokenID
	wellFormedSecret := strings.Repeat("s", 43)
	cases := []struct {
		name string
		// header is the whole Authorization header; "" sends none.
		header string
	}{
		{"no header", ""},
		{"empty bearer", "Bearer "},
		{"scheme only", "Bearer"},
		{"not bearer", "Basic " + "dXNlcjpwYXNzd29yZA=="},
		{"token without scheme", s.OperatorToken},
		{"malformed token", "Bearer not-a-token"},
		{"malformed id", "Bearer cairn_not-a-uuid-at-all-but-36-chars-long_" + wellFormedSecret},
		{"short secret", "Bearer cairn_" + opID + "_short"},
		{"wrong prefix", "Bearer xairn_" + opID + "_" + wellFormedSecret},
		{"truncated operator token", "Bearer " + s.OperatorToken[:len(s.OperatorToken)-1]},
		{"unknown token id", "Bearer " + auth.NewSecret().String()},
		{"wrong secret", "Bearer cairn_" + opID + "_" + wellFormedSecret},
		{"expired token", "Bearer " + expiring.Secret},
		{"revoked token", "Bearer " + revoked.Secret},
	}
	// Side-effect-free methods also take Connect GET requests, which carry
	// the message in the URL rather than a body.
	variants := []struct {
		name string
		c    admintest.Clients
	}{
		{"connect", s.Clients(admintest.Connect, "", connect.WithInterceptors(ctxHeader{}))},
		{"connect-get", s.Clients(admintest.Connect, "", connect.WithHTTPGet(), connect.WithInterceptors(ctxHeader{}))},
		{"grpc", s.Clients(admintest.GRPC, "", connect.WithInterceptors(ctxHeader{}))},
	}
	before := auditIDs(t, s)
	for _, v := range variants {
		anon := v.c
		for _, tc := range cases {
			for _, r := range rpcs(tg) {
				t.Run(v.name+"/"+tc.name+"/"+r.name, func(t *testing.T) {
					ctx := ctx
					if tc.header != "" {
						ctx = withHeader(ctx, "Authorization", tc.header)
					}
					err := r.call(ctx, anon)
					wantCode(t, err, connect.CodeUnauthenticated)
				})
			}
		}
	}
	wantNoNewAudit(t, s, before)

	// Control: the same clients and header plumbing let a good token in.
	for _, v := range variants {
		_, err := v.c.Tenants.GetTenant(withHeader(ctx, "Authorization", "Bearer "+s.OperatorToken),
			connect.NewRequest(&adminv1.GetTenantRequest{Id: tg.tenantID}))
		if err != nil {
			t.Fatalf("%s: GetTenant with the operator token in the header: got %v; want success", v.name, err)
		}
	}

	// The objects the calls aimed at are as they were.
	op := s.Operator()
	got, err := op.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: tg.tenantID}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(acme.Tenant, got.Msg.Tenant, protocmp.Transform()); diff != "" {
		t.Fatalf("tenant changed by unauthenticated calls (-want +got):\n%s", diff)
	}
	doc, err := op.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: tg.dpDocID}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(acme.DataPlaneDoc, doc.Msg.Document, protocmp.Transform()); diff != "" {
		t.Fatalf("config document changed by unauthenticated calls (-want +got):\n%s", diff)
	}
}

// withHeader makes calls in ctx through clients built with ctxHeader
// carry one request header.
func withHeader(ctx context.Context, k, v string) context.Context {
	return context.WithValue(ctx, headerKey{}, [2]string{k, v})
}

type headerKey struct{}

// ctxHeader sets the header withHeader put in the call's context.
type ctxHeader struct{}

func (ctxHeader) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if kv, ok := ctx.Value(headerKey{}).([2]string); ok {
			req.Header().Set(kv[0], kv[1])
		}
		return next(ctx, req)
	}
}

func (ctxHeader) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (ctxHeader) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TestRoles calls every RPC with tokens of every role, operator-wide and
// tenant-scoped. A role below the method's is refused with PermissionDenied
// before the handler runs; a sufficient role reaches the handler, which
// answers for the (unknown) objects the call names. Nothing is written.
func TestRoles(t *testing.T) {
	t.Parallel()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	// Calls name objects that do not exist, and CreateTenant reuses an
	// existing name, so an allowed call reaches the handler and fails
	// there without writing.
	tg := unknownTarget(acme.Tenant.Name)
	roles := []adminv1.Role{adminv1.Role_ROLE_VIEWER, adminv1.Role_ROLE_OPERATOR, adminv1.Role_ROLE_ADMIN}
	type principal struct {
		name     string
		role     adminv1.Role
		tenantID string
	}
	var principals []principal
	for _, r := range roles {
		principals = append(principals,
			principal{"operator-wide " + r.String(), r, ""},
			principal{"tenant " + r.String(), r, acme.Tenant.Id})
	}
	secrets := map[string]string{}
	for _, p := range principals {
		secrets[p.name] = s.CreateToken(t, p.tenantID, p.role).Secret
	}

	before := auditIDs(t, s)
	for i, p := range principals {
		proto := admintest.Protocols[i%len(admintest.Protocols)]
		c := s.Clients(proto, secrets[p.name])
		for _, r := range rpcs(tg) {
			t.Run(p.name+"/"+r.name, func(t *testing.T) {
				want, found := unknownTargetWant[r.name]
				if !found {
					t.Fatalf("no expectation for %s", r.name)
				}
				switch {
				case p.role < r.role:
					want = connect.CodePermissionDenied
				case r.name == "TenantService/CreateTenant" && p.tenantID != "":
					// Only operator-wide tokens create tenants.
					want = connect.CodePermissionDenied
				case strings.HasPrefix(r.name, "ReleaseService/") && r.role >= adminv1.Role_ROLE_OPERATOR && p.tenantID != "":
					// The catalog is shared: only operator-wide tokens change it.
					want = connect.CodePermissionDenied
				case strings.HasPrefix(r.name, "RolloutService/") && p.tenantID != "":
					// Rollouts span tenants: only operator-wide tokens see them.
					want = connect.CodePermissionDenied
				}
				wantCode(t, r.call(context.Background(), c), want)
			})
		}
	}
	wantNoNewAudit(t, s, before)
}

// TestTokenRoleCeiling: no token creates a token above its own role or,
// when tenant-scoped, an operator-wide token.
func TestTokenRoleCeiling(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	other := s.SeedTenant(t, "other")
	opViewer := s.CreateToken(t, "", adminv1.Role_ROLE_VIEWER)
	opOperator := s.CreateToken(t, "", adminv1.Role_ROLE_OPERATOR)
	opAdmin := s.CreateToken(t, "", adminv1.Role_ROLE_ADMIN)
	tenantViewer := s.CreateToken(t, acme.Tenant.Id, adminv1.Role_ROLE_VIEWER)
	tenantOperator := s.CreateToken(t, acme.Tenant.Id, adminv1.Role_ROLE_OPERATOR)
	tenantAdmin := acme.Admin

	cases := []struct {
		name     string
		caller   admintest.Token
		tenantID string
		role     adminv1.Role
		want     connect.Code
	}{
		{"operator-wide viewer makes viewer", opViewer, "", adminv1.Role_ROLE_VIEWER, connect.CodePermissionDenied},
		{"operator-wide viewer makes operator", opViewer, "", adminv1.Role_ROLE_OPERATOR, connect.CodePermissionDenied},
		{"operator-wide operator makes admin", opOperator, "", adminv1.Role_ROLE_ADMIN, connect.CodePermissionDenied},
		{"operator-wide operator makes tenant operator", opOperator, acme.Tenant.Id, adminv1.Role_ROLE_OPERATOR, connect.CodePermissionDenied},
		{"tenant viewer makes tenant operator", tenantViewer, acme.Tenant.Id, adminv1.Role_ROLE_OPERATOR, connect.CodePermissionDenied},
		{"tenant operator makes tenant admin", tenantOperator, acme.Tenant.Id, adminv1.Role_ROLE_ADMIN, connect.CodePermissionDenied},
		{"tenant operator makes tenant viewer", tenantOperator, acme.Tenant.Id, adminv1.Role_ROLE_VIEWER, connect.CodePermissionDenied},
		{"tenant admin makes operator-wide viewer", tenantAdmin, "", adminv1.Role_ROLE_VIEWER, connect.CodePermissionDenied},
		{"tenant admin makes operator-wide admin", tenantAdmin, "", adminv1.Role_ROLE_ADMIN, connect.CodePermissionDenied},
		{"tenant admin makes other tenant's admin", tenantAdmin, other.Tenant.Id, adminv1.Role_ROLE_ADMIN, connect.CodeNotFound},
		{"admin makes a role above admin", opAdmin, "", adminv1.Role(adminv1.Role_ROLE_ADMIN + 1), connect.CodeInvalidArgument},
		{"tenant admin makes a role above admin", tenantAdmin, acme.Tenant.Id, adminv1.Role(adminv1.Role_ROLE_ADMIN + 1), connect.CodeInvalidArgument},
	}
	before := auditIDs(t, s)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Clients(admintest.Connect, tc.caller.Secret)
			_, err := c.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{TenantId: tc.tenantID, Role: tc.role}))
			wantCode(t, err, tc.want)
		})
	}
	wantNoNewAudit(t, s, before)

	// Within its ceiling a tenant admin makes tokens for its own tenant,
	// up to admin, and they work.
	c := s.Clients(admintest.GRPC, tenantAdmin.Secret)
	for _, role := range []adminv1.Role{adminv1.Role_ROLE_VIEWER, adminv1.Role_ROLE_OPERATOR, adminv1.Role_ROLE_ADMIN} {
		resp, err := c.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{TenantId: acme.Tenant.Id, Role: role}))
		if err != nil {
			t.Fatalf("tenant admin creates tenant %v: got %v; want success", role, err)
		}
		if got := resp.Msg.Token; got.TenantId != acme.Tenant.Id || got.Role != role {
			t.Fatalf("created token tenant %q role %v; want %q %v", got.TenantId, got.Role, acme.Tenant.Id, role)
		}
		mine := s.Clients(admintest.Connect, resp.Msg.Secret)
		if _, err := mine.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: acme.Tenant.Id})); err != nil {
			t.Fatalf("new %v token reads its tenant: got %v; want success", role, err)
		}
	}
}

// TestOperatorMutates: the operator role may change every kind of object
// (and a tenant-scoped operator those of its tenant), and what it writes
// reads back the same.
func TestOperatorMutates(t *testing.T) {
	t.Parallel()
	s := admintest.Start(t, admintest.Config{})
	opOperator := s.CreateToken(t, "", adminv1.Role_ROLE_OPERATOR)
	t.Run("operator-wide", func(t *testing.T) {
		lifecycle(t, s, s.Clients(admintest.Connect, opOperator.Secret), "")
	})
	t.Run("tenant-scoped", func(t *testing.T) {
		ten, err := s.Operator().Tenants.CreateTenant(context.Background(), connect.NewRequest(&adminv1.CreateTenantRequest{
			Tenant: &adminv1.Tenant{Name: "scoped"}}))
		if err != nil {
			t.Fatal(err)
		}
		tok := s.CreateToken(t, ten.Msg.Tenant.Id, adminv1.Role_ROLE_OPERATOR)
		lifecycle(t, s, s.Clients(admintest.GRPC, tok.Secret), ten.Msg.Tenant.Id)
	})
}

// lifecycle creates, reads, updates and deletes one object of each kind
// with c. With tenantID "" it also creates and deletes the tenant.
func lifecycle(t *testing.T, s *admintest.Server, c admintest.Clients, tenantID string) {
	t.Helper()
	ctx := context.Background()
	diff := func(what string, want, got any) {
		t.Helper()
		if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
			t.Fatalf("%s (-want +got):\n%s", what, d)
		}
	}
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: got %v; want success", what, err)
		}
	}
	var tenant *adminv1.Tenant
	if tenantID == "" {
		resp, err := c.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{
			Name: "lifecycle", DisplayName: "Life Cycle", Labels: map[string]string{"tier": "gold"}}}))
		check("CreateTenant", err)
		tenant = resp.Msg.Tenant
		if tenant.Id == "" || tenant.Etag == "" || tenant.CreateTime == nil || tenant.Name != "lifecycle" {
			t.Fatalf("created tenant lacks server fields or name: %v", tenant)
		}
		up, err := c.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
			Tenant: &adminv1.Tenant{Id: tenant.Id, Etag: tenant.Etag, DisplayName: "Renamed", Name: "ignored"}, UpdateMask: mask("display_name")}))
		check("UpdateTenant", err)
		if up.Msg.Tenant.DisplayName != "Renamed" || up.Msg.Tenant.Name != "lifecycle" || up.Msg.Tenant.Labels["tier"] != "gold" || up.Msg.Tenant.Etag == tenant.Etag {
			t.Fatalf("updated tenant = %v; want display name changed, name and labels kept, new etag", up.Msg.Tenant)
		}
		tenant = up.Msg.Tenant
		tenantID = tenant.Id
	}
	got, err := c.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: tenantID}))
	check("GetTenant", err)
	if tenant != nil {
		diff("GetTenant after update", tenant, got.Msg.Tenant)
	}

	dp, err := c.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
		TenantId: tenantID, Name: "use1", Region: "us-east-1", Cloud: adminv1.Cloud_CLOUD_AZURE, Labels: map[string]string{"env": "prod"}}}))
	check("CreateDataPlane", err)
	gotDP, err := c.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: dp.Msg.DataPlane.Id}))
	check("GetDataPlane", err)
	diff("GetDataPlane after create", dp.Msg.DataPlane, gotDP.Msg.DataPlane)
	upDP, err := c.DataPlanes.UpdateDataPlane(ctx, connect.NewRequest(&adminv1.UpdateDataPlaneRequest{
		DataPlane: &adminv1.DataPlane{Id: dp.Msg.DataPlane.Id, Etag: dp.Msg.DataPlane.Etag, Region: "ignored", Labels: map[string]string{"env": "staging"}}}))
	check("UpdateDataPlane", err)
	if l := upDP.Msg.DataPlane.Labels; l["env"] != "staging" || upDP.Msg.DataPlane.Region != "us-east-1" {
		t.Fatalf("updated data plane = %v; want labels changed and region kept", upDP.Msg.DataPlane)
	}

	cl, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
		DataPlaneId: dp.Msg.DataPlane.Id, Name: "db1", DesiredVersion: "1.2.3", HostVersion: "5.4.0-rc.1",
		Properties: mustStruct(t, map[string]any{"plan": "pro", "nodes": 3})}}))
	check("CreateCluster", err)
	if cl.Msg.Cluster.TenantId != tenantID {
		t.Fatalf("cluster tenant = %q; want %q (from its data plane)", cl.Msg.Cluster.TenantId, tenantID)
	}
	upCl, err := c.Clusters.UpdateCluster(ctx, connect.NewRequest(&adminv1.UpdateClusterRequest{
		Cluster: &adminv1.Cluster{Id: cl.Msg.Cluster.Id, Etag: cl.Msg.Cluster.Etag, DesiredVersion: "1.3.0", HostVersion: "ignored"}, UpdateMask: mask("desired_version")}))
	check("UpdateCluster", err)
	gotCl, err := c.Clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: cl.Msg.Cluster.Id}))
	check("GetCluster", err)
	diff("GetCluster after update", upCl.Msg.Cluster, gotCl.Msg.Cluster)
	if gotCl.Msg.Cluster.DesiredVersion != "1.3.0" || gotCl.Msg.Cluster.HostVersion != "5.4.0-rc.1" {
		t.Fatalf("updated cluster = %v; want desired 1.3.0 and host version kept", gotCl.Msg.Cluster)
	}

	doc, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: clusterScope(cl.Msg.Cluster.Id), Kind: "cairn.dev/ingress", Name: "main",
		Content: &adminv1.ConfigDocument_Structured{Structured: mustStruct(t, map[string]any{"port": 443})}}}))
	check("CreateConfigDocument", err)
	if d := doc.Msg.Document; d.Version != 1 || d.TenantId != tenantID || d.GetScope().GetClusterId() != cl.Msg.Cluster.Id {
		t.Fatalf("created document = %v; want version 1 in tenant %s scoped to cluster %s", d, tenantID, cl.Msg.Cluster.Id)
	}
	byKey, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{
		Key: &adminv1.ConfigKey{Scope: clusterScope(cl.Msg.Cluster.Id), Kind: "cairn.dev/ingress", Name: "main"}}))
	check("GetConfigDocument by key", err)
	diff("GetConfigDocument by key", doc.Msg.Document, byKey.Msg.Document)
	upDoc, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
		Id: doc.Msg.Document.Id, Etag: doc.Msg.Document.Etag,
		Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("port: 8443\n", "application/yaml")},
		Labels:  map[string]string{"team": "net"}}))
	check("UpdateConfigDocument", err)
	if d := upDoc.Msg.Document; d.Version != 2 || string(d.GetRaw().GetData()) != "port: 8443\n" || d.GetRaw().GetMediaType() != "application/yaml" || d.Labels["team"] != "net" {
		t.Fatalf("updated document = %v; want version 2 with the new raw content and labels", d)
	}
	gotDoc, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: doc.Msg.Document.Id}))
	check("GetConfigDocument", err)
	diff("GetConfigDocument after update", upDoc.Msg.Document, gotDoc.Msg.Document)
	_, err = c.Configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: doc.Msg.Document.Id, Etag: upDoc.Msg.Document.Etag}))
	check("DeleteConfigDocument", err)
	_, err = c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: doc.Msg.Document.Id}))
	wantCode(t, err, connect.CodeNotFound)

	_, err = c.Clusters.DeleteCluster(ctx, connect.NewRequest(&adminv1.DeleteClusterRequest{Id: cl.Msg.Cluster.Id, Etag: upCl.Msg.Cluster.Etag}))
	check("DeleteCluster", err)
	_, err = c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: dp.Msg.DataPlane.Id, Etag: upDP.Msg.DataPlane.Etag}))
	check("DeleteDataPlane", err)
	_, err = c.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: dp.Msg.DataPlane.Id}))
	wantCode(t, err, connect.CodeNotFound)
	if tenant != nil {
		_, err = c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: tenant.Id, Etag: tenant.Etag}))
		check("DeleteTenant", err)
		_, err = c.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: tenant.Id}))
		wantCode(t, err, connect.CodeNotFound)
	}
}

// TestAdminManagesTokens: the admin role may use the token service, and
// what it does takes effect at once.
func TestAdminManagesTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	for _, tc := range []struct {
		name     string
		caller   admintest.Token
		tenantID string
	}{
		{"operator-wide admin", s.CreateToken(t, "", adminv1.Role_ROLE_ADMIN), ""},
		{"tenant admin", acme.Admin, acme.Tenant.Id},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Clients(admintest.GRPC, tc.caller.Secret)
			created, err := c.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{
				TenantId: tc.tenantID, Role: adminv1.Role_ROLE_VIEWER, Description: "ci", Ttl: durationpb.New(time.Hour)}))
			if err != nil {
				t.Fatalf("CreateToken: %v", err)
			}
			tok := created.Msg.Token
			if created.Msg.Secret == "" || !strings.Contains(created.Msg.Secret, tok.Id) || tok.ExpireTime == nil || tok.RevokeTime != nil {
				t.Fatalf("created token %v with secret set %t; want a secret naming it, an expiry, no revocation", tok, created.Msg.Secret != "")
			}
			got, err := c.Tokens.GetToken(ctx, connect.NewRequest(&adminv1.GetTokenRequest{Id: tok.Id}))
			if err != nil {
				t.Fatalf("GetToken: %v", err)
			}
			// expire_time is compared to the microsecond: see
			// TestBugCreateTokenExpireTimeNotAsStored.
			if d := cmp.Diff(tok, got.Msg.Token, protocmp.Transform(), protocmp.IgnoreFields(tok, "expire_time")); d != "" {
				t.Fatalf("GetToken (-want +got):\n%s", d)
			}
			if w, g := tok.ExpireTime.AsTime(), got.Msg.Token.ExpireTime.AsTime(); w.Truncate(time.Microsecond) != g.Truncate(time.Microsecond) {
				t.Fatalf("GetToken expire_time = %v; want %v", g, w)
			}
			list, err := c.Tokens.ListTokens(ctx, connect.NewRequest(&adminv1.ListTokensRequest{TenantId: tc.tenantID}))
			if err != nil {
				t.Fatalf("ListTokens: %v", err)
			}
			found := false
			for _, l := range list.Msg.Tokens {
				found = found || l.Id == tok.Id
			}
			if !found {
				t.Fatalf("ListTokens lacks the new token %s", tok.Id)
			}
			viewer := s.Clients(admintest.Connect, created.Msg.Secret)
			if _, err := viewer.Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{})); err != nil {
				t.Fatalf("new token: got %v; want it to work", err)
			}
			rev, err := c.Tokens.RevokeToken(ctx, connect.NewRequest(&adminv1.RevokeTokenRequest{Id: tok.Id}))
			if err != nil {
				t.Fatalf("RevokeToken: %v", err)
			}
			if rev.Msg.Token.RevokeTime == nil {
				t.Fatalf("revoked token has no revoke_time")
			}
			_, err = viewer.Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{}))
			wantCode(t, err, connect.CodeUnauthenticated)
			// Revoking again keeps the first revocation time.
			again, err := c.Tokens.RevokeToken(ctx, connect.NewRequest(&adminv1.RevokeTokenRequest{Id: tok.Id}))
			if err != nil {
				t.Fatalf("RevokeToken again: %v", err)
			}
			if d := cmp.Diff(rev.Msg.Token, again.Msg.Token, protocmp.Transform()); d != "" {
				t.Fatalf("second revocation changed the token (-first +second):\n%s", d)
			}
		})
	}
}
