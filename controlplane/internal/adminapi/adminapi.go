// Package adminapi implements the admin API's connect services over the
// store. Handlers validate every request before touching the store, confine
// tenant-scoped callers to their tenant (answering NotFound, so existence
// does not leak), and turn store errors into status codes in one place
// (toConnect). It must not hold state of its own.
package adminapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/requestid"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
)

// Config configures the admin services.
type Config struct {
	// Store keeps all state. Required.
	Store *store.Store
	// Logger receives internal errors. Nil discards.
	Logger *slog.Logger
	// HandlerOptions are added to every service handler (interceptors,
	// read limits). May be empty.
	HandlerOptions []connect.HandlerOption
	// CA is the agent CA whose bundle GetTrustBundle returns; nil answers
	// Unavailable.
	CA *ca.Authority
	// SigningRoot is the config-signing root public key GetTrustBundle
	// returns; nil returns none.
	SigningRoot ed25519.PublicKey
	// JoinTokenTTL is the lifetime of a join token created without one;
	// 0 means DefaultJoinTokenTTL.
	JoinTokenTTL time.Duration
	// Now is the clock for expiry times; nil means time.Now.
	Now func() time.Time
}

// Services are the admin API's connect services.
type Services struct {
	st           *store.Store
	log          *slog.Logger
	opts         []connect.HandlerOption
	ca           *ca.Authority
	signingRoot  ed25519.PublicKey
	joinTokenTTL time.Duration
	now          func() time.Time
}

// New checks cfg and returns the services.
func New(cfg Config) (*Services, error) {
	if cfg.Store == nil {
		return nil, errors.New("adminapi: Store is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ttl := cfg.JoinTokenTTL
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Services{st: cfg.Store, log: log, opts: cfg.HandlerOptions, ca: cfg.CA, signingRoot: cfg.SigningRoot, joinTokenTTL: ttl, now: now}, nil
}

// ServiceNames lists the fully-qualified service names, for reflection.
var ServiceNames = []string{
	adminv1connect.TenantServiceName,
	adminv1connect.DataPlaneServiceName,
	adminv1connect.ClusterServiceName,
	adminv1connect.ConfigServiceName,
	adminv1connect.AuditServiceName,
	adminv1connect.TokenServiceName,
	adminv1connect.AgentServiceName,
	adminv1connect.ReleaseServiceName,
	adminv1connect.RolloutServiceName,
}

// Register mounts every service on mux.
func (s *Services) Register(mux *http.ServeMux) {
	mux.Handle(adminv1connect.NewTenantServiceHandler(&tenants{s}, s.opts...))
	mux.Handle(adminv1connect.NewDataPlaneServiceHandler(&dataPlanes{s}, s.opts...))
	mux.Handle(adminv1connect.NewClusterServiceHandler(&clusters{s}, s.opts...))
	mux.Handle(adminv1connect.NewConfigServiceHandler(&configs{s}, s.opts...))
	mux.Handle(adminv1connect.NewAuditServiceHandler(&audit{s}, s.opts...))
	mux.Handle(adminv1connect.NewTokenServiceHandler(&tokens{s}, s.opts...))
	mux.Handle(adminv1connect.NewAgentServiceHandler(&agents{s}, s.opts...))
	mux.Handle(adminv1connect.NewReleaseServiceHandler(&releases{s}, s.opts...))
	mux.Handle(adminv1connect.NewRolloutServiceHandler(&rollouts{s}, s.opts...))
}

// caller returns the authenticated principal and the audit actor.
func caller(ctx context.Context) (auth.Principal, store.Actor, error) {
	p, err := auth.FromContext(ctx)
	if err != nil {
		return auth.Principal{}, store.Actor{}, err
	}
	return p, store.Actor{ID: p.Actor(), RequestID: requestid.From(ctx)}, nil
}

// toConnect maps an error to a connect error: store errors by kind,
// context errors as such, anything else as Internal with a generic message
// (the detail goes to the log with the request id, not to the caller).
func (s *Services) toConnect(ctx context.Context, err error) error {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, store.ErrEtagMismatch), errors.Is(err, store.ErrFailedPrecondition):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, store.ErrBadPageToken):
		var v violations
		v.add("page_token", "not a page token from this API, or sent with other filters")
		return v.err()
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	s.log.ErrorContext(ctx, "internal error", "request_id", requestid.From(ctx), "error", err)
	return connect.NewError(connect.CodeInternal, fmt.Errorf("internal error (request id %s)", requestid.From(ctx)))
}
