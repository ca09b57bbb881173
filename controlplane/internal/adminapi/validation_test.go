package adminapi_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// invalidCase is a request that breaks one rule, and the field the
// google.rpc.BadRequest detail must name.
type invalidCase struct {
	name  string
	field string
	call  func(ctx context.Context, c admintest.Clients) error
}

// invalidCases returns requests, one bad field each, against the objects
// of f; each must be refused with InvalidArgument before anything is
// written.
func invalidCases(tb testing.TB, f admintest.Tenant) []invalidCase {
	var (
		long64     = strings.Repeat("a", 64)
		long201    = strings.Repeat("d", 201)
		badKey     = map[string]string{"bad key!": "v"}
		longValue  = map[string]string{"k": strings.Repeat("v", 64)}
		badUUID    = "not-a-uuid"
		shortUUID  = unknownID()[:35]
		mib        = 1 << 20
		bigRaw     = rawContent(strings.Repeat("x", mib+1), "text/plain")
		bigStruct  = mustStruct(tb, map[string]any{"blob": strings.Repeat("x", mib)})
		bigProps   = mustStruct(tb, map[string]any{"blob": strings.Repeat("x", 64<<10)})
		notBase64  = "!!not base64!!"
		notCursor  = base64.RawURLEncoding.EncodeToString([]byte("garbage"))
		badAuditPT = base64.RawURLEncoding.EncodeToString([]byte("yesterday|" + unknownID()))
		// A data plane page token is not an audit cursor.
		idCursor   = base64.RawURLEncoding.EncodeToString([]byte(f.DataPlane.Id))
		badSel     = "env in ("
		tenantID   = f.Tenant.Id
		dpID       = f.DataPlane.Id
		clusterID  = f.Cluster.Id
		docID      = f.DataPlaneDoc.Id
		goodRaw    = &adminv1.ConfigDocument_Raw{Raw: rawContent("a: 1", "application/yaml")}
		goodUpdRaw = &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("a: 1", "application/yaml")}
	)
	createTenant := func(t *adminv1.Tenant) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: t}))
			return err
		}
	}
	updateTenant := func(r *adminv1.UpdateTenantRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.UpdateTenant(ctx, connect.NewRequest(r))
			return err
		}
	}
	listTenants := func(r *adminv1.ListTenantsRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.ListTenants(ctx, connect.NewRequest(r))
			return err
		}
	}
	dp := func(mod func(*adminv1.DataPlane)) func(context.Context, admintest.Clients) error {
		d := &adminv1.DataPlane{TenantId: tenantID, Name: "new-dp", Region: "us-east-1", Cloud: adminv1.Cloud_CLOUD_AWS}
		mod(d)
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: d}))
			return err
		}
	}
	updateDP := func(r *adminv1.UpdateDataPlaneRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.UpdateDataPlane(ctx, connect.NewRequest(r))
			return err
		}
	}
	listDPs := func(r *adminv1.ListDataPlanesRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.ListDataPlanes(ctx, connect.NewRequest(r))
			return err
		}
	}
	cluster := func(mod func(*adminv1.Cluster)) func(context.Context, admintest.Clients) error {
		cl := &adminv1.Cluster{DataPlaneId: dpID, Name: "new-cluster", DesiredVersion: "1.0.0"}
		mod(cl)
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: cl}))
			return err
		}
	}
	updateCluster := func(r *adminv1.UpdateClusterRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.UpdateCluster(ctx, connect.NewRequest(r))
			return err
		}
	}
	listClusters := func(r *adminv1.ListClustersRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.ListClusters(ctx, connect.NewRequest(r))
			return err
		}
	}
	doc := func(mod func(*adminv1.ConfigDocument)) func(context.Context, admintest.Clients) error {
		d := &adminv1.ConfigDocument{Scope: dpScope(dpID), Kind: "cairn.dev/new", Name: "new", Content: goodRaw}
		mod(d)
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: d}))
			return err
		}
	}
	getDoc := func(r *adminv1.GetConfigDocumentRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(r))
			return err
		}
	}
	listDocs := func(r *adminv1.ListConfigDocumentsRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.ListConfigDocuments(ctx, connect.NewRequest(r))
			return err
		}
	}
	updateDoc := func(r *adminv1.UpdateConfigDocumentRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(r))
			return err
		}
	}
	listAudit := func(r *adminv1.ListAuditEventsRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Audit.ListAuditEvents(ctx, connect.NewRequest(r))
			return err
		}
	}
	createToken := func(r *adminv1.CreateTokenRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tokens.CreateToken(ctx, connect.NewRequest(r))
			return err
		}
	}
	listTokens := func(r *adminv1.ListTokensRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tokens.ListTokens(ctx, connect.NewRequest(r))
			return err
		}
	}
	createJoinToken := func(r *adminv1.CreateJoinTokenRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.CreateJoinToken(ctx, connect.NewRequest(r))
			return err
		}
	}
	listAgents := func(r *adminv1.ListAgentsRequest) func(context.Context, admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.ListAgents(ctx, connect.NewRequest(r))
			return err
		}
	}
	byID := func(id string) []invalidCase {
		return []invalidCase{
			{"GetTenant", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: id}))
				return err
			}},
			{"DeleteTenant", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: id}))
				return err
			}},
			{"GetDataPlane", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: id}))
				return err
			}},
			{"DeleteDataPlane", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: id}))
				return err
			}},
			{"GetCluster", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: id}))
				return err
			}},
			{"DeleteCluster", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Clusters.DeleteCluster(ctx, connect.NewRequest(&adminv1.DeleteClusterRequest{Id: id}))
				return err
			}},
			{"GetConfigDocument", "id", getDoc(&adminv1.GetConfigDocumentRequest{Id: id})},
			{"DeleteConfigDocument", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: id}))
				return err
			}},
			{"UpdateConfigDocument", "id", updateDoc(&adminv1.UpdateConfigDocumentRequest{Id: id, Content: goodUpdRaw})},
			{"UpdateTenant", "tenant.id", updateTenant(&adminv1.UpdateTenantRequest{Tenant: &adminv1.Tenant{Id: id}})},
			{"UpdateDataPlane", "data_plane.id", updateDP(&adminv1.UpdateDataPlaneRequest{DataPlane: &adminv1.DataPlane{Id: id}})},
			{"UpdateCluster", "cluster.id", updateCluster(&adminv1.UpdateClusterRequest{Cluster: &adminv1.Cluster{Id: id}})},
			{"GetToken", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Tokens.GetToken(ctx, connect.NewRequest(&adminv1.GetTokenRequest{Id: id}))
				return err
			}},
			{"RevokeToken", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Tokens.RevokeToken(ctx, connect.NewRequest(&adminv1.RevokeTokenRequest{Id: id}))
				return err
			}},
			{"CreateDataPlane tenant_id", "data_plane.tenant_id", dp(func(d *adminv1.DataPlane) { d.TenantId = id })},
			{"CreateCluster data_plane_id", "cluster.data_plane_id", cluster(func(c *adminv1.Cluster) { c.DataPlaneId = id })},
			{"CreateConfigDocument data plane scope", "document.scope.data_plane_id", doc(func(d *adminv1.ConfigDocument) { d.Scope = dpScope(id) })},
			{"CreateConfigDocument cluster scope", "document.scope.cluster_id", doc(func(d *adminv1.ConfigDocument) { d.Scope = clusterScope(id) })},
			{"GetConfigDocument key scope", "key.scope.cluster_id", getDoc(&adminv1.GetConfigDocumentRequest{
				Key: &adminv1.ConfigKey{Scope: clusterScope(id), Kind: "k", Name: "n"}})},
			{"CreateJoinToken", "data_plane_id", createJoinToken(&adminv1.CreateJoinTokenRequest{DataPlaneId: id})},
			{"GetAgent", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Agents.GetAgent(ctx, connect.NewRequest(&adminv1.GetAgentRequest{Id: id}))
				return err
			}},
			{"RevokeAgent", "id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Agents.RevokeAgent(ctx, connect.NewRequest(&adminv1.RevokeAgentRequest{Id: id}))
				return err
			}},
			{"ListAgentMetrics", "agent_id", func(ctx context.Context, c admintest.Clients) error {
				_, err := c.Agents.ListAgentMetrics(ctx, connect.NewRequest(&adminv1.ListAgentMetricsRequest{AgentId: id}))
				return err
			}},
		}
	}
	var cases []invalidCase
	for _, bad := range []struct{ name, id string }{{"missing", ""}, {"not a UUID", badUUID}, {"short UUID", shortUUID}} {
		for _, c := range byID(bad.id) {
			c.name += " " + bad.name + " id"
			cases = append(cases, c)
		}
	}
	// Every List call checks page size, page token and, where it has
	// them, label selector and tenant_id.
	lists := []struct {
		name     string
		call     func(size int32, token, sel, tenant string) func(context.Context, admintest.Clients) error
		selector bool
		tenant   bool
	}{
		{"ListTenants", func(size int32, token, sel, _ string) func(context.Context, admintest.Clients) error {
			return listTenants(&adminv1.ListTenantsRequest{PageSize: size, PageToken: token, LabelSelector: sel})
		}, true, false},
		{"ListDataPlanes", func(size int32, token, sel, tenant string) func(context.Context, admintest.Clients) error {
			return listDPs(&adminv1.ListDataPlanesRequest{PageSize: size, PageToken: token, LabelSelector: sel, TenantId: tenant})
		}, true, true},
		{"ListClusters", func(size int32, token, sel, tenant string) func(context.Context, admintest.Clients) error {
			return listClusters(&adminv1.ListClustersRequest{PageSize: size, PageToken: token, LabelSelector: sel, TenantId: tenant})
		}, true, true},
		{"ListConfigDocuments", func(size int32, token, sel, tenant string) func(context.Context, admintest.Clients) error {
			return listDocs(&adminv1.ListConfigDocumentsRequest{PageSize: size, PageToken: token, LabelSelector: sel, TenantId: tenant})
		}, true, true},
		{"ListAuditEvents", func(size int32, token, _, tenant string) func(context.Context, admintest.Clients) error {
			return listAudit(&adminv1.ListAuditEventsRequest{PageSize: size, PageToken: token, TenantId: tenant})
		}, false, true},
		{"ListTokens", func(size int32, token, _, tenant string) func(context.Context, admintest.Clients) error {
			return listTokens(&adminv1.ListTokensRequest{PageSize: size, PageToken: token, TenantId: tenant})
		}, false, true},
		{"ListAgents", func(size int32, token, _, tenant string) func(context.Context, admintest.Clients) error {
			return listAgents(&adminv1.ListAgentsRequest{PageSize: size, PageToken: token, TenantId: tenant})
		}, false, true},
	}
	for _, l := range lists {
		cases = append(cases,
			invalidCase{l.name + " negative page_size", "page_size", l.call(-1, "", "", "")},
			invalidCase{l.name + " page_token not base64", "page_token", l.call(0, notBase64, "", "")},
			invalidCase{l.name + " page_token not a cursor", "page_token", l.call(0, notCursor, "", "")},
		)
		if l.selector {
			cases = append(cases, invalidCase{l.name + " bad label_selector", "label_selector", l.call(0, "", badSel, "")})
		}
		if l.tenant {
			cases = append(cases, invalidCase{l.name + " bad tenant_id", "tenant_id", l.call(0, "", "", badUUID)})
		}
	}

	cases = append(cases, []invalidCase{
		// Tenants.
		{"CreateTenant no tenant", "tenant", createTenant(nil)},
		{"CreateTenant no name", "tenant.name", createTenant(&adminv1.Tenant{DisplayName: "x"})},
		{"CreateTenant uppercase name", "tenant.name", createTenant(&adminv1.Tenant{Name: "Acme"})},
		{"CreateTenant 64-char name", "tenant.name", createTenant(&adminv1.Tenant{Name: long64})},
		{"CreateTenant name with underscore", "tenant.name", createTenant(&adminv1.Tenant{Name: "a_b"})},
		{"CreateTenant name ending in dash", "tenant.name", createTenant(&adminv1.Tenant{Name: "ab-"})},
		{"CreateTenant display name too long", "tenant.display_name", createTenant(&adminv1.Tenant{Name: "ok", DisplayName: long201})},
		{"CreateTenant bad label key", "tenant.labels", createTenant(&adminv1.Tenant{Name: "ok", Labels: badKey})},
		{"CreateTenant label value too long", "tenant.labels", createTenant(&adminv1.Tenant{Name: "ok", Labels: longValue})},
		{"UpdateTenant no tenant", "tenant", updateTenant(&adminv1.UpdateTenantRequest{})},
		{"UpdateTenant mask names immutable field", "update_mask", updateTenant(&adminv1.UpdateTenantRequest{
			Tenant: &adminv1.Tenant{Id: tenantID, Name: "renamed"}, UpdateMask: mask("name")})},
		{"UpdateTenant unknown mask path", "update_mask", updateTenant(&adminv1.UpdateTenantRequest{
			Tenant: &adminv1.Tenant{Id: tenantID}, UpdateMask: mask("labels", "bogus")})},
		{"UpdateTenant bad label key", "tenant.labels", updateTenant(&adminv1.UpdateTenantRequest{
			Tenant: &adminv1.Tenant{Id: tenantID, Labels: badKey}, UpdateMask: mask("labels")})},
		{"UpdateTenant label value too long", "tenant.labels", updateTenant(&adminv1.UpdateTenantRequest{
			Tenant: &adminv1.Tenant{Id: tenantID, Labels: longValue}})},
		{"UpdateTenant display name too long", "tenant.display_name", updateTenant(&adminv1.UpdateTenantRequest{
			Tenant: &adminv1.Tenant{Id: tenantID, DisplayName: long201}, UpdateMask: mask("display_name")})},

		// Data planes.
		{"CreateDataPlane no data plane", "data_plane", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{}))
			return err
		}},
		{"CreateDataPlane no name", "data_plane.name", dp(func(d *adminv1.DataPlane) { d.Name = "" })},
		{"CreateDataPlane uppercase name", "data_plane.name", dp(func(d *adminv1.DataPlane) { d.Name = "USE1" })},
		{"CreateDataPlane 64-char name", "data_plane.name", dp(func(d *adminv1.DataPlane) { d.Name = long64 })},
		{"CreateDataPlane no region", "data_plane.region", dp(func(d *adminv1.DataPlane) { d.Region = "" })},
		{"CreateDataPlane bad region", "data_plane.region", dp(func(d *adminv1.DataPlane) { d.Region = "US_EAST_1" })},
		{"CreateDataPlane no cloud", "data_plane.cloud", dp(func(d *adminv1.DataPlane) { d.Cloud = adminv1.Cloud_CLOUD_UNSPECIFIED })},
		{"CreateDataPlane unknown cloud", "data_plane.cloud", dp(func(d *adminv1.DataPlane) { d.Cloud = 99 })},
		{"CreateDataPlane bad label key", "data_plane.labels", dp(func(d *adminv1.DataPlane) { d.Labels = badKey })},
		{"CreateDataPlane label value too long", "data_plane.labels", dp(func(d *adminv1.DataPlane) { d.Labels = longValue })},
		{"UpdateDataPlane no data plane", "data_plane", updateDP(&adminv1.UpdateDataPlaneRequest{})},
		{"UpdateDataPlane mask names immutable field", "update_mask", updateDP(&adminv1.UpdateDataPlaneRequest{
			DataPlane: &adminv1.DataPlane{Id: dpID, Region: "eu-west-1"}, UpdateMask: mask("region")})},
		{"UpdateDataPlane unknown mask path", "update_mask", updateDP(&adminv1.UpdateDataPlaneRequest{
			DataPlane: &adminv1.DataPlane{Id: dpID}, UpdateMask: mask("bogus")})},
		{"UpdateDataPlane bad label key", "data_plane.labels", updateDP(&adminv1.UpdateDataPlaneRequest{
			DataPlane: &adminv1.DataPlane{Id: dpID, Labels: badKey}})},
		{"UpdateDataPlane label value too long", "data_plane.labels", updateDP(&adminv1.UpdateDataPlaneRequest{
			DataPlane: &adminv1.DataPlane{Id: dpID, Labels: longValue}, UpdateMask: mask("labels")})},

		// Clusters.
		{"CreateCluster no cluster", "cluster", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{}))
			return err
		}},
		{"CreateCluster no name", "cluster.name", cluster(func(c *adminv1.Cluster) { c.Name = "" })},
		{"CreateCluster uppercase name", "cluster.name", cluster(func(c *adminv1.Cluster) { c.Name = "DB1" })},
		{"CreateCluster 64-char name", "cluster.name", cluster(func(c *adminv1.Cluster) { c.Name = long64 })},
		{"CreateCluster bad label key", "cluster.labels", cluster(func(c *adminv1.Cluster) { c.Labels = badKey })},
		{"CreateCluster label value too long", "cluster.labels", cluster(func(c *adminv1.Cluster) { c.Labels = longValue })},
		{"CreateCluster desired version with v", "cluster.desired_version", cluster(func(c *adminv1.Cluster) { c.DesiredVersion = "v1.2.3" })},
		{"CreateCluster desired version not semver", "cluster.desired_version", cluster(func(c *adminv1.Cluster) { c.DesiredVersion = "latest" })},
		{"CreateCluster desired version with v and shorthand", "cluster.desired_version", cluster(func(c *adminv1.Cluster) { c.DesiredVersion = "v1.2" })},
		{"CreateCluster host version with v", "cluster.host_version", cluster(func(c *adminv1.Cluster) { c.HostVersion = "v5.4.0" })},
		{"CreateCluster reported version set", "cluster.reported_version", cluster(func(c *adminv1.Cluster) { c.ReportedVersion = "1.0.0" })},
		{"CreateCluster properties too large", "cluster.properties", cluster(func(c *adminv1.Cluster) { c.Properties = bigProps })},
		{"UpdateCluster no cluster", "cluster", updateCluster(&adminv1.UpdateClusterRequest{})},
		{"UpdateCluster mask names output-only field", "update_mask", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, ReportedVersion: "9.9.9"}, UpdateMask: mask("reported_version")})},
		{"UpdateCluster mask names immutable field", "update_mask", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, Name: "renamed"}, UpdateMask: mask("name")})},
		{"UpdateCluster unknown mask path", "update_mask", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID}, UpdateMask: mask("desired_version", "nope")})},
		{"UpdateCluster desired version with v", "cluster.desired_version", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, DesiredVersion: "v1.2.3"}, UpdateMask: mask("desired_version")})},
		{"UpdateCluster desired version not semver", "cluster.desired_version", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, DesiredVersion: "1.2.3.4"}})},
		{"UpdateCluster host version with v", "cluster.host_version", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, HostVersion: "v1.0.0"}, UpdateMask: mask("host_version")})},
		{"UpdateCluster bad label key", "cluster.labels", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, Labels: badKey}, UpdateMask: mask("labels")})},
		{"UpdateCluster label value too long", "cluster.labels", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, Labels: longValue}, UpdateMask: mask("labels")})},
		{"UpdateCluster properties too large", "cluster.properties", updateCluster(&adminv1.UpdateClusterRequest{
			Cluster: &adminv1.Cluster{Id: clusterID, Properties: bigProps}, UpdateMask: mask("properties")})},
		{"ListClusters bad data_plane_id", "data_plane_id", listClusters(&adminv1.ListClustersRequest{DataPlaneId: badUUID})},

		// Config documents.
		{"CreateConfigDocument no document", "document", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{}))
			return err
		}},
		{"CreateConfigDocument no scope", "document.scope", doc(func(d *adminv1.ConfigDocument) { d.Scope = nil })},
		{"CreateConfigDocument empty scope", "document.scope", doc(func(d *adminv1.ConfigDocument) { d.Scope = &adminv1.ConfigScope{} })},
		{"CreateConfigDocument no kind", "document.kind", doc(func(d *adminv1.ConfigDocument) { d.Kind = "" })},
		{"CreateConfigDocument bad kind", "document.kind", doc(func(d *adminv1.ConfigDocument) { d.Kind = "bad kind!" })},
		{"CreateConfigDocument kind too long", "document.kind", doc(func(d *adminv1.ConfigDocument) { d.Kind = strings.Repeat("k", 254) })},
		{"CreateConfigDocument no name", "document.name", doc(func(d *adminv1.ConfigDocument) { d.Name = "" })},
		{"CreateConfigDocument uppercase name", "document.name", doc(func(d *adminv1.ConfigDocument) { d.Name = "Main" })},
		{"CreateConfigDocument 64-char name", "document.name", doc(func(d *adminv1.ConfigDocument) { d.Name = long64 })},
		{"CreateConfigDocument bad label key", "document.labels", doc(func(d *adminv1.ConfigDocument) { d.Labels = badKey })},
		{"CreateConfigDocument label value too long", "document.labels", doc(func(d *adminv1.ConfigDocument) { d.Labels = longValue })},
		{"CreateConfigDocument no content", "document.content", doc(func(d *adminv1.ConfigDocument) { d.Content = nil })},
		{"CreateConfigDocument raw without media type", "document.content.raw.media_type", doc(func(d *adminv1.ConfigDocument) {
			d.Content = &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: []byte("a: 1")}}
		})},
		{"CreateConfigDocument raw with bad media type", "document.content.raw.media_type", doc(func(d *adminv1.ConfigDocument) {
			d.Content = &adminv1.ConfigDocument_Raw{Raw: rawContent("a: 1", "not a media type")}
		})},
		{"CreateConfigDocument raw over 1 MiB", "document.content.raw.data", doc(func(d *adminv1.ConfigDocument) {
			d.Content = &adminv1.ConfigDocument_Raw{Raw: bigRaw}
		})},
		{"CreateConfigDocument structured over 1 MiB", "document.content.structured", doc(func(d *adminv1.ConfigDocument) {
			d.Content = &adminv1.ConfigDocument_Structured{Structured: bigStruct}
		})},
		{"GetConfigDocument neither id nor key", "id", getDoc(&adminv1.GetConfigDocumentRequest{})},
		{"GetConfigDocument both id and key", "id", getDoc(&adminv1.GetConfigDocumentRequest{
			Id: docID, Key: &adminv1.ConfigKey{Scope: dpScope(dpID), Kind: "cairn.dev/ingress", Name: "main"}})},
		{"GetConfigDocument key without scope", "key.scope", getDoc(&adminv1.GetConfigDocumentRequest{
			Key: &adminv1.ConfigKey{Kind: "cairn.dev/ingress", Name: "main"}})},
		{"GetConfigDocument key without kind", "key.kind", getDoc(&adminv1.GetConfigDocumentRequest{
			Key: &adminv1.ConfigKey{Scope: dpScope(dpID), Name: "main"}})},
		{"GetConfigDocument key with bad name", "key.name", getDoc(&adminv1.GetConfigDocumentRequest{
			Key: &adminv1.ConfigKey{Scope: dpScope(dpID), Kind: "cairn.dev/ingress", Name: "Main"}})},
		{"ListConfigDocuments bad scope id", "scope.data_plane_id", listDocs(&adminv1.ListConfigDocumentsRequest{Scope: dpScope(badUUID)})},
		{"ListConfigDocuments bad kind", "kind", listDocs(&adminv1.ListConfigDocumentsRequest{Kind: "bad kind!"})},
		{"UpdateConfigDocument no content", "content", updateDoc(&adminv1.UpdateConfigDocumentRequest{Id: docID})},
		{"UpdateConfigDocument raw without media type", "content.raw.media_type", updateDoc(&adminv1.UpdateConfigDocumentRequest{
			Id: docID, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: &adminv1.RawContent{Data: []byte("x")}}})},
		{"UpdateConfigDocument raw over 1 MiB", "content.raw.data", updateDoc(&adminv1.UpdateConfigDocumentRequest{
			Id: docID, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: bigRaw}})},
		{"UpdateConfigDocument structured over 1 MiB", "content.structured", updateDoc(&adminv1.UpdateConfigDocumentRequest{
			Id: docID, Content: &adminv1.UpdateConfigDocumentRequest_Structured{Structured: bigStruct}})},
		{"UpdateConfigDocument bad label key", "labels", updateDoc(&adminv1.UpdateConfigDocumentRequest{
			Id: docID, Content: goodUpdRaw, Labels: badKey})},
		{"UpdateConfigDocument label value too long", "labels", updateDoc(&adminv1.UpdateConfigDocumentRequest{
			Id: docID, Content: goodUpdRaw, Labels: longValue})},

		// Audit.
		{"ListAuditEvents page_token with bad time", "page_token", listAudit(&adminv1.ListAuditEventsRequest{PageToken: badAuditPT})},
		{"ListAuditEvents page_token of another list", "page_token", listAudit(&adminv1.ListAuditEventsRequest{PageToken: idCursor})},
		{"ListAuditEvents resource_id too long", "resource_id", listAudit(&adminv1.ListAuditEventsRequest{ResourceId: strings.Repeat("r", 65)})},

		// Tokens.
		{"CreateToken no role", "role", createToken(&adminv1.CreateTokenRequest{TenantId: tenantID})},
		{"CreateToken unknown role", "role", createToken(&adminv1.CreateTokenRequest{TenantId: tenantID, Role: 99})},
		{"CreateToken bad tenant_id", "tenant_id", createToken(&adminv1.CreateTokenRequest{TenantId: badUUID, Role: adminv1.Role_ROLE_VIEWER})},
		{"CreateToken description too long", "description", createToken(&adminv1.CreateTokenRequest{Role: adminv1.Role_ROLE_VIEWER, Description: long201})},
		{"CreateToken zero ttl", "ttl", createToken(&adminv1.CreateTokenRequest{Role: adminv1.Role_ROLE_VIEWER, Ttl: durationpb.New(0)})},
		{"CreateToken negative ttl", "ttl", createToken(&adminv1.CreateTokenRequest{Role: adminv1.Role_ROLE_VIEWER, Ttl: durationpb.New(-time.Hour)})},
		{"CreateToken ttl over 10 years", "ttl", createToken(&adminv1.CreateTokenRequest{Role: adminv1.Role_ROLE_VIEWER, Ttl: durationpb.New(11 * 365 * 24 * time.Hour)})},
		// Agents.
		{"CreateJoinToken ttl under a second", "ttl", createJoinToken(&adminv1.CreateJoinTokenRequest{DataPlaneId: dpID, Ttl: durationpb.New(time.Second / 2)})},
		{"CreateJoinToken negative ttl", "ttl", createJoinToken(&adminv1.CreateJoinTokenRequest{DataPlaneId: dpID, Ttl: durationpb.New(-time.Minute)})},
		{"CreateJoinToken ttl over 7 days", "ttl", createJoinToken(&adminv1.CreateJoinTokenRequest{DataPlaneId: dpID, Ttl: durationpb.New(8 * 24 * time.Hour)})},
		{"ListAgents bad data_plane_id", "data_plane_id", listAgents(&adminv1.ListAgentsRequest{DataPlaneId: badUUID})},
		{"ListAgents negative behind_revision", "behind_revision", listAgents(&adminv1.ListAgentsRequest{BehindRevision: -1})},
		{"ListAgents zero not_seen_for", "not_seen_for", listAgents(&adminv1.ListAgentsRequest{NotSeenFor: durationpb.New(0)})},
		{"ListAgentMetrics name too long", "name", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.ListAgentMetrics(ctx, connect.NewRequest(&adminv1.ListAgentMetricsRequest{AgentId: unknownID(), Name: strings.Repeat("m", 129)}))
			return err
		}},
		{"ListAgentMetrics negative page_size", "page_size", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.ListAgentMetrics(ctx, connect.NewRequest(&adminv1.ListAgentMetricsRequest{AgentId: unknownID(), PageSize: -1}))
			return err
		}},
		{"RevokeAgent reason too long", "reason", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.RevokeAgent(ctx, connect.NewRequest(&adminv1.RevokeAgentRequest{Id: unknownID(), Reason: long201}))
			return err
		}},

		{"CreateToken malformed ttl", "ttl", createToken(&adminv1.CreateTokenRequest{Role: adminv1.Role_ROLE_VIEWER, Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}})},
	}...)
	cases = append(cases, releaseInvalidCases()...)
	return cases
}

