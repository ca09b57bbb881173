package adminapi_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// aim is what a call by another tenant aims at: IDs and current etags.
type aim struct {
	tenantID, tenantEtag       string
	dataPlaneID, dataPlaneEtag string
	clusterID, clusterEtag     string
	dpDocID, dpDocEtag         string
	clDocID, clDocEtag         string
	tokenID, opTokenID         string
}

func aimAt(s *admintest.Server, t admintest.Tenant) aim {
	return aim{
		tenantID: t.Tenant.Id, tenantEtag: t.Tenant.Etag,
		dataPlaneID: t.DataPlane.Id, dataPlaneEtag: t.DataPlane.Etag,
		clusterID: t.Cluster.Id, clusterEtag: t.Cluster.Etag,
		dpDocID: t.DataPlaneDoc.Id, dpDocEtag: t.DataPlaneDoc.Etag,
		clDocID: t.ClusterDoc.Id, clDocEtag: t.ClusterDoc.Etag,
		tokenID: t.Admin.Id, opTokenID: s.OperatorTokenID,
	}
}

// unknown is a with every ID replaced by one that names nothing; the etags
// stay, so the two differ only in whether the objects exist.
func (a aim) unknown() aim {
	u := a
	u.tenantID, u.dataPlaneID, u.clusterID = unknownID(), unknownID(), unknownID()
	u.dpDocID, u.clDocID, u.tokenID, u.opTokenID = unknownID(), unknownID(), unknownID(), unknownID()
	return u
}

// redact replaces a's IDs in msg by their names, so that error messages
// about different objects can be compared.
func (a aim) redact(msg string) string {
	return strings.NewReplacer(
		a.tenantID, "<tenant>", a.dataPlaneID, "<data plane>", a.clusterID, "<cluster>",
		a.dpDocID, "<dp doc>", a.clDocID, "<cluster doc>", a.tokenID, "<token>", a.opTokenID, "<operator token>",
	).Replace(msg)
}

