package agentapi

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// caller is an authenticated agent.
type caller struct {
	certs.AgentIdentity
	// External is true for agents whose SVIDs come from SPIRE; they renew
	// there, not here.
	External bool
}

type callerKey struct{}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

var (
	errRevoked  = errors.New("agent revoked")
	errShutdown = errors.New("control plane shutting down")
)

// authenticate finds the calling agent from its verified client
// certificate and checks it is registered, unrevoked, and that its
// certificate names the tenant and data plane it was registered with.
func (s *Server) authenticate(ctx context.Context) (caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return caller{}, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := tlsInfo(p.AuthInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return caller{}, status.Error(codes.Unauthenticated, "this call needs the agent's X.509-SVID as client certificate")
	}
	// go-spiffe verified the chain in the handshake (VerifiedChains stays
	// empty because Go's own verification is not used), so the leaf's ID
	// can be trusted here.
	leaf := info.State.PeerCertificates[0]
	// The handshake checked validity then; a connection may outlive its
	// SVID, and an expired SVID may do nothing more.
	if now := s.cfg.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return caller{}, status.Error(codes.Unauthenticated, "client SVID is expired or not yet valid; reconnect with a renewed SVID")
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return caller{}, status.Error(codes.Unauthenticated, "client certificate is not an X.509-SVID")
	}
	if s.cfg.SPIRE != nil && id.MemberOf(s.cfg.SPIRE.TrustDomain) {
		return s.authenticateSPIRE(ctx, id)
	}
	ai, err := certs.ParseAgentID(id)
	if err != nil || ai.TrustDomain != s.cfg.TrustDomain {
		return caller{}, status.Errorf(codes.PermissionDenied, "%s is not an agent of this control plane", id)
	}
	reg, ok := s.regs.get(ai.AgentID)
	if !ok {
		ag, err := slotted(ctx, s.slots, func() (store.Agent, error) { return s.cfg.Store.GetAgent(ctx, "", ai.AgentID) })
		switch {
		case errors.Is(err, store.ErrNotFound):
			return caller{}, status.Errorf(codes.PermissionDenied, "agent %s is not registered", ai.AgentID)
		case err != nil:
			return caller{}, status.Error(codes.Unavailable, "cannot check agent registration")
		case ag.RevokeTime != nil:
			return caller{}, status.Errorf(codes.PermissionDenied, "agent %s is revoked", ai.AgentID)
		}
		reg = registration{tenantID: ag.TenantID, dataPlaneID: ag.DataPlaneID, spiffeID: ag.SPIFFEID}
		s.regs.put(ai.AgentID, reg)
	}
	if reg.tenantID != ai.TenantID || reg.dataPlaneID != ai.DataPlaneID || reg.spiffeID != id.String() {
		return caller{}, status.Errorf(codes.PermissionDenied, "certificate of agent %s does not match its registration", ai.AgentID)
	}
	return caller{AgentIdentity: ai}, nil
}

// registrationTTL is how long a registration found in the store is
// trusted without reading it again; revocations end it sooner.
const registrationTTL = time.Minute

// registration is what authentication checks a certificate against: an
// agent registered and not revoked when it was read.
type registration struct {
	tenantID, dataPlaneID, spiffeID string
	until                           time.Time
}

// registrations remembers agents found registered and unrevoked, so that
// an agent's calls do not each read the store: with 10,000 agents the
// Report calls' registration checks were 8% of the control plane's CPU.
// An entry lives for registrationTTL; the revocation poll and the
// reconcile (Run) drop revoked agents' entries when they close their
// streams, so a revocation ends an agent's calls as soon as its streams.
type registrations struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]registration
}

func newRegistrations(now func() time.Time) *registrations {
	return &registrations{now: now, m: map[string]registration{}}
}

func (r *registrations) get(agentID string) (registration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg, ok := r.m[agentID]
	if ok && !r.now().Before(reg.until) {
		delete(r.m, agentID)
		return registration{}, false
	}
	return reg, ok
}

func (r *registrations) put(agentID string, reg registration) {
	reg.until = r.now().Add(registrationTTL)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[agentID] = reg
}