// TestValidation sends each service requests that break one rule each and
// expects InvalidArgument with a google.rpc.BadRequest detail naming the
// field, over both protocols, and nothing written.
func TestValidation(t *testing.T) {
	t.Parallel()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	for _, p := range admintest.Protocols {
		c := s.Clients(p, s.OperatorToken)
		for _, tc := range invalidCases(t, acme) {
			t.Run(p.String()+"/"+tc.name, func(t *testing.T) {
				before := auditIDs(t, s)
				err := tc.call(context.Background(), c)
				admintest.WantInvalidField(t, err, tc.field)
				wantNoNewAudit(t, s, before)
			})
		}
	}
}

// TestValidationBeforeTenantCheck: a tenant-scoped caller gets the same
// InvalidArgument for a bad request as an operator, whatever tenant the
// request names, so validation answers never depend on other tenants.
func TestValidationBeforeTenantCheck(t *testing.T) {
	t.Parallel()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	other := s.SeedTenant(t, "other")
	before := auditIDs(t, s)
	c := s.Clients(admintest.GRPC, other.Admin.Secret)
	for _, tc := range invalidCases(t, acme) {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(context.Background(), c)
			admintest.WantInvalidField(t, err, tc.field)
		})
	}
	wantNoNewAudit(t, s, before)
}

