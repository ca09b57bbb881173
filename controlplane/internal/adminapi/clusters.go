package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/inventory"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/window"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

type clusters struct{ *Services }

func clusterPB(c store.Cluster) *adminv1.Cluster {
	props, err := structpb.NewStruct(c.Properties)
	if err != nil {
		// Stored properties came from a Struct, so they always convert.
		props = &structpb.Struct{}
	}
	return &adminv1.Cluster{
		Id: c.ID, TenantId: c.TenantID, DataPlaneId: c.DataPlaneID, Name: c.Name, Labels: c.Labels,
		Properties: props, DesiredVersion: c.DesiredVersion, ReportedVersion: c.ReportedVersion,
		HostVersion: c.HostVersion, Product: c.Product, Channel: c.Channel, Etag: c.Etag,
		CreateTime: timestamppb.New(c.CreateTime), UpdateTime: timestamppb.New(c.UpdateTime),
	}
}

func (v *violations) properties(field string, p *structpb.Struct) {
	if p == nil {
		return
	}
	b, err := json.Marshal(p.AsMap())
	if err != nil || len(b) > maxPropertiesJSON {
		v.add(field, "must be at most %d bytes as JSON", maxPropertiesJSON)
	}
	// The rollout engine reads the maintenance window: refuse one it could
	// not use.
	if _, err := window.FromProperties(p.AsMap()); err != nil && !v.fieldErrors(strings.TrimSuffix(field, "properties"), err) {
		v.add(field+"."+window.Property, "%v", err)
	}
}

