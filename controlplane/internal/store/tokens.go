package store

import (
	"context"
	"fmt"
	"time"
)

// APIToken describes an API token. The secret itself is never stored,
// only its hash.
type APIToken struct {
	ID string `json:"id"`
	// TenantID is "" for an operator-wide token.
	TenantID string `json:"tenant_id"`
	// Role is the admin API's Role enum value.
	Role        int32      `json:"role"`
	Description string     `json:"description"`
	CreateTime  time.Time  `json:"create_time"`
	ExpireTime  *time.Time `json:"expire_time,omitempty"`
	RevokeTime  *time.Time `json:"revoke_time,omitempty"`
}

const tokenCols = `t.id, t.tenant_id, t.role, t.description, t.create_time, t.expire_time, t.revoke_time`

func scanToken(r row) (APIToken, error) {
	var t APIToken
	if err := r.Scan(&t.ID, &t.TenantID, &t.Role, &t.Description, &t.CreateTime, &t.ExpireTime, &t.RevokeTime); err != nil {
		return APIToken{}, err
	}
	t.CreateTime = utc(t.CreateTime)
	for _, p := range []*time.Time{t.ExpireTime, t.RevokeTime} {
		if p != nil {
			*p = utc(*p)
		}
	}
	return t, nil
}

func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC()
}

// CreateToken stores a token with the given ID (the caller generates it,
// since it is part of the secret it hands out) and secret hash. A tenant
// token's tenant must exist and be visible.
func (s *Store) CreateToken(ctx context.Context, a Actor, visible string, t APIToken, secretHash []byte) (APIToken, error) {
	t.CreateTime = s.now()
	if t.ExpireTime != nil {
		e := t.ExpireTime.UTC().Truncate(time.Microsecond)
		t.ExpireTime = &e
	}
	err := s.inTx(ctx, func(q querier) error {
		if visible != "" && t.TenantID != visible {
			return fmt.Errorf("tenant %q: %w", t.TenantID, ErrNotFound)
		}
		if t.TenantID != "" {
			if _, err := getTenant(ctx, q, visible, t.TenantID); err != nil {
				return err
			}
		}
		_, err := q.exec(ctx, `INSERT INTO api_tokens (id, tenant_id, role, description, secret_hash, create_time, expire_time, revoke_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)`,
			t.ID, t.TenantID, t.Role, t.Description, secretHash, t.CreateTime, nullTime(t.ExpireTime))
		if isUniqueViolation(err) {
			return fmt.Errorf("token %q: %w", t.ID, ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		return s.audit(ctx, q, a, "token.create", "api_token", t.ID, t.TenantID, nil, t)
	})
	if err != nil {
		return APIToken{}, fmt.Errorf("create token: %w", err)
	}
	return t, nil
}

func getToken(ctx context.Context, q querier, visible, id string) (APIToken, error) {
	if !isValidID(id) {
		return APIToken{}, fmt.Errorf("token %q: %w", id, ErrNotFound)
	}
	t, err := scanToken(q.queryRow(ctx, `SELECT `+tokenCols+` FROM api_tokens t WHERE t.id = $1`, id))
	if isNoRows(err) || (err == nil && visible != "" && t.TenantID != visible) {
		return APIToken{}, fmt.Errorf("token %q: %w", id, ErrNotFound)
	}
	return t, err
}

// GetToken returns one token's description.
func (s *Store) GetToken(ctx context.Context, visible, id string) (APIToken, error) {
	var t APIToken
	err := s.b.read(ctx, func(q querier) (err error) {
		t, err = getToken(ctx, q, visible, id)
		return err
	})
	if err != nil {
		return APIToken{}, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// LookupToken returns a token and its secret hash, for authentication.
func (s *Store) LookupToken(ctx context.Context, id string) (APIToken, []byte, error) {
	var t APIToken
	var hash []byte
	err := s.b.read(ctx, func(q querier) error {
		var err error
		if t, err = getToken(ctx, q, "", id); err != nil {
			return err
		}
		return q.queryRow(ctx, `SELECT secret_hash FROM api_tokens WHERE id = $1`, id).Scan(&hash)
	})
	if isNoRows(err) {
		err = fmt.Errorf("token %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return APIToken{}, nil, fmt.Errorf("lookup token: %w", err)
	}
	return t, hash, nil
}

// ListTokens returns one page of tokens (revoked ones included).
func (s *Store) ListTokens(ctx context.Context, f Filter, p Page) ([]APIToken, string, error) {
	var w where
	w.filter(Filter{Visible: f.Visible, TenantID: f.TenantID})
	var out []APIToken
	var next string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, next, err = list(ctx, q, tokenCols, "FROM api_tokens t", &w, p, scanToken, func(t APIToken) string { return t.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list tokens: %w", err)
	}
	return out, next, nil
}

// RevokeToken marks a token revoked; revoking twice keeps the first time.
func (s *Store) RevokeToken(ctx context.Context, a Actor, visible, id string) (APIToken, error) {
	var out APIToken
	err := s.inTx(ctx, func(q querier) error {
		old, err := getToken(ctx, q, visible, id)
		if err != nil {
			return err
		}
		out = old
		if old.RevokeTime != nil {
			return nil
		}
		now := s.now()
		out.RevokeTime = &now
		if _, err := q.exec(ctx, `UPDATE api_tokens SET revoke_time = $2 WHERE id = $1`, id, now); err != nil {
			return err
		}
		return s.audit(ctx, q, a, "token.revoke", "api_token", id, old.TenantID, old, out)
	})
	if err != nil {
		return APIToken{}, fmt.Errorf("revoke token: %w", err)
	}
	return out, nil
}

// CountTokens returns how many tokens exist, revoked ones included.
func (s *Store) CountTokens(ctx context.Context) (int, error) {
	var n int
	err := s.b.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT count(*) FROM api_tokens`).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count tokens: %w", err)
	}
	return n, nil
}