// crossTenantCalls are calls on another tenant's objects, by ID, of every
// RPC that takes one, with and without the objects' current etags.
func crossTenantCalls() []struct {
	name string
	call func(ctx context.Context, c admintest.Clients, a aim) error
} {
	const stale = "0123456789abcdef"
	type call = func(ctx context.Context, c admintest.Clients, a aim) error
	cs := []struct {
		name string
		call call
	}{
		{"TenantService/GetTenant", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: a.tenantID}))
			return err
		}},
		{"TenantService/UpdateTenant", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
				Tenant: &adminv1.Tenant{Id: a.tenantID, DisplayName: "hijacked"}, UpdateMask: mask("display_name")}))
			return err
		}},
		{"TenantService/UpdateTenant with etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
				Tenant: &adminv1.Tenant{Id: a.tenantID, Etag: a.tenantEtag, Labels: map[string]string{"x": "y"}}}))
			return err
		}},
		{"TenantService/UpdateTenant with stale etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
				Tenant: &adminv1.Tenant{Id: a.tenantID, Etag: stale, DisplayName: "hijacked"}}))
			return err
		}},
		{"TenantService/DeleteTenant", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: a.tenantID}))
			return err
		}},
		{"TenantService/DeleteTenant with etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: a.tenantID, Etag: a.tenantEtag}))
			return err
		}},

		{"DataPlaneService/CreateDataPlane", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
				TenantId: a.tenantID, Name: "intruder", Region: "eu-west-1", Cloud: adminv1.Cloud_CLOUD_OTHER}}))
			return err
		}},
		{"DataPlaneService/GetDataPlane", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: a.dataPlaneID}))
			return err
		}},
		{"DataPlaneService/UpdateDataPlane with etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.DataPlanes.UpdateDataPlane(ctx, connect.NewRequest(&adminv1.UpdateDataPlaneRequest{
				DataPlane: &adminv1.DataPlane{Id: a.dataPlaneID, Etag: a.dataPlaneEtag, Labels: map[string]string{"x": "y"}}}))
			return err
		}},
		{"DataPlaneService/UpdateDataPlane with stale etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.DataPlanes.UpdateDataPlane(ctx, connect.NewRequest(&adminv1.UpdateDataPlaneRequest{
				DataPlane: &adminv1.DataPlane{Id: a.dataPlaneID, Etag: stale}, UpdateMask: mask("labels")}))
			return err
		}},
		{"DataPlaneService/DeleteDataPlane", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: a.dataPlaneID}))
			return err
		}},
		{"DataPlaneService/DeleteDataPlane with stale etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: a.dataPlaneID, Etag: stale}))
			return err
		}},

		{"ClusterService/CreateCluster", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: a.dataPlaneID, Name: "intruder"}}))
			return err
		}},
		{"ClusterService/GetCluster", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: a.clusterID}))
			return err
		}},
		{"ClusterService/UpdateCluster with etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Clusters.UpdateCluster(ctx, connect.NewRequest(&adminv1.UpdateClusterRequest{
				Cluster: &adminv1.Cluster{Id: a.clusterID, Etag: a.clusterEtag, DesiredVersion: "6.6.6"}, UpdateMask: mask("desired_version")}))
			return err
		}},
		{"ClusterService/UpdateCluster with stale etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Clusters.UpdateCluster(ctx, connect.NewRequest(&adminv1.UpdateClusterRequest{
				Cluster: &adminv1.Cluster{Id: a.clusterID, Etag: stale}}))
			return err
		}},
		{"ClusterService/DeleteCluster", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Clusters.DeleteCluster(ctx, connect.NewRequest(&adminv1.DeleteClusterRequest{Id: a.clusterID}))
			return err
		}},
		{"ClusterService/DeleteCluster with etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Clusters.DeleteCluster(ctx, connect.NewRequest(&adminv1.DeleteClusterRequest{Id: a.clusterID, Etag: a.clusterEtag}))
			return err
		}},

		{"ConfigService/CreateConfigDocument in data plane", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
				Scope: dpScope(a.dataPlaneID), Kind: "cairn.dev/intruder", Name: "x",
				Content: &adminv1.ConfigDocument_Raw{Raw: rawContent("x", "text/plain")}}}))
			return err
		}},
		{"ConfigService/CreateConfigDocument in cluster", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
				Scope: clusterScope(a.clusterID), Kind: "cairn.dev/intruder", Name: "x",
				Content: &adminv1.ConfigDocument_Raw{Raw: rawContent("x", "text/plain")}}}))
			return err
		}},
		{"ConfigService/GetConfigDocument data plane doc by id", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: a.dpDocID}))
			return err
		}},
		{"ConfigService/GetConfigDocument cluster doc by id", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: a.clDocID}))
			return err
		}},
		{"ConfigService/GetConfigDocument data plane doc by key", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{
				Key: &adminv1.ConfigKey{Scope: dpScope(a.dataPlaneID), Kind: "cairn.dev/ingress", Name: "main"}}))
			return err
		}},
		{"ConfigService/GetConfigDocument cluster doc by key", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{
				Key: &adminv1.ConfigKey{Scope: clusterScope(a.clusterID), Kind: "cairn.dev/tuning", Name: "main"}}))
			return err
		}},
		{"ConfigService/UpdateConfigDocument data plane doc", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
				Id: a.dpDocID, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("hijacked", "text/plain")}}))
			return err
		}},
		{"ConfigService/UpdateConfigDocument cluster doc with etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
				Id: a.clDocID, Etag: a.clDocEtag, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("hijacked", "text/plain")}}))
			return err
		}},
		{"ConfigService/UpdateConfigDocument with stale etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
				Id: a.dpDocID, Etag: stale, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("hijacked", "text/plain")}}))
			return err
		}},
		{"ConfigService/DeleteConfigDocument data plane doc with etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: a.dpDocID, Etag: a.dpDocEtag}))
			return err
		}},
		{"ConfigService/DeleteConfigDocument cluster doc", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: a.clDocID}))
			return err
		}},
		{"ConfigService/DeleteConfigDocument with stale etag", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: a.clDocID, Etag: stale}))
			return err
		}},

		{"TokenService/CreateToken", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{TenantId: a.tenantID, Role: adminv1.Role_ROLE_ADMIN}))
			return err
		}},
		{"TokenService/CreateToken viewer", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{TenantId: a.tenantID, Role: adminv1.Role_ROLE_VIEWER}))
			return err
		}},
		{"TokenService/GetToken", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tokens.GetToken(ctx, connect.NewRequest(&adminv1.GetTokenRequest{Id: a.tokenID}))
			return err
		}},
		{"TokenService/GetToken operator-wide", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tokens.GetToken(ctx, connect.NewRequest(&adminv1.GetTokenRequest{Id: a.opTokenID}))
			return err
		}},
		{"TokenService/RevokeToken", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tokens.RevokeToken(ctx, connect.NewRequest(&adminv1.RevokeTokenRequest{Id: a.tokenID}))
			return err
		}},
		{"TokenService/RevokeToken operator-wide", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Tokens.RevokeToken(ctx, connect.NewRequest(&adminv1.RevokeTokenRequest{Id: a.opTokenID}))
			return err
		}},

		{"AgentService/CreateJoinToken", func(ctx context.Context, c admintest.Clients, a aim) error {
			_, err := c.Agents.CreateJoinToken(ctx, connect.NewRequest(&adminv1.CreateJoinTokenRequest{DataPlaneId: a.dataPlaneID}))
			return err
		}},
	}
	return cs
}

