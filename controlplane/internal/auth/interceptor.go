package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// TokenLookup finds a stored token and its secret hash; *store.Store
// implements it. It returns an error wrapping store.ErrNotFound for an
// unknown ID.
type TokenLookup interface {
	LookupToken(ctx context.Context, id string) (store.APIToken, []byte, error)
}

// Authenticator checks bearer tokens and per-procedure roles.
type Authenticator struct {
	tokens TokenLookup
	now    func() time.Time
}

// NewAuthenticator returns an Authenticator; now nil means time.Now.
func NewAuthenticator(tokens TokenLookup, now func() time.Time) *Authenticator {
	if now == nil {
		now = time.Now
	}
	return &Authenticator{tokens: tokens, now: now}
}

var errUnauthenticated = errors.New(`missing or invalid API token; send "authorization: Bearer <token>"`)

// Authenticate returns the principal of a bearer token from an
// Authorization header value.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (Principal, error) {
	// The scheme is case-insensitive (RFC 9110 section 11.1).
	scheme, raw, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	sec, err := ParseSecret(raw)
	if err != nil {
		return Principal{}, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	tok, hash, err := a.tokens.LookupToken(ctx, sec.ID)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	if err != nil {
		return Principal{}, connect.NewError(connect.CodeUnavailable, errors.New("cannot check token: store unavailable"))
	}
	if !sec.Matches(hash) || !usable(tok.ExpireTime, tok.RevokeTime, a.now()) {
		return Principal{}, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	return Principal{TokenID: tok.ID, TenantID: tok.TenantID, Role: adminv1.Role(tok.Role)}, nil
}

// RequiredRole is the least role a procedure needs: admin for the token
// service, viewer for reads, operator for everything else. A read is a
// method the contract declares free of side effects
// (idempotency_level = NO_SIDE_EFFECTS), so the proto file, not a naming
// habit, decides.
func RequiredRole(procedure string) adminv1.Role {
	svc, method, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	switch {
	case strings.HasSuffix(svc, ".TokenService"):
		return adminv1.Role_ROLE_ADMIN
	case readOnly(svc, method):
		return adminv1.Role_ROLE_VIEWER
	default:
		return adminv1.Role_ROLE_OPERATOR
	}
}

// readOnly reports whether the method is declared NO_SIDE_EFFECTS.
func readOnly(service, method string) bool {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service).Append(protoreflect.Name(method)))
	if err != nil {
		return false
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return false
	}
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	return ok && opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
}

// Interceptor authenticates every call and checks the procedure's role
// before the handler runs. Streaming calls are refused: the admin API has
// none.
func (a *Authenticator) Interceptor() connect.Interceptor { return interceptor{a} }

type interceptor struct{ a *Authenticator }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p, err := i.a.Authenticate(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return nil, err
		}
		if need := RequiredRole(req.Spec().Procedure); p.Role < need {
			return nil, connect.NewError(connect.CodePermissionDenied,
				errors.New("token role "+p.Role.String()+" may not call "+req.Spec().Procedure+"; it needs "+need.String()))
		}
		return next(WithPrincipal(ctx, p), req)
	}
}

func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return connect.NewError(connect.CodeUnimplemented, errors.New("streaming is not offered on the admin API"))
	}
}
