package certs

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// EncodeCertsPEM encodes certs, leaf first if it is a chain, as concatenated
// PEM "CERTIFICATE" blocks.
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // writes to a bytes.Buffer do not fail
	}
	return buf.Bytes()
}

// ParseCertsPEM parses concatenated PEM "CERTIFICATE" blocks, in order. It
// rejects input with no certificate, blocks of any other type and any
// non-whitespace text outside the blocks: pem.Decode skips text it does not
// recognise, so a damaged block would otherwise vanish without an error.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := bytes.TrimSpace(b)
	for len(rest) > 0 {
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("parse certificates: text that is not a PEM block after %d certificates", len(out))
		}
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("parse certificates: malformed PEM block after %d certificates", len(out))
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("parse certificates: PEM block %q; want \"CERTIFICATE\"", block.Type)
		}
		if len(block.Headers) != 0 {
			return nil, errors.New("parse certificates: CERTIFICATE block has headers")
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificates: certificate %d: %w", len(out), err)
		}
		out = append(out, c)
		rest = bytes.TrimSpace(rest)
	}
	if len(out) == 0 {
		return nil, errors.New("parse certificates: no certificates")
	}
	return out, nil
}

// EncodeEd25519PublicKeyPEM encodes pub as a PEM "PUBLIC KEY" (PKIX) block.
func EncodeEd25519PublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(fmt.Sprintf("marshal ed25519 public key: %v", err)) // only a wrong length fails, a caller bug
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParseEd25519PublicKeyPEM parses one PEM "PUBLIC KEY" block holding an
// Ed25519 key, with nothing but whitespace around it.
func ParseEd25519PublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	block, rest := pem.Decode(bytes.TrimSpace(b))
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("parse public key: want one PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("parse public key: not an Ed25519 key")
	}
	return pub, nil
}
