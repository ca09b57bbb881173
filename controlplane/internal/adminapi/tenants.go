package adminapi

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

type tenants struct{ *Services }

func tenantPB(t store.Tenant) *adminv1.Tenant {
	return &adminv1.Tenant{
		Id: t.ID, Name: t.Name, DisplayName: t.DisplayName, Labels: t.Labels, Etag: t.Etag,
		CreateTime: timestamppb.New(t.CreateTime), UpdateTime: timestamppb.New(t.UpdateTime),
	}
}

var errOperatorOnly = errors.New("only an operator-wide token may create, change or delete tenants")

func (s *tenants) CreateTenant(ctx context.Context, req *connect.Request[adminv1.CreateTenantRequest]) (*connect.Response[adminv1.CreateTenantResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	t := req.Msg.GetTenant()
	var v violations
	if t == nil {
		v.add("tenant", "required")
	} else {
		v.name("tenant.name", t.Name)
		v.maxLen("tenant.display_name", t.DisplayName, maxDisplayName)
		v.labels("tenant.labels", t.Labels)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if !p.OperatorWide() {
		return nil, connect.NewError(connect.CodePermissionDenied, errOperatorOnly)
	}
	out, err := s.st.CreateTenant(ctx, actor, store.Tenant{Name: t.Name, DisplayName: t.DisplayName, Labels: t.Labels})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateTenantResponse{Tenant: tenantPB(out)}), nil
}

func (s *tenants) GetTenant(ctx context.Context, req *connect.Request[adminv1.GetTenantRequest]) (*connect.Response[adminv1.GetTenantResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.GetTenant(ctx, p.Visible(), req.Msg.Id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetTenantResponse{Tenant: tenantPB(out)}), nil
}

func (s *tenants) ListTenants(ctx context.Context, req *connect.Request[adminv1.ListTenantsRequest]) (*connect.Response[adminv1.ListTenantsResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	page, sel := v.listArgs(req.Msg.PageSize, req.Msg.PageToken, req.Msg.LabelSelector)
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListTenants(ctx, store.Filter{Visible: p.Visible(), Selector: sel}, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListTenantsResponse{NextPageToken: pageToken(next)}
	for _, t := range list {
		resp.Tenants = append(resp.Tenants, tenantPB(t))
	}
	return connect.NewResponse(resp), nil
}

// tenantWrite refuses tenant-scoped callers: PermissionDenied for their own
// tenant, NotFound for any other, so other tenants' existence stays hidden.
func tenantWrite(ctx context.Context, s *Services, id string) (store.Actor, error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return store.Actor{}, err
	}
	if p.OperatorWide() {
		return actor, nil
	}
	if p.TenantID == id {
		return store.Actor{}, connect.NewError(connect.CodePermissionDenied, errOperatorOnly)
	}
	_, err = s.st.GetTenant(ctx, p.Visible(), id)
	return store.Actor{}, s.toConnect(ctx, err)
}

func (s *tenants) UpdateTenant(ctx context.Context, req *connect.Request[adminv1.UpdateTenantRequest]) (*connect.Response[adminv1.UpdateTenantResponse], error) {
	t := req.Msg.GetTenant()
	var v violations
	var fields map[string]bool
	if t == nil {
		v.add("tenant", "required")
	} else {
		v.id("tenant.id", t.Id)
		fields = v.mask(req.Msg.UpdateMask, "display_name", "labels")
		if fields["display_name"] {
			v.maxLen("tenant.display_name", t.DisplayName, maxDisplayName)
		}
		if fields["labels"] {
			v.labels("tenant.labels", t.Labels)
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := tenantWrite(ctx, s.Services, t.Id)
	if err != nil {
		return nil, err
	}
	out, err := s.st.UpdateTenant(ctx, actor, "", t.Id, t.Etag, func(cur *store.Tenant) error {
		if fields["display_name"] {
			cur.DisplayName = t.DisplayName
		}
		if fields["labels"] {
			cur.Labels = t.Labels
		}
		return nil
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.UpdateTenantResponse{Tenant: tenantPB(out)}), nil
}

func (s *tenants) DeleteTenant(ctx context.Context, req *connect.Request[adminv1.DeleteTenantRequest]) (*connect.Response[adminv1.DeleteTenantResponse], error) {
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := tenantWrite(ctx, s.Services, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	if err := s.st.DeleteTenant(ctx, actor, "", req.Msg.Id, req.Msg.Etag); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.DeleteTenantResponse{}), nil
}
