package sign_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs/sign"
)

// t0 is the tests' "now"; keys are made valid around it.
var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	day       = 24 * time.Hour
	deltaType = "application/vnd.cairn.delta+json"
)

// testKey is an Ed25519 key pair with its id.
type testKey struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
	id   string
}

func newKey(tb testing.TB) testKey {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return testKey{pub: pub, priv: priv, id: sign.KeyID(pub)}
}

// seedKey is a deterministic key, for fuzz targets whose seeds must not
// change between runs.
func seedKey(b byte) testKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	return testKey{pub: pub, priv: priv, id: sign.KeyID(pub)}
}

// vkey is k as a verification key valid from notBefore until notAfter.
func (k testKey) vkey(notBefore, notAfter time.Time) sign.VerificationKey {
	return sign.VerificationKey{KeyID: k.id, PublicKey: k.pub, NotBefore: notBefore, NotAfter: notAfter}
}

// open is k valid from a day before t0, open-ended.
func (k testKey) open() sign.VerificationKey {
	return k.vkey(t0.Add(-day), time.Time{})
}

// signKeySet encodes ks and signs it with root, as the control plane does.
func signKeySet(tb testing.TB, root ed25519.PrivateKey, ks sign.KeySet) sign.Envelope {
	tb.Helper()
	data, err := json.Marshal(ks)
	if err != nil {
		tb.Fatal(err)
	}
	return sign.SignEnvelope(sign.KeySetPayloadType, data, root)
}

// newVerifier returns a Verifier for root holding key set version 1 with
// keys.
func newVerifier(tb testing.TB, root testKey, keys ...sign.VerificationKey) *sign.Verifier {
	tb.Helper()
	v := sign.NewVerifier(root.pub)
	ks := sign.KeySet{Version: 1, IssuedAt: t0.Add(-day), Keys: keys}
	if err := v.UpdateKeySet(signKeySet(tb, root.priv, ks), t0); err != nil {
		tb.Fatalf("UpdateKeySet: %v", err)
	}
	return v
}

// checkErr fails unless err wraps want; want nil means no error.
func checkErr(tb testing.TB, err, want error) {
	tb.Helper()
	switch {
	case want == nil && err != nil:
		tb.Errorf("got %v; want nil error", err)
	case want != nil && !errors.Is(err, want):
		tb.Errorf("got %v; want %v", err, want)
	}
}
