package adminapi

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

type dataPlanes struct{ *Services }

func dataPlanePB(d store.DataPlane) *adminv1.DataPlane {
	return &adminv1.DataPlane{
		Id: d.ID, TenantId: d.TenantID, Name: d.Name, Region: d.Region, Cloud: adminv1.Cloud(d.Cloud),
		Labels: d.Labels, Etag: d.Etag,
		CreateTime: timestamppb.New(d.CreateTime), UpdateTime: timestamppb.New(d.UpdateTime),
	}
}

func (s *dataPlanes) CreateDataPlane(ctx context.Context, req *connect.Request[adminv1.CreateDataPlaneRequest]) (*connect.Response[adminv1.CreateDataPlaneResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	d := req.Msg.GetDataPlane()
	var v violations
	if d == nil {
		v.add("data_plane", "required")
	} else {
		v.id("data_plane.tenant_id", d.TenantId)
		v.name("data_plane.name", d.Name)
		if !regionRE.MatchString(d.Region) {
			v.add("data_plane.region", "required; lowercase letters, digits and '-', e.g. us-east-1")
		}
		if _, ok := adminv1.Cloud_name[int32(d.Cloud)]; !ok || d.Cloud == adminv1.Cloud_CLOUD_UNSPECIFIED {
			v.add("data_plane.cloud", "required; one of CLOUD_AWS, CLOUD_GCP, CLOUD_AZURE, CLOUD_OTHER")
		}
		v.labels("data_plane.labels", d.Labels)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.CreateDataPlane(ctx, actor, p.Visible(), store.DataPlane{
		TenantID: d.TenantId, Name: d.Name, Region: d.Region, Cloud: int32(d.Cloud), Labels: d.Labels,
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateDataPlaneResponse{DataPlane: dataPlanePB(out)}), nil
}

func (s *dataPlanes) GetDataPlane(ctx context.Context, req *connect.Request[adminv1.GetDataPlaneRequest]) (*connect.Response[adminv1.GetDataPlaneResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.GetDataPlane(ctx, p.Visible(), req.Msg.Id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetDataPlaneResponse{DataPlane: dataPlanePB(out)}), nil
}

func (s *dataPlanes) ListDataPlanes(ctx context.Context, req *connect.Request[adminv1.ListDataPlanesRequest]) (*connect.Response[adminv1.ListDataPlanesResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	page, sel := v.listArgs(req.Msg.PageSize, req.Msg.PageToken, req.Msg.LabelSelector)
	v.optionalID("tenant_id", req.Msg.TenantId)
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListDataPlanes(ctx, store.Filter{Visible: p.Visible(), TenantID: req.Msg.TenantId, Selector: sel}, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListDataPlanesResponse{NextPageToken: pageToken(next)}
	for _, d := range list {
		resp.DataPlanes = append(resp.DataPlanes, dataPlanePB(d))
	}
	return connect.NewResponse(resp), nil
}

func (s *dataPlanes) UpdateDataPlane(ctx context.Context, req *connect.Request[adminv1.UpdateDataPlaneRequest]) (*connect.Response[adminv1.UpdateDataPlaneResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	d := req.Msg.GetDataPlane()
	var v violations
	var fields map[string]bool
	if d == nil {
		v.add("data_plane", "required")
	} else {
		v.id("data_plane.id", d.Id)
		fields = v.mask(req.Msg.UpdateMask, "labels")
		if fields["labels"] {
			v.labels("data_plane.labels", d.Labels)
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.UpdateDataPlane(ctx, actor, p.Visible(), d.Id, d.Etag, func(cur *store.DataPlane) error {
		if fields["labels"] {
			cur.Labels = d.Labels
		}
		return nil
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.UpdateDataPlaneResponse{DataPlane: dataPlanePB(out)}), nil
}

func (s *dataPlanes) DeleteDataPlane(ctx context.Context, req *connect.Request[adminv1.DeleteDataPlaneRequest]) (*connect.Response[adminv1.DeleteDataPlaneResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.st.DeleteDataPlane(ctx, actor, p.Visible(), req.Msg.Id, req.Msg.Etag); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.DeleteDataPlaneResponse{}), nil
}
