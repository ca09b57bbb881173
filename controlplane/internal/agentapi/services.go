package agentapi

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

type enrollment struct {
	agentv1.UnimplementedEnrollmentServiceServer
	s *Server
}

// signErr maps CA refusals to statuses.
func signErr(err error) error {
	switch {
	case errors.Is(err, ca.ErrCSRInvalid):
		return status.Errorf(codes.InvalidArgument, "csr: %v", err)
	case errors.Is(err, ca.ErrCSRForbidden):
		return status.Errorf(codes.PermissionDenied, "csr: %v", err)
	}
	return err
}

func (e *enrollment) Enroll(ctx context.Context, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
	s := e.s
	refuse := func(tokenID string, err error) error {
		_ = s.slots.run(ctx, func() error {
			s.cfg.Store.AuditRefusal(ctx, store.Actor{ID: "anonymous"}, "agent.enroll.refused", "join_token", tokenID, "", status.Convert(err).Message())
			return nil
		})
		return err
	}
	if len(req.Csr) == 0 {
		return nil, refuse("", status.Error(codes.InvalidArgument, "csr: required"))
	}
	if len(req.AgentVersion) > 100 || len(req.Hostname) > 255 {
		return nil, refuse("", status.Error(codes.InvalidArgument, "agent_version or hostname too long"))
	}
	sec, err := auth.ParseJoinSecret(req.JoinToken)
	if err != nil {
		_ = s.slots.run(ctx, func() error {
			s.cfg.Store.AuditRefusal(ctx, store.Actor{ID: "anonymous"}, "agent.enroll.refused", "join_token", "", "", "malformed join token")
			return nil
		})
		return nil, status.Error(codes.Unauthenticated, "join token is invalid, used or expired")
	}
	agentID := uuid.NewString()
	var chain [][]byte
	enrollment := store.Enrollment{
		JoinTokenID: sec.ID,
		CheckSecret: sec.Matches,
		AgentID:     agentID,
		SPIFFEID: func(tenantID, dataPlaneID string) (string, error) {
			id, err := certs.AgentID(s.cfg.TrustDomain, tenantID, dataPlaneID, agentID)
			return id.String(), err
		},
		AgentVersion:   req.AgentVersion,
		Hostname:       req.Hostname,
		SVIDExpireTime: s.cfg.Now().Add(s.cfg.SVIDTTL),
		Issue: func(id string) error {
			sid, err := spiffeid.FromString(id)
			if err != nil {
				return err
			}
			c, err := s.cfg.CA.SignSVID(req.Csr, sid, s.cfg.SVIDTTL)
			if err != nil {
				return signErr(err)
			}
			chain = derList(c)
			return nil
		},
	}
	ag, err := slotted(ctx, s.slots, func() (store.Agent, error) { return s.cfg.Store.EnrollAgent(ctx, enrollment) })
	if errors.Is(err, store.ErrJoinTokenInvalid) {
		return nil, status.Error(codes.Unauthenticated, "join token is invalid, used or expired")
	}
	if err != nil {
		if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
			return nil, refuse(sec.ID, err)
		}
		s.log.ErrorContext(ctx, "enroll", "error", err)
		return nil, status.Error(codes.Internal, "enrollment failed")
	}
	s.log.InfoContext(ctx, "agent enrolled", "agent_id", ag.ID, "tenant_id", ag.TenantID, "data_plane_id", ag.DataPlaneID)
	resp := &agentv1.EnrollResponse{
		AgentId: ag.ID, TenantId: ag.TenantID, DataPlaneId: ag.DataPlaneID, SpiffeId: ag.SPIFFEID,
		SvidChain: chain, Bundle: derList(s.cfg.CA.BundleCerts()),
	}
	if s.cfg.Signer != nil {
		resp.SigningRootKey = s.cfg.Signer.RootPublicKey()
	}
	return resp, nil
}

type identity struct {
	agentv1.UnimplementedIdentityServiceServer
	s *Server
}

func (i *identity) RenewSVID(ctx context.Context, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
	s := i.s
	c, ok := callerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no caller")
	}
	if c.External {
		return nil, status.Error(codes.FailedPrecondition, "this agent's SVID comes from SPIRE; renew it there")
	}
	var chain [][]byte
	issue := func(ag store.Agent) (time.Time, error) {
		sid, err := spiffeid.FromString(ag.SPIFFEID)
		if err != nil {
			return time.Time{}, err
		}
		certs, err := s.cfg.CA.SignSVID(req.Csr, sid, s.cfg.SVIDTTL)
		if err != nil {
			return time.Time{}, signErr(err)
		}
		chain = derList(certs)
		return certs[0].NotAfter, nil
	}
	_, err := slotted(ctx, s.slots, func() (store.Agent, error) { return s.cfg.Store.RenewAgent(ctx, c.AgentID, issue) })
	switch {
	case errors.Is(err, store.ErrFailedPrecondition), errors.Is(err, store.ErrNotFound):
		return nil, status.Error(codes.PermissionDenied, "agent revoked")
	case err != nil:
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return nil, err
		}
		s.log.ErrorContext(ctx, "renew", "agent_id", c.AgentID, "error", err)
		return nil, status.Error(codes.Internal, "renewal failed")
	}
	return &agentv1.RenewSVIDResponse{SvidChain: chain, Bundle: derList(s.cfg.CA.BundleCerts())}, nil
}

func (i *identity) WatchBundle(_ *agentv1.WatchBundleRequest, stream agentv1.IdentityService_WatchBundleServer) error {
	ctx := stream.Context()
	// Subscribed before the first read, so no change is missed (one made
	// in between sends the bundle once more).
	changed := make(chan struct{}, 1)
	defer i.s.bundle.subscribe(func() {
		select {
		case changed <- struct{}{}:
		default: // one pending change is enough
		}
	})()
	for {
		if err := stream.Send(&agentv1.WatchBundleResponse{Bundle: derList(i.s.bundle.get()), Time: timestamppb.New(i.s.cfg.Now())}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
