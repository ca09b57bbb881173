package adminapi_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/adminapi"
	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// ok is the "code" of a call that succeeds.
const ok connect.Code = 0

// codeOf is connect.CodeOf, with ok for a nil error.
func codeOf(err error) connect.Code {
	if err == nil {
		return ok
	}
	return connect.CodeOf(err)
}

func codeName(c connect.Code) string {
	if c == ok {
		return "ok"
	}
	return c.String()
}

// wantCode fails the test unless err has code want (ok for nil).
func wantCode(tb testing.TB, err error, want connect.Code) {
	tb.Helper()
	if got := codeOf(err); got != want {
		tb.Fatalf("got %s (%v); want %s", codeName(got), err, codeName(want))
	}
}

// unknownID returns a well-formed ID that names nothing.
func unknownID() string { return uuid.NewString() }

// target names the objects an rpc table acts on.
type target struct {
	tenantID, dataPlaneID, clusterID, dpDocID, clusterDocID, tokenID string
	// agentID names an agent; SeedTenant enrolls none, so it never
	// exists.
	agentID string
	// tenantName is the name CreateTenant uses.
	tenantName string
}

func targetOf(t admintest.Tenant) target {
	return target{
		tenantID: t.Tenant.Id, dataPlaneID: t.DataPlane.Id, clusterID: t.Cluster.Id,
		dpDocID: t.DataPlaneDoc.Id, clusterDocID: t.ClusterDoc.Id, tokenID: t.Admin.Id,
		agentID: unknownID(), tenantName: t.Tenant.Name,
	}
}

func unknownTarget(tenantName string) target {
	return target{
		tenantID: unknownID(), dataPlaneID: unknownID(), clusterID: unknownID(),
		dpDocID: unknownID(), clusterDocID: unknownID(), tokenID: unknownID(), agentID: unknownID(), tenantName: tenantName,
	}
}

// rpc is one call of the admin API with well-formed arguments.
type rpc struct {
	// name is "Service/Method".
	name string
	// role is the least role the method needs.
	role adminv1.Role
	call func(ctx context.Context, c admintest.Clients) error
}

func dpScope(id string) *adminv1.ConfigScope {
	return &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: id}}
}

func clusterScope(id string) *adminv1.ConfigScope {
	return &adminv1.ConfigScope{Target: &adminv1.ConfigScope_ClusterId{ClusterId: id}}
}