func (r *registrations) forget(agentIDs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range agentIDs {
		delete(r.m, id)
	}
}

// ids drops expired entries and returns the agents remembered.
func (r *registrations) ids() []string {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.m))
	for id, reg := range r.m {
		if !now.Before(reg.until) {
			delete(r.m, id)
			continue
		}
		out = append(out, id)
	}
	return out
}

// anonymousOK lists the calls allowed without a client certificate.
func anonymousOK(method string) bool {
	return method == agentv1.EnrollmentService_Enroll_FullMethodName
}

// refused logs and audits a refused call. Calls without a verified
// certificate are only logged: there is nobody to attribute them to.
func (s *Server) refused(ctx context.Context, method string, err error) {
	s.log.InfoContext(ctx, "agent call refused", "method", method, "error", err)
	p, ok := peer.FromContext(ctx)
	if !ok {
		return
	}
	info, ok := tlsInfo(p.AuthInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return
	}
	actor, agentID := "certificate:"+info.State.PeerCertificates[0].SerialNumber.Text(16), ""
	if id, err := x509svid.IDFromCert(info.State.PeerCertificates[0]); err == nil {
		actor = "spiffe:" + id.String()
		if ai, err := certs.ParseAgentID(id); err == nil {
			agentID = ai.AgentID
		}
	}
	_ = s.slots.run(ctx, func() error {
		s.cfg.Store.AuditRefusal(ctx, store.Actor{ID: actor}, "agent.call.refused", "agent", agentID, "",
			method+": "+status.Convert(err).Message())
		return nil
	})
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if anonymousOK(info.FullMethod) {
		return handler(ctx, req)
	}
	c, err := s.authenticate(ctx)
	if err != nil {
		s.refused(ctx, info.FullMethod, err)
		return nil, err
	}
	return handler(context.WithValue(ctx, callerKey{}, c), req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, "/grpc.reflection.") {
		// Reflection is served to any verified agent; grpcurl uses it.
		if _, err := s.authenticate(ss.Context()); err != nil {
			s.refused(ss.Context(), info.FullMethod, err)
			return err
		}
		return handler(srv, ss)
	}
	c, err := s.authenticate(ss.Context())
	if err != nil {
		s.refused(ss.Context(), info.FullMethod, err)
		return err
	}
	ctx, cancel := context.WithCancelCause(context.WithValue(ss.Context(), callerKey{}, c))
	defer cancel(nil)
	done := s.streams.add(c.AgentID, cancel)
	defer done()
	err = handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errRevoked):
		return status.Error(codes.PermissionDenied, "agent revoked")
	case errors.Is(cause, errShutdown):
		return status.Error(codes.Unavailable, "control plane shutting down; reconnect")
	}
	return err
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// streamRegistry tracks open streams per agent so a revocation can close
// them.
type streamRegistry struct {
	mu   sync.Mutex
	next uint64
	m    map[string]map[uint64]context.CancelCauseFunc
}

func newStreamRegistry() *streamRegistry {
	return &streamRegistry{m: map[string]map[uint64]context.CancelCauseFunc{}}
}

func (r *streamRegistry) add(agentID string, cancel context.CancelCauseFunc) (remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	key := r.next
	if r.m[agentID] == nil {
		r.m[agentID] = map[uint64]context.CancelCauseFunc{}
	}
	r.m[agentID][key] = cancel
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.m[agentID], key)
		if len(r.m[agentID]) == 0 {
			delete(r.m, agentID)
		}
	}
}

// closeAgent cancels every open stream of the agent and returns how many.
func (r *streamRegistry) closeAgent(agentID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cancel := range r.m[agentID] {
		cancel(errRevoked)
	}
	return len(r.m[agentID])
}

// closeAll cancels every open stream with cause.
func (r *streamRegistry) closeAll(cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.m {
		for _, cancel := range m {
			cancel(cause)
		}
	}
}

// agents returns the ids of agents with open streams.
func (r *streamRegistry) agents() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.m))
	for id := range r.m {
		out = append(out, id)
	}
	return out
}

// count returns the number of open streams, for tests and metrics.
func (r *streamRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.m {
		n += len(m)
	}
	return n
}
