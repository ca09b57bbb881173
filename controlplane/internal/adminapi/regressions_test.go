package adminapi_test

// Regression tests for bugs the suite found in the first admin API: each
// failed before its fix.

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// TestBugVersionShorthandAccepted: versions must be full semantic versions
// without a leading v ("1.4.2"), but "1.2" and "1" pass, because
// golang.org/x/mod/semver accepts the shorthands v1.2 and v1.
func TestRegressionVersionShorthandAccepted(t *testing.T) {
	t.Parallel()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	c := s.Clients(admintest.Connect, s.OperatorToken)
	ctx := context.Background()
	for _, v := range []string{"1.2", "1"} {
		t.Run(v, func(t *testing.T) {
			before := auditIDs(t, s)
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: acme.DataPlane.Id, Name: "short-" + strings.ReplaceAll(v, ".", "-"), DesiredVersion: v}}))
			admintest.WantInvalidField(t, err, "cluster.desired_version")
			_, err = c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: acme.DataPlane.Id, Name: "host-" + strings.ReplaceAll(v, ".", "-"), HostVersion: v}}))
			admintest.WantInvalidField(t, err, "cluster.host_version")
			_, err = c.Clusters.UpdateCluster(ctx, connect.NewRequest(&adminv1.UpdateClusterRequest{
				Cluster: &adminv1.Cluster{Id: acme.Cluster.Id, DesiredVersion: v}, UpdateMask: mask("desired_version")}))
			admintest.WantInvalidField(t, err, "cluster.desired_version")
			wantNoNewAudit(t, s, before)
		})
	}
}

// TestBugAuditDigestChainBrokenByEmptyLabels: an object written with no
// labels is digested with labels null, but read back with labels {}, so the
// next event's old_digest is not the previous new_digest.
func TestRegressionAuditDigestChainBrokenByEmptyLabels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	op := s.Operator()
	acme := s.SeedTenant(t, "acme")
	bare, err := op.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "bare"}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
		Tenant: &adminv1.Tenant{Id: bare.Msg.Tenant.Id, DisplayName: "Bare"}, UpdateMask: mask("display_name")})); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := op.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
			Id: acme.DataPlaneDoc.Id, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("a: 1", "application/yaml")}})); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{bare.Msg.Tenant.Id, acme.DataPlaneDoc.Id} {
		evs := events(t, s, id)
		for i := 1; i < len(evs); i++ {
			if evs[i].OldDigest != evs[i-1].NewDigest {
				t.Errorf("%s event %d (%s): got old_digest %s; want the previous new_digest %s",
					id, i, evs[i].Action, evs[i].OldDigest, evs[i-1].NewDigest)
			}
		}
	}
}

// TestBugConfigKeyIgnoresScopeType: a config key or list scope names a
// data plane or a cluster, but only the ID is matched, so a data plane
// scope holding a cluster's ID finds that cluster's documents.
func TestRegressionConfigKeyIgnoresScopeType(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	op := s.Operator()
	_, err := op.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Key: &adminv1.ConfigKey{
		Scope: dpScope(acme.Cluster.Id), Kind: acme.ClusterDoc.Kind, Name: acme.ClusterDoc.Name}}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = op.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Key: &adminv1.ConfigKey{
		Scope: clusterScope(acme.DataPlane.Id), Kind: acme.DataPlaneDoc.Kind, Name: acme.DataPlaneDoc.Name}}))
	wantCode(t, err, connect.CodeNotFound)
	list, err := op.Configs.ListConfigDocuments(ctx, connect.NewRequest(&adminv1.ListConfigDocumentsRequest{Scope: dpScope(acme.Cluster.Id)}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.Msg.Documents); n != 0 {
		t.Fatalf("ListConfigDocuments scope {data_plane_id: <cluster id>}: got %d documents; want 0", n)
	}
}

