package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// BootstrapStore is what Bootstrap needs of the store.
type BootstrapStore interface {
	TokenLookup
	CountTokens(ctx context.Context) (int, error)
	CreateToken(ctx context.Context, a store.Actor, visible string, t store.APIToken, secretHash []byte) (store.APIToken, error)
}

// Bootstrap makes sure a fresh install has an operator-wide admin token.
//
// With path set: if the file exists, its token is registered (once) and
// must match what the store holds; if not, a new token is created and
// written there with mode 0600. Without path: if the store has no tokens
// at all, a new token is created and printed once to out. Either way the
// secret never reaches a log.
func Bootstrap(ctx context.Context, st BootstrapStore, path string, out io.Writer) error {
	actor := store.Actor{ID: "system:bootstrap"}
	tok := store.APIToken{Role: int32(adminv1.Role_ROLE_ADMIN), Description: "bootstrap operator token"}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			sec, err := ParseSecret(string(b))
			if err != nil {
				return fmt.Errorf("bootstrap token file %s: %w", path, err)
			}
			_, hash, err := st.LookupToken(ctx, sec.ID)
			if err == nil {
				if !sec.Matches(hash) {
					return fmt.Errorf("bootstrap token file %s does not match the stored token %s", path, sec.ID)
				}
				return nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("bootstrap: %w", err)
			}
			tok.ID = sec.ID
			_, err = st.CreateToken(ctx, actor, "", tok, sec.Hash())
			if errors.Is(err, store.ErrAlreadyExists) {
				// Another replica registered the same file first.
				if _, hash, err := st.LookupToken(ctx, sec.ID); err == nil && sec.Matches(hash) {
					return nil
				}
			}
			return err
		case errors.Is(err, fs.ErrNotExist):
			sec := NewSecret()
			tok.ID = sec.ID
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			// Write the file before storing the token, so a crash cannot
			// leave a stored token nobody holds.
			if err := os.WriteFile(path, []byte(sec.String()+"\n"), 0o600); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			_, err = st.CreateToken(ctx, actor, "", tok, sec.Hash())
			return err
		default:
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	n, err := st.CountTokens(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if n > 0 {
		return nil
	}
	sec := NewSecret()
	tok.ID = sec.ID
	if _, err := st.CreateToken(ctx, actor, "", tok, sec.Hash()); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	_, err = fmt.Fprintf(out, "%s\nBootstrap operator token (shown once; store it now):\n\n  %s\n\n%s\n",
		strings.Repeat("=", 72), sec.String(), strings.Repeat("=", 72))
	return err
}
