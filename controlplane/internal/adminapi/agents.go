package adminapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// Join token lifetimes.
const (
	DefaultJoinTokenTTL = 10 * time.Minute
	maxJoinTokenTTL     = 7 * 24 * time.Hour
	maxRevokeReason     = 200
	maxMetricName       = 128
)

type agents struct{ *Services }

func agentPB(a store.Agent) *adminv1.Agent {
	out := &adminv1.Agent{
		Id: a.ID, TenantId: a.TenantID, DataPlaneId: a.DataPlaneID, SpiffeId: a.SPIFFEID,
		AgentVersion: a.AgentVersion, Hostname: a.Hostname,
		CreateTime: timestamppb.New(a.CreateTime), SvidExpireTime: timestamppb.New(a.SVIDExpireTime),
		RevokeReason: a.RevokeReason,
	}
	if a.RevokeTime != nil {
		out.RevokeTime = timestamppb.New(*a.RevokeTime)
	}
	if s := a.Sync; s != nil {
		out.Sync = &adminv1.AgentSync{
			LastSentRevision: s.LastSentRevision, LastAppliedRevision: s.LastAppliedRevision,
			LastNackRevision: s.LastNackRevision, LastNackReason: s.LastNackReason, LastNackDetail: s.LastNackDetail,
			LastSeenTime: timestamppb.New(s.LastSeen), Epoch: s.Epoch,
		}
	}
	if st := a.Status; st != nil {
		out.Status = &adminv1.AgentStatus{
			AppliedRevision: st.AppliedRevision, StateHash: st.StateHash, AgentVersion: st.AgentVersion,
			HostVersion: st.HostVersion, LastError: st.LastError, Stale: st.Stale, DroppedReports: st.DroppedReports,
			ProductVersion: st.ProductVersion, ReportTime: timestamppb.New(st.ReportTime), ReceiveTime: timestamppb.New(st.ReceiveTime),
		}
		for _, c := range st.Checks {
			out.Status.Checks = append(out.Status.Checks, &adminv1.AgentCheck{Name: c.Name, Healthy: c.Healthy, Detail: c.Detail})
		}
	}
	return out
}