// TestBugNonCanonicalIDs: IDs are UUIDs compared as text in some places
// (SQLite, visibility checks, TEXT columns) and as uuid in others
// (PostgreSQL UUID columns), and the API accepts any spelling. So an
// upper-case ID is NotFound on SQLite but found on PostgreSQL, and there a
// data plane made with an upper-case tenant_id is audited under a tenant id
// the tenant's own tokens cannot see, and a token made with one can list
// its tenant's data planes but not get them. Each call must either refuse
// the spelling (InvalidArgument) or treat it as the same ID, on every
// backend.
func TestRegressionNonCanonicalIDs(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := admintest.Start(t, admintest.Config{StoreURL: b.URL(t)})
			acme := s.SeedTenant(t, "acme")
			op := s.Operator()
			mine := s.Clients(admintest.Connect, acme.Admin.Secret)
			upTenant := strings.ToUpper(acme.Tenant.Id)

			// either fails unless err is InvalidArgument or nil.
			either := func(t *testing.T, what string, err error) bool {
				t.Helper()
				if c := codeOf(err); c != ok && c != connect.CodeInvalidArgument {
					t.Errorf("%s: got %v; want InvalidArgument or the same answer as for the canonical ID", what, err)
				}
				return err == nil
			}
			got, err := op.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: strings.ToUpper(acme.DataPlane.Id)}))
			if either(t, "GetDataPlane(upper-case id)", err) && got.Msg.DataPlane.Id != acme.DataPlane.Id {
				t.Errorf("GetDataPlane(upper-case id) = %s; want %s", got.Msg.DataPlane.Id, acme.DataPlane.Id)
			}
			_, err = mine.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: upTenant}))
			either(t, "own GetTenant(upper-case id)", err)

			dp, err := op.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
				TenantId: upTenant, Name: "upper", Region: "us-east-1", Cloud: adminv1.Cloud_CLOUD_AWS}}))
			if either(t, "CreateDataPlane(upper-case tenant_id)", err) {
				if dp.Msg.DataPlane.TenantId != acme.Tenant.Id {
					t.Errorf("created data plane tenant_id = %s; want %s", dp.Msg.DataPlane.TenantId, acme.Tenant.Id)
				}
				evs, err := mine.Audit.ListAuditEvents(ctx, connect.NewRequest(&adminv1.ListAuditEventsRequest{ResourceId: dp.Msg.DataPlane.Id}))
				if err != nil {
					t.Fatal(err)
				}
				if len(evs.Msg.Events) != 1 {
					t.Errorf("tenant's own audit log shows %d events for its new data plane; want 1", len(evs.Msg.Events))
				}
			}

			tok, err := op.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{TenantId: upTenant, Role: adminv1.Role_ROLE_VIEWER}))
			if either(t, "CreateToken(upper-case tenant_id)", err) {
				c := s.Clients(admintest.Connect, tok.Msg.Secret)
				_, err := c.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: acme.DataPlane.Id}))
				if err != nil {
					t.Errorf("token made with upper-case tenant_id: GetDataPlane of its tenant: %v; want success", err)
				}
			}
		})
	}
}

// TestBugCreateTokenExpireTimeNotAsStored: CreateToken answers with the
// expiry it computed, to the nanosecond, but the store keeps microseconds,
// so GetToken later reports a different expire_time for the same token.
func TestRegressionCreateTokenExpireTimeNotAsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	op := s.Operator()
	for range 5 { // a whole-microsecond time.Now is rare; five misses are rarer
		created, err := op.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Role: adminv1.Role_ROLE_VIEWER, Ttl: durationpb.New(time.Hour)}))
		if err != nil {
			t.Fatal(err)
		}
		got, err := op.Tokens.GetToken(ctx, connect.NewRequest(&adminv1.GetTokenRequest{Id: created.Msg.Token.Id}))
		if err != nil {
			t.Fatal(err)
		}
		if w, g := created.Msg.Token.ExpireTime.AsTime(), got.Msg.Token.ExpireTime.AsTime(); !w.Equal(g) {
			t.Fatalf("GetToken expire_time = %v; want %v, as CreateToken answered", g, w)
		}
	}
}

// TestBugTokenExpiryIgnoresServerClock: server.Config.Now is "the clock
// for token expiry", and the authenticator uses it, but CreateToken
// computes expire_time from time.Now. With the server's clock ahead of the
// wall clock, a token with a one-hour ttl is expired the moment it is made.
func TestRegressionTokenExpiryIgnoresServerClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := admintest.NewClock(time.Now().Add(24 * time.Hour))
	s := admintest.Start(t, admintest.Config{Now: clock.Now})
	tok := s.CreateToken(t, "", adminv1.Role_ROLE_VIEWER, time.Hour)
	if got, want := tok.ExpireTime.AsTime(), clock.Now().Add(time.Hour); got.Sub(want).Abs() > time.Millisecond {
		t.Errorf("expire_time = %v; want %v (server clock + ttl)", got, want)
	}
	_, err := s.Clients(admintest.Connect, tok.Secret).Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{}))
	if err != nil {
		t.Fatalf("fresh token with a one-hour ttl: got %v; want it to work", err)
	}
}

// TestBugMediaTypeWithoutSubtype: raw content needs a media type such as
// application/yaml, but "yaml" passes, because mime.ParseMediaType also
// parses Content-Disposition values, which have no subtype.
func TestRegressionMediaTypeWithoutSubtype(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	before := auditIDs(t, s)
	_, err := s.Operator().Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: dpScope(acme.DataPlane.Id), Kind: "cairn.dev/x", Name: "x",
		Content: &adminv1.ConfigDocument_Raw{Raw: rawContent("a: 1", "yaml")}}}))
	admintest.WantInvalidField(t, err, "document.content.raw.media_type")
	wantNoNewAudit(t, s, before)
}

// TestBugBearerSchemeCaseSensitive: HTTP authentication schemes are
// case-insensitive (RFC 9110, section 11.1), but "bearer <token>" is
// refused.
func TestRegressionBearerSchemeCaseSensitive(t *testing.T) {
	t.Parallel()
	s := admintest.Start(t, admintest.Config{})
	c := s.Clients(admintest.Connect, "", connect.WithInterceptors(ctxHeader{}))
	for _, scheme := range []string{"bearer", "BEARER"} {
		ctx := withHeader(context.Background(), "Authorization", scheme+" "+s.OperatorToken)
		_, err := c.Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{}))
		if err != nil {
			t.Errorf("scheme %q: got %v; want success", scheme, err)
		}
	}
}
