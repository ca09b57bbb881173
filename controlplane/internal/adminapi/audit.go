package adminapi

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

type audit struct{ *Services }

func (s *audit) ListAuditEvents(ctx context.Context, req *connect.Request[adminv1.ListAuditEventsRequest]) (*connect.Response[adminv1.ListAuditEventsResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	m := req.Msg
	page, _ := v.listArgs(m.PageSize, m.PageToken, "")
	v.optionalID("tenant_id", m.TenantId)
	v.maxLen("resource_id", m.ResourceId, 64)
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListAuditEvents(ctx, store.AuditFilter{Visible: p.Visible(), TenantID: m.TenantId, ResourceID: m.ResourceId}, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListAuditEventsResponse{NextPageToken: pageToken(next)}
	for _, e := range list {
		resp.Events = append(resp.Events, &adminv1.AuditEvent{
			Id: e.ID, Time: timestamppb.New(e.Time), Actor: e.Actor, Action: e.Action,
			ResourceType: e.ResourceType, ResourceId: e.ResourceID, TenantId: e.TenantID,
			OldDigest: e.OldDigest, NewDigest: e.NewDigest, RequestId: e.RequestID, Detail: e.Detail,
		})
	}
	return connect.NewResponse(resp), nil
}
