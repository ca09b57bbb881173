// Package auth authenticates admin API callers by bearer token and decides
// what each may do. It owns the token format and the bootstrap token; it
// never logs a secret.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/google/uuid"
)

// Prefixes start every Cairn secret, so secret scanners can find leaked
// ones and one kind is never mistaken for the other.
const (
	apiPrefix  = "cairn_"
	joinPrefix = "cairnjoin_"
)

// Secret is a parsed token: its ID, which is public, and its secret part,
// which only the holder knows.
type Secret struct {
	ID     string
	prefix string
	secret string
}

// NewSecret makes an API token with a fresh ID and 256 random bits.
func NewSecret() Secret { return newSecret(apiPrefix) }

// NewJoinSecret makes an agent join token.
func NewJoinSecret() Secret { return newSecret(joinPrefix) }

func newSecret(prefix string) Secret {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return Secret{ID: uuid.NewString(), prefix: prefix, secret: base64.RawURLEncoding.EncodeToString(b[:])}
}

// String is the token: <prefix><id>_<secret>.
func (s Secret) String() string { return s.prefix + s.ID + "_" + s.secret }

// Hash is what the store keeps. The secret has 256 bits of entropy, so a
// plain SHA-256 resists guessing as well as a slow hash would.
func (s Secret) Hash() []byte {
	h := sha256.Sum256([]byte(s.secret))
	return h[:]
}

// Matches reports in constant time whether the secret hashes to hash.
func (s Secret) Matches(hash []byte) bool {
	return subtle.ConstantTimeCompare(s.Hash(), hash) == 1
}

var errMalformed = errors.New("malformed token")

// ParseSecret parses an API bearer token.
func ParseSecret(tok string) (Secret, error) { return parseSecret(apiPrefix, tok) }

// ParseJoinSecret parses an agent join token.
func ParseJoinSecret(tok string) (Secret, error) { return parseSecret(joinPrefix, tok) }

func parseSecret(prefix, tok string) (Secret, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), prefix)
	if !ok || len(rest) < 38 || rest[36] != '_' {
		return Secret{}, errMalformed
	}
	id, secret := rest[:36], rest[37:]
	if _, err := uuid.Parse(id); err != nil || len(secret) < 32 {
		return Secret{}, errMalformed
	}
	return Secret{ID: id, prefix: prefix, secret: secret}, nil
}
