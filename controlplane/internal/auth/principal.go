package auth

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// Principal is an authenticated caller.
type Principal struct {
	TokenID string
	// TenantID is "" for an operator-wide token.
	TenantID string
	Role     adminv1.Role
}

// Actor names the principal in the audit log.
func (p Principal) Actor() string { return "token:" + p.TokenID }

// Visible is the tenant the principal is confined to, "" for all: what
// store methods take as their visibility argument.
func (p Principal) Visible() string { return p.TenantID }

// OperatorWide reports whether the principal is not confined to a tenant.
func (p Principal) OperatorWide() bool { return p.TenantID == "" }

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller. Handlers behind the interceptor always
// have one; its absence is a wiring bug and is reported as Internal.
func FromContext(ctx context.Context) (Principal, error) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	if !ok {
		return Principal{}, connect.NewError(connect.CodeInternal, errNoPrincipal)
	}
	return p, nil
}

var errNoPrincipal = errors.New("no authenticated principal in context")

// usable reports whether a stored token may be used at now.
func usable(expire, revoke *time.Time, now time.Time) bool {
	return revoke == nil && (expire == nil || now.Before(*expire))
}