// releaseInvalidCases break one rule of the release catalog each.
func releaseInvalidCases() []invalidCase {
	rel := func(mutate func(*adminv1.Release)) func(ctx context.Context, c admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			r := &adminv1.Release{Product: "kafka", Version: "1.2.3"}
			mutate(r)
			_, err := c.Releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: r}))
			return err
		}
	}
	channel := func(mutate func(*adminv1.Channel)) func(ctx context.Context, c admintest.Clients) error {
		return func(ctx context.Context, c admintest.Clients) error {
			ch := &adminv1.Channel{Product: admintest.SeedProduct, Name: "stable", DefaultVersions: map[string]string{"": admintest.SeedVersion}}
			mutate(ch)
			_, err := c.Releases.CreateChannel(ctx, connect.NewRequest(&adminv1.CreateChannelRequest{Channel: ch}))
			return err
		}
	}
	many := make([]*adminv1.Constraint, 17)
	for i := range many {
		many[i] = &adminv1.Constraint{Component: "host", Range: ">1.0.0"}
	}
	return []invalidCase{
		{"CreateRelease missing", "release", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{}))
			return err
		}},
		{"CreateRelease product not a DNS label", "release.product", rel(func(r *adminv1.Release) { r.Product = "Kafka!" })},
		{"CreateRelease missing version", "release.version", rel(func(r *adminv1.Release) { r.Version = "" })},
		{"CreateRelease v-prefixed version", "release.version", rel(func(r *adminv1.Release) { r.Version = "v1.2.3" })},
		{"CreateRelease partial version", "release.version", rel(func(r *adminv1.Release) { r.Version = "1.2" })},
		{"CreateRelease unknown state", "release.state", rel(func(r *adminv1.Release) { r.State = 42 })},
		{"CreateRelease long notes", "release.notes", rel(func(r *adminv1.Release) { r.Notes = strings.Repeat("n", 4097) })},
		{"CreateRelease bad range", "release.constraints[0].range", rel(func(r *adminv1.Release) {
			r.Constraints = []*adminv1.Constraint{{Component: "host", Range: ">>3"}}
		})},
		{"CreateRelease bad component", "release.constraints[0].component", rel(func(r *adminv1.Release) {
			r.Constraints = []*adminv1.Constraint{{Component: "Host Kernel", Range: ">3.4.0"}}
		})},
		{"CreateRelease too many constraints", "release.constraints", rel(func(r *adminv1.Release) { r.Constraints = many })},
		{"UpdateRelease unknown mask path", "update_mask", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.UpdateRelease(ctx, connect.NewRequest(&adminv1.UpdateReleaseRequest{
				Release: &adminv1.Release{Product: admintest.SeedProduct, Version: admintest.SeedVersion}, UpdateMask: mask("version")}))
			return err
		}},
		{"UpdateRelease unspecified state", "release.state", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.UpdateRelease(ctx, connect.NewRequest(&adminv1.UpdateReleaseRequest{
				Release: &adminv1.Release{Product: admintest.SeedProduct, Version: admintest.SeedVersion}, UpdateMask: mask("state")}))
			return err
		}},
		{"GetRelease bad version", "version", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.GetRelease(ctx, connect.NewRequest(&adminv1.GetReleaseRequest{Product: "kafka", Version: "latest"}))
			return err
		}},
		{"ListReleases missing product", "product", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.ListReleases(ctx, connect.NewRequest(&adminv1.ListReleasesRequest{}))
			return err
		}},
		{"ListReleases unspecified state", "states[0]", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.ListReleases(ctx, connect.NewRequest(&adminv1.ListReleasesRequest{Product: "kafka",
				States: []adminv1.ReleaseState{adminv1.ReleaseState_RELEASE_STATE_UNSPECIFIED}}))
			return err
		}},
		{"CreateChannel bad name", "channel.name", channel(func(ch *adminv1.Channel) { ch.Name = "" })},
		{"CreateChannel bad default version", `channel.default_versions["enterprise"]`, channel(func(ch *adminv1.Channel) {
			ch.DefaultVersions = map[string]string{"enterprise": "latest"}
		})},
		{"CreateChannel bad plan", "channel.default_versions", channel(func(ch *adminv1.Channel) {
			ch.DefaultVersions = map[string]string{"Gold Plan": admintest.SeedVersion}
		})},
		{"CreateCluster channel without product", "cluster.channel", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: unknownID(), Name: "c", Channel: "stable"}}))
			return err
		}},
		{"CreateCluster bad product", "cluster.product", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: unknownID(), Name: "c", Product: "Kafka 3"}}))
			return err
		}},
		{"SummarizeVersions bad query", "query", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.SummarizeVersions(ctx, connect.NewRequest(&adminv1.SummarizeVersionsRequest{Query: "host_version<three"}))
			return err
		}},
		{"UpdateChannel missing", "channel", func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.UpdateChannel(ctx, connect.NewRequest(&adminv1.UpdateChannelRequest{}))
			return err
		}},
	}
}