func mustStruct(tb testing.TB, m map[string]any) *structpb.Struct {
	tb.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func rawContent(data, mediaType string) *adminv1.RawContent {
	return &adminv1.RawContent{Data: []byte(data), MediaType: mediaType}
}

// rpcs returns every RPC of every service, each a well-formed call on the
// objects of tg: what it would do to them if allowed is a real change.
func rpcs(tg target) []rpc {
	viewer, operator, admin := adminv1.Role_ROLE_VIEWER, adminv1.Role_ROLE_OPERATOR, adminv1.Role_ROLE_ADMIN
	return []rpc{
		{"TenantService/CreateTenant", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: tg.tenantName}}))
			return err
		}},
		{"TenantService/GetTenant", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: tg.tenantID}))
			return err
		}},
		{"TenantService/ListTenants", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{}))
			return err
		}},
		{"TenantService/UpdateTenant", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
				Tenant: &adminv1.Tenant{Id: tg.tenantID, DisplayName: "hijacked", Labels: map[string]string{"hijacked": "yes"}},
			}))
			return err
		}},
		{"TenantService/DeleteTenant", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: tg.tenantID}))
			return err
		}},

		{"DataPlaneService/CreateDataPlane", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
				TenantId: tg.tenantID, Name: "intruder", Region: "eu-west-1", Cloud: adminv1.Cloud_CLOUD_GCP,
			}}))
			return err
		}},
		{"DataPlaneService/GetDataPlane", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: tg.dataPlaneID}))
			return err
		}},
		{"DataPlaneService/ListDataPlanes", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.ListDataPlanes(ctx, connect.NewRequest(&adminv1.ListDataPlanesRequest{}))
			return err
		}},
		{"DataPlaneService/UpdateDataPlane", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.UpdateDataPlane(ctx, connect.NewRequest(&adminv1.UpdateDataPlaneRequest{
				DataPlane: &adminv1.DataPlane{Id: tg.dataPlaneID, Labels: map[string]string{"hijacked": "yes"}},
			}))
			return err
		}},
		{"DataPlaneService/DeleteDataPlane", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: tg.dataPlaneID}))
			return err
		}},

		{"ClusterService/CreateCluster", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: tg.dataPlaneID, Name: "intruder", DesiredVersion: "9.9.9",
			}}))
			return err
		}},
		{"ClusterService/GetCluster", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: tg.clusterID}))
			return err
		}},
		{"ClusterService/ListClusters", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.ListClusters(ctx, connect.NewRequest(&adminv1.ListClustersRequest{}))
			return err
		}},
		{"ClusterService/UpdateCluster", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.UpdateCluster(ctx, connect.NewRequest(&adminv1.UpdateClusterRequest{
				Cluster:    &adminv1.Cluster{Id: tg.clusterID, DesiredVersion: "9.9.9"},
				UpdateMask: mask("desired_version"),
			}))
			return err
		}},
		{"ClusterService/DeleteCluster", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.DeleteCluster(ctx, connect.NewRequest(&adminv1.DeleteClusterRequest{Id: tg.clusterID}))
			return err
		}},

		{"ConfigService/CreateConfigDocument", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
				Scope: dpScope(tg.dataPlaneID), Kind: "cairn.dev/intruder", Name: "x",
				Content: &adminv1.ConfigDocument_Raw{Raw: rawContent("x: 1", "application/yaml")},
			}}))
			return err
		}},
		{"ConfigService/GetConfigDocument", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: tg.dpDocID}))
			return err
		}},
		{"ConfigService/ListConfigDocuments", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.ListConfigDocuments(ctx, connect.NewRequest(&adminv1.ListConfigDocumentsRequest{}))
			return err
		}},
		{"ConfigService/UpdateConfigDocument", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
				Id: tg.dpDocID, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("hijacked: true", "application/yaml")},
			}))
			return err
		}},
		{"ConfigService/DeleteConfigDocument", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: tg.dpDocID}))
			return err
		}},

		{"AuditService/ListAuditEvents", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Audit.ListAuditEvents(ctx, connect.NewRequest(&adminv1.ListAuditEventsRequest{}))
			return err
		}},

		{"TokenService/CreateToken", admin, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tokens.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{TenantId: tg.tenantID, Role: adminv1.Role_ROLE_VIEWER}))
			return err
		}},
		{"TokenService/GetToken", admin, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tokens.GetToken(ctx, connect.NewRequest(&adminv1.GetTokenRequest{Id: tg.tokenID}))
			return err
		}},
		{"TokenService/ListTokens", admin, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tokens.ListTokens(ctx, connect.NewRequest(&adminv1.ListTokensRequest{}))
			return err
		}},
		{"TokenService/RevokeToken", admin, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Tokens.RevokeToken(ctx, connect.NewRequest(&adminv1.RevokeTokenRequest{Id: tg.tokenID}))
			return err
		}},

		{"AgentService/CreateJoinToken", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.CreateJoinToken(ctx, connect.NewRequest(&adminv1.CreateJoinTokenRequest{DataPlaneId: tg.dataPlaneID}))
			return err
		}},
		{"AgentService/GetAgent", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.GetAgent(ctx, connect.NewRequest(&adminv1.GetAgentRequest{Id: tg.agentID}))
			return err
		}},
		{"AgentService/ListAgents", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.ListAgents(ctx, connect.NewRequest(&adminv1.ListAgentsRequest{}))
			return err
		}},
		{"AgentService/RevokeAgent", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.RevokeAgent(ctx, connect.NewRequest(&adminv1.RevokeAgentRequest{Id: tg.agentID}))
			return err
		}},
		{"AgentService/ListAgentMetrics", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.ListAgentMetrics(ctx, connect.NewRequest(&adminv1.ListAgentMetricsRequest{AgentId: tg.agentID}))
			return err
		}},
		// The catalog is shared: calls name the release admintest seeds, or
		// versions and channels that do not exist, so none writes.
		{"ClusterService/SummarizeVersions", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Clusters.SummarizeVersions(ctx, connect.NewRequest(&adminv1.SummarizeVersionsRequest{Query: "product=kafka"}))
			return err
		}},
		{"ReleaseService/CreateRelease", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: &adminv1.Release{
				Product: admintest.SeedProduct, Version: admintest.SeedVersion}}))
			return err
		}},
		{"ReleaseService/GetRelease", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.GetRelease(ctx, connect.NewRequest(&adminv1.GetReleaseRequest{Product: admintest.SeedProduct, Version: "9.9.9"}))
			return err
		}},
		{"ReleaseService/ListReleases", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.ListReleases(ctx, connect.NewRequest(&adminv1.ListReleasesRequest{Product: admintest.SeedProduct}))
			return err
		}},
		{"ReleaseService/UpdateRelease", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.UpdateRelease(ctx, connect.NewRequest(&adminv1.UpdateReleaseRequest{Release: &adminv1.Release{
				Product: admintest.SeedProduct, Version: "9.9.9", State: adminv1.ReleaseState_RELEASE_STATE_BLOCKED}, UpdateMask: mask("state")}))
			return err
		}},
		{"ReleaseService/CreateChannel", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.CreateChannel(ctx, connect.NewRequest(&adminv1.CreateChannelRequest{Channel: &adminv1.Channel{
				Product: admintest.SeedProduct, Name: "stable", DefaultVersions: map[string]string{"": "9.9.9"}}}))
			return err
		}},
		{"ReleaseService/GetChannel", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.GetChannel(ctx, connect.NewRequest(&adminv1.GetChannelRequest{Product: admintest.SeedProduct, Name: "nosuch"}))
			return err
		}},
		{"ReleaseService/ListChannels", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.ListChannels(ctx, connect.NewRequest(&adminv1.ListChannelsRequest{Product: admintest.SeedProduct}))
			return err
		}},
		{"ReleaseService/UpdateChannel", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Releases.UpdateChannel(ctx, connect.NewRequest(&adminv1.UpdateChannelRequest{Channel: &adminv1.Channel{
				Product: admintest.SeedProduct, Name: "nosuch", DefaultVersions: map[string]string{"": admintest.SeedVersion}}}))
			return err
		}},
		{"AgentService/GetTrustBundle", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Agents.GetTrustBundle(ctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
			return err
		}},
		// Rollouts span tenants: only operator-wide tokens call them. The
		// spec selects the target tenant's clusters, which have no product,
		// so a start has nothing to do and writes nothing.
		{"RolloutService/PreviewRollout", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.PreviewRollout(ctx, connect.NewRequest(&adminv1.PreviewRolloutRequest{Spec: rolloutSpec(tg)}))
			return err
		}},
		{"RolloutService/StartRollout", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: rolloutSpec(tg)}))
			return err
		}},
		{"RolloutService/GetRollout", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.GetRollout(ctx, connect.NewRequest(&adminv1.GetRolloutRequest{Id: tg.agentID}))
			return err
		}},
		{"RolloutService/ListRollouts", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.ListRollouts(ctx, connect.NewRequest(&adminv1.ListRolloutsRequest{}))
			return err
		}},
		{"RolloutService/ListRolloutClusters", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.ListRolloutClusters(ctx, connect.NewRequest(&adminv1.ListRolloutClustersRequest{RolloutId: tg.agentID}))
			return err
		}},
		{"RolloutService/PauseRollout", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.PauseRollout(ctx, connect.NewRequest(&adminv1.PauseRolloutRequest{Id: tg.agentID, Reason: "look"}))
			return err
		}},
		{"RolloutService/ResumeRollout", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.ResumeRollout(ctx, connect.NewRequest(&adminv1.ResumeRolloutRequest{Id: tg.agentID}))
			return err
		}},
		{"RolloutService/CancelRollout", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.CancelRollout(ctx, connect.NewRequest(&adminv1.CancelRolloutRequest{Id: tg.agentID}))
			return err
		}},
		{"RolloutService/RollbackRollout", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.RollbackRollout(ctx, connect.NewRequest(&adminv1.RollbackRolloutRequest{Id: tg.agentID}))
			return err
		}},
		{"RolloutService/UpdateRolloutPolicy", operator, func(ctx context.Context, c admintest.Clients) error {
			one := int32(1)
			_, err := c.Rollouts.UpdateRolloutPolicy(ctx, connect.NewRequest(&adminv1.UpdateRolloutPolicyRequest{Id: tg.agentID, Concurrency: &one}))
			return err
		}},
		{"RolloutService/PauseAllRollouts", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.PauseAllRollouts(ctx, connect.NewRequest(&adminv1.PauseAllRolloutsRequest{Reason: "incident"}))
			return err
		}},
		{"RolloutService/ExpediteCluster", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.ExpediteCluster(ctx, connect.NewRequest(&adminv1.ExpediteClusterRequest{RolloutId: tg.agentID, ClusterId: tg.clusterID}))
			return err
		}},
		{"RolloutService/CreateExclusion", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.CreateExclusion(ctx, connect.NewRequest(&adminv1.CreateExclusionRequest{Exclusion: &adminv1.Exclusion{
				ScopeType: "cluster", ScopeId: tg.clusterID, Reason: "freeze", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}}))
			return err
		}},
		{"RolloutService/ListExclusions", viewer, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.ListExclusions(ctx, connect.NewRequest(&adminv1.ListExclusionsRequest{}))
			return err
		}},
		{"RolloutService/DeleteExclusion", operator, func(ctx context.Context, c admintest.Clients) error {
			_, err := c.Rollouts.DeleteExclusion(ctx, connect.NewRequest(&adminv1.DeleteExclusionRequest{Id: tg.agentID}))
			return err
		}},
	}
}

