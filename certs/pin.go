package certs

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// pinPrefix names the digest; a pin without it is refused rather than
// guessed at, so another digest can be added later without ambiguity.
const pinPrefix = "sha256:"

// SPKIPin returns "sha256:<hex>", the lowercase hex SHA-256 of cert's
// SubjectPublicKeyInfo. Pinning the key rather than the certificate, like
// Teleport's ca_pin, survives reissuing the CA certificate with the same key.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// CheckPin reports whether pin has the form SPKIPin returns: "sha256:"
// followed by 64 hex digits. Hex digits may be upper or lower case.
func CheckPin(pin string) error {
	_, err := pinDigest(pin)
	return err
}

func pinDigest(pin string) ([]byte, error) {
	h, ok := strings.CutPrefix(pin, pinPrefix)
	if !ok {
		return nil, fmt.Errorf("pin must start with %q", pinPrefix)
	}
	if len(h) != 2*sha256.Size {
		return nil, fmt.Errorf("pin must have %d hex digits after %q; got %d characters", 2*sha256.Size, pinPrefix, len(h))
	}
	d, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("pin: %w", err)
	}
	return d, nil
}

// MatchPin returns the first certificate in certs whose SPKIPin is pin. A
// malformed pin matches nothing. Digests are compared in constant time.
func MatchPin(certs []*x509.Certificate, pin string) (*x509.Certificate, bool) {
	want, err := pinDigest(pin)
	if err != nil {
		return nil, false
	}
	for _, c := range certs {
		if c == nil {
			continue
		}
		got := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		if subtle.ConstantTimeCompare(got[:], want) == 1 {
			return c, true
		}
	}
	return nil, false
}