// owned is an object as far as tenancy goes.
type owned struct{ id, tenantID string }

// lister lists one kind of object with one filter, one page at a time.
type lister struct {
	name string
	page func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error)
}

// pageAll lists everything l returns, following page tokens, with small
// pages so that paging is crossed too.
func pageAll(tb testing.TB, c admintest.Clients, l lister) []owned {
	tb.Helper()
	out, _ := pageAllSize(tb, c, l, 2)
	return out
}

// pageAllSize lists everything l returns in pages of size, and returns it
// with the length of each page.
func pageAllSize(tb testing.TB, c admintest.Clients, l lister, size int32) ([]owned, []int) {
	tb.Helper()
	var out []owned
	var pages []int
	token := ""
	for range 10000 {
		items, next, err := l.page(context.Background(), c, size, token)
		if err != nil {
			tb.Fatalf("%s: %v", l.name, err)
		}
		out = append(out, items...)
		pages = append(pages, len(items))
		if next == "" {
			return out, pages
		}
		token = next
	}
	tb.Fatalf("%s: paging did not end", l.name)
	return nil, nil
}

func tenantLister(name string, req *adminv1.ListTenantsRequest) lister {
	return lister{name, func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.Tenants.ListTenants(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		var out []owned
		for _, x := range resp.Msg.Tenants {
			out = append(out, owned{x.Id, x.Id})
		}
		return out, resp.Msg.NextPageToken, nil
	}}
}

func dataPlaneLister(name string, req *adminv1.ListDataPlanesRequest) lister {
	return lister{name, func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.DataPlanes.ListDataPlanes(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		var out []owned
		for _, x := range resp.Msg.DataPlanes {
			out = append(out, owned{x.Id, x.TenantId})
		}
		return out, resp.Msg.NextPageToken, nil
	}}
}

func clusterLister(name string, req *adminv1.ListClustersRequest) lister {
	return lister{name, func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.Clusters.ListClusters(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		var out []owned
		for _, x := range resp.Msg.Clusters {
			out = append(out, owned{x.Id, x.TenantId})
		}
		return out, resp.Msg.NextPageToken, nil
	}}
}

func configLister(name string, req *adminv1.ListConfigDocumentsRequest) lister {
	return lister{name, func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.Configs.ListConfigDocuments(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		var out []owned
		for _, x := range resp.Msg.Documents {
			out = append(out, owned{x.Id, x.TenantId})
		}
		return out, resp.Msg.NextPageToken, nil
	}}
}

func auditLister(name string, req *adminv1.ListAuditEventsRequest) lister {
	return lister{name, func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.Audit.ListAuditEvents(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		var out []owned
		for _, x := range resp.Msg.Events {
			out = append(out, owned{x.ResourceId, x.TenantId})
		}
		return out, resp.Msg.NextPageToken, nil
	}}
}

func agentLister(name string, req *adminv1.ListAgentsRequest) lister {
	return lister{name, func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.Agents.ListAgents(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		var out []owned
		for _, x := range resp.Msg.Agents {
			out = append(out, owned{x.Id, x.TenantId})
		}
		return out, resp.Msg.NextPageToken, nil
	}}
}