// rolloutSpec selects tg's tenant's clusters of the seeded product.
func rolloutSpec(tg target) *adminv1.RolloutSpec {
	return &adminv1.RolloutSpec{Product: admintest.SeedProduct, TargetVersion: admintest.SeedVersion, Query: "tenant=" + tg.tenantID,
		Shape: &adminv1.RolloutShape{Shape: &adminv1.RolloutShape_SCurve{SCurve: &adminv1.SCurveShape{}}}}
}

// unknownTargetWant is what each RPC of rpcs(unknownTarget(existing
// tenant's name)) answers a caller allowed to make it: the objects named do
// not exist, and the tenant name is taken.
var unknownTargetWant = map[string]connect.Code{
	"TenantService/CreateTenant":         connect.CodeAlreadyExists,
	"TenantService/ListTenants":          ok,
	"DataPlaneService/ListDataPlanes":    ok,
	"ClusterService/ListClusters":        ok,
	"ConfigService/ListConfigDocuments":  ok,
	"AuditService/ListAuditEvents":       ok,
	"TokenService/ListTokens":            ok,
	"TenantService/GetTenant":            connect.CodeNotFound,
	"TenantService/UpdateTenant":         connect.CodeNotFound,
	"TenantService/DeleteTenant":         connect.CodeNotFound,
	"DataPlaneService/CreateDataPlane":   connect.CodeNotFound,
	"DataPlaneService/GetDataPlane":      connect.CodeNotFound,
	"DataPlaneService/UpdateDataPlane":   connect.CodeNotFound,
	"DataPlaneService/DeleteDataPlane":   connect.CodeNotFound,
	"ClusterService/CreateCluster":       connect.CodeNotFound,
	"ClusterService/GetCluster":          connect.CodeNotFound,
	"ClusterService/UpdateCluster":       connect.CodeNotFound,
	"ClusterService/DeleteCluster":       connect.CodeNotFound,
	"ConfigService/CreateConfigDocument": connect.CodeNotFound,
	"ConfigService/GetConfigDocument":    connect.CodeNotFound,
	"ConfigService/UpdateConfigDocument": connect.CodeNotFound,
	"ConfigService/DeleteConfigDocument": connect.CodeNotFound,
	"TokenService/CreateToken":           connect.CodeNotFound,
	"TokenService/GetToken":              connect.CodeNotFound,
	"TokenService/RevokeToken":           connect.CodeNotFound,
	"AgentService/CreateJoinToken":       connect.CodeNotFound,
	"AgentService/GetAgent":              connect.CodeNotFound,
	"AgentService/ListAgents":            ok,
	"AgentService/RevokeAgent":           connect.CodeNotFound,
	"AgentService/ListAgentMetrics":      connect.CodeNotFound,
	"ClusterService/SummarizeVersions":   ok,
	"ReleaseService/CreateRelease":       connect.CodeAlreadyExists,
	"ReleaseService/GetRelease":          connect.CodeNotFound,
	"ReleaseService/ListReleases":        ok,
	"ReleaseService/UpdateRelease":       connect.CodeNotFound,
	"ReleaseService/CreateChannel":       connect.CodeNotFound,
	"ReleaseService/GetChannel":          connect.CodeNotFound,
	"ReleaseService/ListChannels":        ok,
	"ReleaseService/UpdateChannel":       connect.CodeNotFound,
	// The test server has no agent CA.
	"AgentService/GetTrustBundle":        connect.CodeUnavailable,
	"RolloutService/PreviewRollout":      ok,
	"RolloutService/StartRollout":        connect.CodeFailedPrecondition,
	"RolloutService/GetRollout":          connect.CodeNotFound,
	"RolloutService/ListRollouts":        ok,
	"RolloutService/ListRolloutClusters": connect.CodeNotFound,
	"RolloutService/PauseRollout":        connect.CodeNotFound,
	"RolloutService/ResumeRollout":       connect.CodeNotFound,
	"RolloutService/CancelRollout":       connect.CodeNotFound,
	"RolloutService/RollbackRollout":     connect.CodeNotFound,
	"RolloutService/UpdateRolloutPolicy": connect.CodeNotFound,
	"RolloutService/PauseAllRollouts":    ok,
	"RolloutService/ExpediteCluster":     connect.CodeNotFound,
	"RolloutService/CreateExclusion":     connect.CodeNotFound,
	"RolloutService/ListExclusions":      ok,
	"RolloutService/DeleteExclusion":     connect.CodeNotFound,
}

