package adminapi

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

type tokens struct{ *Services }

const maxTokenTTL = 10 * 365 * 24 * time.Hour

func tokenPB(t store.APIToken) *adminv1.ApiToken {
	out := &adminv1.ApiToken{
		Id: t.ID, TenantId: t.TenantID, Role: adminv1.Role(t.Role), Description: t.Description,
		CreateTime: timestamppb.New(t.CreateTime),
	}
	if t.ExpireTime != nil {
		out.ExpireTime = timestamppb.New(*t.ExpireTime)
	}
	if t.RevokeTime != nil {
		out.RevokeTime = timestamppb.New(*t.RevokeTime)
	}
	return out
}

func (s *tokens) CreateToken(ctx context.Context, req *connect.Request[adminv1.CreateTokenRequest]) (*connect.Response[adminv1.CreateTokenResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	var v violations
	v.optionalID("tenant_id", m.TenantId)
	if _, ok := adminv1.Role_name[int32(m.Role)]; !ok || m.Role == adminv1.Role_ROLE_UNSPECIFIED {
		v.add("role", "required; one of ROLE_VIEWER, ROLE_OPERATOR, ROLE_ADMIN")
	}
	v.maxLen("description", m.Description, maxDescription)
	var expire *time.Time
	if m.Ttl != nil {
		ttl := m.Ttl.AsDuration()
		if err := m.Ttl.CheckValid(); err != nil || ttl <= 0 || ttl > maxTokenTTL {
			v.add("ttl", "must be positive and at most 10 years")
		}
		e := s.now().Add(ttl)
		expire = &e
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if m.Role > p.Role {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("a token may not create a token with a higher role than its own"))
	}
	if m.TenantId == "" && !p.OperatorWide() {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("only an operator-wide token may create operator-wide tokens; set tenant_id"))
	}
	sec := auth.NewSecret()
	out, err := s.st.CreateToken(ctx, actor, p.Visible(), store.APIToken{
		ID: sec.ID, TenantID: m.TenantId, Role: int32(m.Role), Description: m.Description, ExpireTime: expire,
	}, sec.Hash())
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateTokenResponse{Token: tokenPB(out), Secret: sec.String()}), nil
}

func (s *tokens) GetToken(ctx context.Context, req *connect.Request[adminv1.GetTokenRequest]) (*connect.Response[adminv1.GetTokenResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.GetToken(ctx, p.Visible(), req.Msg.Id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetTokenResponse{Token: tokenPB(out)}), nil
}

func (s *tokens) ListTokens(ctx context.Context, req *connect.Request[adminv1.ListTokensRequest]) (*connect.Response[adminv1.ListTokensResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	page, _ := v.listArgs(req.Msg.PageSize, req.Msg.PageToken, "")
	v.optionalID("tenant_id", req.Msg.TenantId)
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListTokens(ctx, store.Filter{Visible: p.Visible(), TenantID: req.Msg.TenantId}, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListTokensResponse{NextPageToken: pageToken(next)}
	for _, t := range list {
		resp.Tokens = append(resp.Tokens, tokenPB(t))
	}
	return connect.NewResponse(resp), nil
}

func (s *tokens) RevokeToken(ctx context.Context, req *connect.Request[adminv1.RevokeTokenRequest]) (*connect.Response[adminv1.RevokeTokenResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.RevokeToken(ctx, actor, p.Visible(), req.Msg.Id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.RevokeTokenResponse{Token: tokenPB(out)}), nil
}