func tokenLister(name string, req *adminv1.ListTokensRequest) lister {
	return lister{name, func(ctx context.Context, c admintest.Clients, size int32, token string) ([]owned, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.Tokens.ListTokens(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		var out []owned
		for _, x := range resp.Msg.Tokens {
			out = append(out, owned{x.Id, x.TenantId})
		}
		return out, resp.Msg.NextPageToken, nil
	}}
}

// TestTenantIsolation gives tenants alpha and bravo the same objects and
// lets bravo's tenant-scoped admin token aim every RPC at alpha's. Each
// call by ID must answer NotFound, exactly as for an object that does not
// exist, and write nothing; each list must show bravo's objects only.
func TestTenantIsolation(t *testing.T) {
	for _, backend := range storetest.Backends() {
		t.Run(backend.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := admintest.Start(t, admintest.Config{StoreURL: backend.URL(t)})
			alpha := s.SeedTenant(t, "alpha")
			bravo := s.SeedTenant(t, "bravo")
			a := aimAt(s, alpha)
			before := auditIDs(t, s)

			for _, p := range admintest.Protocols {
				b := s.Clients(p, bravo.Admin.Secret)
				t.Run(p.String(), func(t *testing.T) {
					for _, tc := range crossTenantCalls() {
						t.Run(tc.name, func(t *testing.T) {
							err := tc.call(ctx, b, a)
							wantCode(t, err, connect.CodeNotFound)
							// Existence does not leak: the answer for an
							// object that does not exist is the same.
							u := a.unknown()
							errU := tc.call(ctx, b, u)
							wantCode(t, errU, connect.CodeNotFound)
							if got, want := a.redact(err.Error()), u.redact(errU.Error()); got != want {
								t.Fatalf("got message %q for the other tenant's object; want %q, as for a missing one", got, want)
							}
						})
					}

					t.Run("TenantService own tenant", func(t *testing.T) {
						_, err := b.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
							Tenant: &adminv1.Tenant{Id: bravo.Tenant.Id, DisplayName: "self"}, UpdateMask: mask("display_name")}))
						wantCode(t, err, connect.CodePermissionDenied)
						_, err = b.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: bravo.Tenant.Id}))
						wantCode(t, err, connect.CodePermissionDenied)
						_, err = b.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "charlie"}}))
						wantCode(t, err, connect.CodePermissionDenied)
					})

					bravoOnly := func(ids ...string) []owned {
						var out []owned
						for _, id := range ids {
							out = append(out, owned{id, bravo.Tenant.Id})
						}
						return out
					}
					docs := bravoOnly(bravo.DataPlaneDoc.Id, bravo.ClusterDoc.Id)
					lists := []struct {
						l lister
						// want is the whole list; nil means "only bravo's,
						// at least one".
						want []owned
					}{
						{tenantLister("ListTenants", &adminv1.ListTenantsRequest{}), bravoOnly(bravo.Tenant.Id)},
						{tenantLister("ListTenants alpha's labels", &adminv1.ListTenantsRequest{LabelSelector: "owner=alpha"}), []owned{}},
						{dataPlaneLister("ListDataPlanes", &adminv1.ListDataPlanesRequest{}), bravoOnly(bravo.DataPlane.Id)},
						{dataPlaneLister("ListDataPlanes tenant_id=alpha", &adminv1.ListDataPlanesRequest{TenantId: alpha.Tenant.Id}), []owned{}},
						{dataPlaneLister("ListDataPlanes alpha's labels", &adminv1.ListDataPlanesRequest{LabelSelector: "owner=alpha"}), []owned{}},
						{clusterLister("ListClusters", &adminv1.ListClustersRequest{}), bravoOnly(bravo.Cluster.Id)},
						{clusterLister("ListClusters tenant_id=alpha", &adminv1.ListClustersRequest{TenantId: alpha.Tenant.Id}), []owned{}},
						{clusterLister("ListClusters data_plane_id=alpha's", &adminv1.ListClustersRequest{DataPlaneId: alpha.DataPlane.Id}), []owned{}},
						{configLister("ListConfigDocuments", &adminv1.ListConfigDocumentsRequest{}), docs},
						{configLister("ListConfigDocuments tenant_id=alpha", &adminv1.ListConfigDocumentsRequest{TenantId: alpha.Tenant.Id}), []owned{}},
						{configLister("ListConfigDocuments alpha's data plane", &adminv1.ListConfigDocumentsRequest{Scope: dpScope(alpha.DataPlane.Id)}), []owned{}},
						{configLister("ListConfigDocuments alpha's cluster", &adminv1.ListConfigDocumentsRequest{Scope: clusterScope(alpha.Cluster.Id)}), []owned{}},
						{configLister("ListConfigDocuments by kind", &adminv1.ListConfigDocumentsRequest{Kind: "cairn.dev/ingress"}), bravoOnly(bravo.DataPlaneDoc.Id)},
						{auditLister("ListAuditEvents", &adminv1.ListAuditEventsRequest{}), nil},
						{auditLister("ListAuditEvents tenant_id=alpha", &adminv1.ListAuditEventsRequest{TenantId: alpha.Tenant.Id}), []owned{}},
						{auditLister("ListAuditEvents alpha's data plane", &adminv1.ListAuditEventsRequest{ResourceId: alpha.DataPlane.Id}), []owned{}},
						{auditLister("ListAuditEvents alpha's tenant", &adminv1.ListAuditEventsRequest{ResourceId: alpha.Tenant.Id}), []owned{}},
						{tokenLister("ListTokens", &adminv1.ListTokensRequest{}), bravoOnly(bravo.Admin.Id)},
						{tokenLister("ListTokens tenant_id=alpha", &adminv1.ListTokensRequest{TenantId: alpha.Tenant.Id}), []owned{}},
						{agentLister("ListAgents tenant_id=alpha", &adminv1.ListAgentsRequest{TenantId: alpha.Tenant.Id}), []owned{}},
						{agentLister("ListAgents alpha's data plane", &adminv1.ListAgentsRequest{DataPlaneId: alpha.DataPlane.Id}), []owned{}},
					}
					for _, tc := range lists {
						t.Run(tc.l.name, func(t *testing.T) {
							got := pageAll(t, b, tc.l)
							if tc.want == nil {
								if len(got) == 0 {
									t.Fatalf("got an empty list; want bravo's own")
								}
								for _, o := range got {
									if o.tenantID != bravo.Tenant.Id {
										t.Fatalf("got %v of tenant %q; want only bravo's (%s)", o, o.tenantID, bravo.Tenant.Id)
									}
								}
								return
							}
							sortOwned(got)
							want := slices.Clone(tc.want)
							sortOwned(want)
							if !slices.Equal(got, want) {
								t.Fatalf("got %v; want %v", got, want)
							}
						})
					}
				})
			}

			// Nothing was written, and alpha's objects are as they were.
			wantNoNewAudit(t, s, before)
			op := s.Operator()
			diff := func(what string, want, got proto.Message) {
				t.Helper()
				if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
					t.Errorf("alpha's %s changed (-want +got):\n%s", what, d)
				}
			}
			gt, err := op.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: alpha.Tenant.Id}))
			if err != nil {
				t.Fatal(err)
			}
			diff("tenant", alpha.Tenant, gt.Msg.Tenant)
			gd, err := op.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: alpha.DataPlane.Id}))
			if err != nil {
				t.Fatal(err)
			}
			diff("data plane", alpha.DataPlane, gd.Msg.DataPlane)
			gc, err := op.Clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: alpha.Cluster.Id}))
			if err != nil {
				t.Fatal(err)
			}
			diff("cluster", alpha.Cluster, gc.Msg.Cluster)
			for _, doc := range []*adminv1.ConfigDocument{alpha.DataPlaneDoc, alpha.ClusterDoc} {
				g, err := op.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: doc.Id}))
				if err != nil {
					t.Fatal(err)
				}
				diff("config document", doc, g.Msg.Document)
			}
			for _, tok := range []*adminv1.ApiToken{alpha.Admin.ApiToken} {
				g, err := op.Tokens.GetToken(ctx, connect.NewRequest(&adminv1.GetTokenRequest{Id: tok.Id}))
				if err != nil {
					t.Fatal(err)
				}
				diff("token", tok, g.Msg.Token)
			}
			// Alpha's own token and the operator token still work: nothing
			// was revoked.
			for _, secret := range []string{alpha.Admin.Secret, s.OperatorToken} {
				if _, err := s.Clients(admintest.Connect, secret).Tokens.ListTokens(ctx, connect.NewRequest(&adminv1.ListTokensRequest{})); err != nil {
					t.Errorf("token unusable after the other tenant's calls: %v", err)
				}
			}
			// Alpha has no new objects.
			alphaLists := []struct {
				l    lister
				want []string
			}{
				{dataPlaneLister("data planes", &adminv1.ListDataPlanesRequest{TenantId: alpha.Tenant.Id}), []string{alpha.DataPlane.Id}},
				{clusterLister("clusters", &adminv1.ListClustersRequest{TenantId: alpha.Tenant.Id}), []string{alpha.Cluster.Id}},
				{configLister("config documents", &adminv1.ListConfigDocumentsRequest{TenantId: alpha.Tenant.Id}), []string{alpha.DataPlaneDoc.Id, alpha.ClusterDoc.Id}},
				{tokenLister("tokens", &adminv1.ListTokensRequest{TenantId: alpha.Tenant.Id}), []string{alpha.Admin.Id}},
			}
			for _, al := range alphaLists {
				var got []string
				for _, o := range pageAll(t, op, al.l) {
					got = append(got, o.id)
				}
				slices.Sort(got)
				want := slices.Sorted(slices.Values(al.want))
				if !slices.Equal(got, want) {
					t.Errorf("alpha's %s = %v; want %v", al.l.name, got, want)
				}
			}
		})
	}
}

func sortOwned(s []owned) {
	slices.SortFunc(s, func(a, b owned) int { return strings.Compare(a.id, b.id) })
}