// TestRPCTableIsComplete keeps rpcs in step with the services: every
// procedure of every service must be in it, so the tests driven by it
// cover new methods too.
func TestRPCTableIsComplete(t *testing.T) {
	var got []string
	for _, r := range rpcs(unknownTarget("x")) {
		got = append(got, "/cairn.admin.v1."+r.name)
	}
	want := allProcedures()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("got procedures %q; want %q", got, want)
	}
}

// allProcedures lists the procedures of every service the admin API
// registers, from the services' descriptors.
func allProcedures() []string {
	var out []string
	for _, name := range adminapi.ServiceNames {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			panic(err)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			out = append(out, "/"+name+"/"+string(methods.Get(i).Name()))
		}
	}
	return out
}

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

// auditIDs returns the IDs of every audit event.
func auditIDs(tb testing.TB, s *admintest.Server) []string {
	tb.Helper()
	var out []string
	for _, e := range s.AuditEvents(tb) {
		out = append(out, e.Id)
	}
	return out
}

// wantNoNewAudit fails the test if the audit log differs from before.
func wantNoNewAudit(tb testing.TB, s *admintest.Server, before []string) {
	tb.Helper()
	if after := auditIDs(tb, s); !slices.Equal(after, before) {
		tb.Fatalf("got %d audit events; want the %d there were before (nothing written)", len(after), len(before))
	}
}