func (s *agents) CreateJoinToken(ctx context.Context, req *connect.Request[adminv1.CreateJoinTokenRequest]) (*connect.Response[adminv1.CreateJoinTokenResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	var v violations
	v.id("data_plane_id", m.DataPlaneId)
	ttl := s.joinTokenTTL
	if m.Ttl != nil {
		ttl = m.Ttl.AsDuration()
		if m.Ttl.CheckValid() != nil || ttl < time.Second || ttl > maxJoinTokenTTL {
			v.add("ttl", "must be between 1s and 7 days")
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	sec := auth.NewJoinSecret()
	jt, err := s.st.CreateJoinToken(ctx, actor, p.Visible(), m.DataPlaneId, sec.ID, sec.Hash(), ttl)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateJoinTokenResponse{
		Id: jt.ID, JoinToken: sec.String(), ExpireTime: timestamppb.New(jt.ExpireTime),
	}), nil
}

func (s *agents) GetAgent(ctx context.Context, req *connect.Request[adminv1.GetAgentRequest]) (*connect.Response[adminv1.GetAgentResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	a, err := s.st.GetAgent(ctx, p.Visible(), req.Msg.Id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetAgentResponse{Agent: agentPB(a)}), nil
}

func (s *agents) ListAgents(ctx context.Context, req *connect.Request[adminv1.ListAgentsRequest]) (*connect.Response[adminv1.ListAgentsResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	m := req.Msg
	page, _ := v.listArgs(m.PageSize, m.PageToken, "")
	v.optionalID("tenant_id", m.TenantId)
	v.optionalID("data_plane_id", m.DataPlaneId)
	if m.BehindRevision < 0 {
		v.add("behind_revision", "must not be negative")
	}
	af := store.AgentFilter{DataPlaneID: m.DataPlaneId, BehindRevision: m.BehindRevision, WithNack: m.WithNack, ActiveOnly: m.ActiveOnly,
		UnhealthyOnly: m.UnhealthyOnly}
	if m.NotSeenFor != nil {
		d := m.NotSeenFor.AsDuration()
		if m.NotSeenFor.CheckValid() != nil || d <= 0 {
			v.add("not_seen_for", "must be a positive duration")
		}
		af.NotSeenSince = s.now().Add(-d)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListAgents(ctx, store.Filter{Visible: p.Visible(), TenantID: m.TenantId}, af, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListAgentsResponse{NextPageToken: pageToken(next)}
	for _, a := range list {
		resp.Agents = append(resp.Agents, agentPB(a))
	}
	return connect.NewResponse(resp), nil
}

func (s *agents) RevokeAgent(ctx context.Context, req *connect.Request[adminv1.RevokeAgentRequest]) (*connect.Response[adminv1.RevokeAgentResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	v.maxLen("reason", req.Msg.Reason, maxRevokeReason)
	if err := v.err(); err != nil {
		return nil, err
	}
	reason := req.Msg.Reason
	if reason == "" {
		reason = "revoked by " + actor.ID
	}
	a, err := s.st.RevokeAgent(ctx, actor, p.Visible(), req.Msg.Id, reason)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.RevokeAgentResponse{Agent: agentPB(a)}), nil
}

func (s *agents) ListAgentMetrics(ctx context.Context, req *connect.Request[adminv1.ListAgentMetricsRequest]) (*connect.Response[adminv1.ListAgentMetricsResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	m := req.Msg
	v.id("agent_id", m.AgentId)
	page, _ := v.listArgs(m.PageSize, m.PageToken, "")
	v.maxLen("name", m.Name, maxMetricName)
	f := store.MetricFilter{AgentID: m.AgentId, Name: m.Name}
	if m.StartTime != nil {
		if m.StartTime.CheckValid() != nil {
			v.add("start_time", "must be a valid timestamp")
		}
		f.Since = m.StartTime.AsTime()
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	// The agent must be visible to the caller: NotFound otherwise.
	if _, err := s.st.GetAgent(ctx, p.Visible(), m.AgentId); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	points, next, err := s.st.ListAgentMetrics(ctx, f, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListAgentMetricsResponse{NextPageToken: pageToken(next)}
	for _, pt := range points {
		resp.Points = append(resp.Points, &adminv1.AgentMetricPoint{Name: pt.Name, Labels: pt.Labels, Value: pt.Value,
			Time: timestamppb.New(pt.Time), Source: pt.Source})
	}
	return connect.NewResponse(resp), nil
}

func (s *agents) GetTrustBundle(ctx context.Context, _ *connect.Request[adminv1.GetTrustBundleRequest]) (*connect.Response[adminv1.GetTrustBundleResponse], error) {
	if s.ca == nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("this control plane has no agent CA"))
	}
	cas := s.ca.BundleCerts()
	pins := make([]string, len(cas))
	for i, c := range cas {
		pins[i] = certs.SPKIPin(c)
	}
	// BundleCerts is newest first; the signing CA's pin goes first.
	active := certs.SPKIPin(s.ca.Active())
	for i, p := range pins {
		if p == active && i > 0 {
			pins[0], pins[i] = pins[i], pins[0]
			cas[0], cas[i] = cas[i], cas[0]
		}
	}
	td := ""
	if uris := s.ca.Active().URIs; len(uris) == 1 {
		if id, err := spiffeid.FromURI(uris[0]); err == nil {
			td = id.TrustDomain().String()
		}
	}
	return connect.NewResponse(&adminv1.GetTrustBundleResponse{
		BundlePem: strings.TrimSpace(string(certs.EncodeCertsPEM(cas))) + "\n", Pins: pins, TrustDomain: td,
		SigningRootPem: signingRootPEM(s.signingRoot),
	}), nil
}

func signingRootPEM(pub ed25519.PublicKey) string {
	if pub == nil {
		return ""
	}
	return string(certs.EncodeEd25519PublicKeyPEM(pub))
}