func (s *clusters) CreateCluster(ctx context.Context, req *connect.Request[adminv1.CreateClusterRequest]) (*connect.Response[adminv1.CreateClusterResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	c := req.Msg.GetCluster()
	var v violations
	if c == nil {
		v.add("cluster", "required")
	} else {
		v.id("cluster.data_plane_id", c.DataPlaneId)
		v.name("cluster.name", c.Name)
		v.labels("cluster.labels", c.Labels)
		v.properties("cluster.properties", c.Properties)
		v.version("cluster.desired_version", c.DesiredVersion)
		v.version("cluster.host_version", c.HostVersion)
		v.optionalName("cluster.product", c.Product)
		v.optionalName("cluster.channel", c.Channel)
		if c.Channel != "" && c.Product == "" {
			v.add("cluster.channel", "needs a product")
		}
		if c.ReportedVersion != "" {
			v.add("cluster.reported_version", "output only: set by the cluster's agent")
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.CreateCluster(ctx, actor, p.Visible(), store.Cluster{
		DataPlaneID: c.DataPlaneId, Name: c.Name, Labels: c.Labels, Properties: c.Properties.AsMap(),
		DesiredVersion: c.DesiredVersion, HostVersion: c.HostVersion, Product: c.Product, Channel: c.Channel,
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateClusterResponse{Cluster: clusterPB(out)}), nil
}

func (s *clusters) GetCluster(ctx context.Context, req *connect.Request[adminv1.GetClusterRequest]) (*connect.Response[adminv1.GetClusterResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.GetCluster(ctx, p.Visible(), req.Msg.Id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	pb := clusterPB(out)
	switch r, err := s.st.GetClusterReport(ctx, out.ID); {
	case err == nil:
		pb.AgentReport = &adminv1.ClusterAgentReport{Version: r.Version, DesiredVersion: r.DesiredVersion, Healthy: r.Healthy,
			Detail: r.Detail, AgentId: r.AgentID, ReportTime: timestamppb.New(r.ReportTime)}
	case !errors.Is(err, store.ErrNotFound):
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetClusterResponse{Cluster: pb}), nil
}

func (s *clusters) ListClusters(ctx context.Context, req *connect.Request[adminv1.ListClustersRequest]) (*connect.Response[adminv1.ListClustersResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	page, sel := v.listArgs(req.Msg.PageSize, req.Msg.PageToken, req.Msg.LabelSelector)
	v.optionalID("tenant_id", req.Msg.TenantId)
	v.optionalID("data_plane_id", req.Msg.DataPlaneId)
	var query inventory.Query
	if req.Msg.Query != "" {
		if query, err = inventory.Parse(req.Msg.Query); err != nil {
			v.add("query", "%v", err)
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	f := store.Filter{Visible: p.Visible(), TenantID: req.Msg.TenantId, Selector: sel}
	var list []store.Cluster
	var next string
	if req.Msg.Query != "" {
		if req.Msg.DataPlaneId != "" {
			query.Terms = append(query.Terms, inventory.Term{Field: inventory.DataPlane, Op: inventory.Eq, Values: []string{req.Msg.DataPlaneId}})
		}
		list, next, err = s.st.QueryClusters(ctx, f, query, page)
	} else {
		list, next, err = s.st.ListClusters(ctx, f, req.Msg.DataPlaneId, page)
	}
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListClustersResponse{NextPageToken: pageToken(next)}
	for _, c := range list {
		resp.Clusters = append(resp.Clusters, clusterPB(c))
	}
	return connect.NewResponse(resp), nil
}

func (s *clusters) UpdateCluster(ctx context.Context, req *connect.Request[adminv1.UpdateClusterRequest]) (*connect.Response[adminv1.UpdateClusterResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	c := req.Msg.GetCluster()
	var v violations
	var fields map[string]bool
	if c == nil {
		v.add("cluster", "required")
	} else {
		v.id("cluster.id", c.Id)
		fields = v.mask(req.Msg.UpdateMask, "labels", "properties", "desired_version", "host_version", "channel")
		if fields["labels"] {
			v.labels("cluster.labels", c.Labels)
		}
		if fields["properties"] {
			v.properties("cluster.properties", c.Properties)
		}
		if fields["desired_version"] {
			v.version("cluster.desired_version", c.DesiredVersion)
		}
		if fields["host_version"] {
			v.version("cluster.host_version", c.HostVersion)
		}
		if fields["channel"] {
			v.optionalName("cluster.channel", c.Channel)
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.UpdateCluster(ctx, actor, p.Visible(), c.Id, c.Etag, func(cur *store.Cluster) error {
		if fields["labels"] {
			cur.Labels = c.Labels
		}
		if fields["properties"] {
			cur.Properties = c.Properties.AsMap()
		}
		if fields["desired_version"] {
			cur.DesiredVersion = c.DesiredVersion
		}
		if fields["host_version"] {
			cur.HostVersion = c.HostVersion
		}
		if fields["channel"] {
			cur.Channel = c.Channel
		}
		return nil
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.UpdateClusterResponse{Cluster: clusterPB(out)}), nil
}

func (s *clusters) DeleteCluster(ctx context.Context, req *connect.Request[adminv1.DeleteClusterRequest]) (*connect.Response[adminv1.DeleteClusterResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.st.DeleteCluster(ctx, actor, p.Visible(), req.Msg.Id, req.Msg.Etag); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.DeleteClusterResponse{}), nil
}

func (s *clusters) SummarizeVersions(ctx context.Context, req *connect.Request[adminv1.SummarizeVersionsRequest]) (*connect.Response[adminv1.SummarizeVersionsResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.optionalID("tenant_id", req.Msg.TenantId)
	query, err := inventory.Parse(req.Msg.Query)
	if err != nil {
		v.add("query", "%v", err)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	sum, err := s.st.SummarizeVersions(ctx, store.Filter{Visible: p.Visible(), TenantID: req.Msg.TenantId}, query)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	counts := func(cs []store.VersionCount) []*adminv1.VersionCount {
		out := make([]*adminv1.VersionCount, 0, len(cs))
		for _, c := range cs {
			out = append(out, &adminv1.VersionCount{Version: c.Version, Clusters: c.Count})
		}
		return out
	}
	return connect.NewResponse(&adminv1.SummarizeVersionsResponse{Clusters: sum.Total, Reported: counts(sum.Reported),
		Desired: counts(sum.Desired), OffDesired: sum.OffDesired, OnBlocked: sum.OnBlocked}), nil
}
