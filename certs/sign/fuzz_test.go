package sign_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs/sign"
)

// FuzzUnmarshalEnvelope checks that any input either fails with
// ErrMalformed or gives an envelope within the limits that survives a round
// trip through MarshalEnvelope unchanged.
func FuzzUnmarshalEnvelope(f *testing.F) {
	k := seedKey(1)
	for _, env := range []sign.Envelope{
		sign.SignEnvelope(deltaType, []byte(`{"op":"add"}`), k.priv),
		sign.SignEnvelope("t", nil, k.priv),
		sign.SignEnvelope(sign.KeySetPayloadType, []byte(`{"version":1,"keys":[]}`), k.priv),
		{PayloadType: "t<&>\u2028é", Payload: []byte{0, 1, 2}, Signatures: []sign.Signature{{KeyID: "", Sig: make([]byte, 64)}, {KeyID: "x", Sig: make([]byte, 64)}}},
	} {
		data, err := sign.MarshalEnvelope(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		``, `{}`, `null`, `[]`,
		`{"payloadType":"t","payload":"","signatures":[]}`,
		`{"payloadType":"t","payload":"aGk=","signatures":[{"keyid":"k","sig":"AAAA"}]}`,
		`{"payloadType":"t","PayloadType":"u","payload":"","signatures":[{"keyid":"k","sig":""}]}`,
		`{"payloadType":"\u00e9\ud800","payload":"aG\nk=","signatures":[{"keyid":"k","sig":null}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := sign.UnmarshalEnvelope(data)
		if err != nil {
			if !errors.Is(err, sign.ErrMalformed) {
				t.Fatalf("got %v; want an ErrMalformed error", err)
			}
			return
		}
		if env.PayloadType == "" || len(env.Signatures) == 0 || len(env.Signatures) > sign.MaxSignatures {
			t.Fatalf("accepted type %q with %d signatures", env.PayloadType, len(env.Signatures))
		}
		for i, s := range env.Signatures {
			if len(s.Sig) != ed25519.SignatureSize {
				t.Fatalf("accepted signature %d of %d bytes", i, len(s.Sig))
			}
		}
		data2, err := sign.MarshalEnvelope(env)
		if err != nil {
			t.Fatalf("MarshalEnvelope of an accepted envelope: %v", err)
		}
		env2, err := sign.UnmarshalEnvelope(data2)
		if err != nil {
			t.Fatalf("UnmarshalEnvelope(MarshalEnvelope(env)): %v\n%s", err, data2)
		}
		if env2.PayloadType != env.PayloadType || !bytes.Equal(env2.Payload, env.Payload) || len(env2.Signatures) != len(env.Signatures) {
			t.Fatalf("round trip: got %+v; want %+v", env2, env)
		}
		for i := range env.Signatures {
			if env2.Signatures[i].KeyID != env.Signatures[i].KeyID || !bytes.Equal(env2.Signatures[i].Sig, env.Signatures[i].Sig) {
				t.Fatalf("round trip: signature %d: got %+v; want %+v", i, env2.Signatures[i], env.Signatures[i])
			}
		}
		// The encoding is a fixed point after one round.
		if data3, err := sign.MarshalEnvelope(env2); err != nil || !bytes.Equal(data3, data2) {
			t.Fatalf("second MarshalEnvelope: got %s, %v; want %s", data3, err, data2)
		}
	})
}

// FuzzVerify checks that nothing verifies unless a known key that is valid
// now signed exactly that payload type and payload. Ed25519 cannot be
// forged by a fuzzer, so any envelope Verify (or UpdateKeySet) accepts must
// be one of the messages the seeds signed.
func FuzzVerify(f *testing.F) {
	root, active, expired, future, stranger := seedKey(1), seedKey(2), seedKey(3), seedKey(4), seedKey(5)
	ks := sign.KeySet{Version: 1, IssuedAt: t0, Keys: []sign.VerificationKey{
		active.vkey(t0.Add(-day), time.Time{}),
		expired.vkey(t0.Add(-2*day), t0.Add(-day)),
		future.vkey(t0.Add(day), time.Time{}),
	}}
	keySetEnv := signKeySet(f, root.priv, ks)
	v := sign.NewVerifier(root.pub)
	if err := v.UpdateKeySet(keySetEnv, t0); err != nil {
		f.Fatal(err)
	}

	// signed[key id] holds the PAE of every message the seeds sign with
	// that key.
	signed := map[string]map[string]bool{}
	record := func(env sign.Envelope) {
		id := env.Signatures[0].KeyID
		if signed[id] == nil {
			signed[id] = map[string]bool{}
		}
		signed[id][string(sign.PAE(env.PayloadType, env.Payload))] = true
	}
	add := func(env sign.Envelope, extra sign.Signature) {
		s := env.Signatures[0]
		f.Add(env.PayloadType, env.Payload, s.KeyID, s.Sig, extra.KeyID, extra.Sig)
	}
	record(keySetEnv)
	add(keySetEnv, sign.Signature{})
	for _, m := range []struct {
		typ     string
		payload []byte
	}{
		{deltaType, []byte(`{"op":"add","route":"a"}`)},
		{deltaType, nil},
		{"t", []byte{0}},
		{sign.KeySetPayloadType, keySetEnv.Payload},
	} {
		for _, k := range []testKey{active, expired, future, stranger, root} {
			env := sign.SignEnvelope(m.typ, m.payload, k.priv)
			record(env)
			add(env, sign.Signature{})
			add(env, sign.SignEnvelope(m.typ, m.payload, stranger.priv).Signatures[0])
		}
	}

	f.Fuzz(func(t *testing.T, payloadType string, payload []byte, keyID1 string, sig1 []byte, keyID2 string, sig2 []byte) {
		env := sign.Envelope{PayloadType: payloadType, Payload: payload, Signatures: []sign.Signature{{KeyID: keyID1, Sig: sig1}}}
		if keyID2 != "" || len(sig2) > 0 {
			env.Signatures = append(env.Signatures, sign.Signature{KeyID: keyID2, Sig: sig2})
		}
		msg := string(sign.PAE(payloadType, payload))

		for _, now := range []time.Time{t0, t0.Add(-36 * time.Hour), t0.Add(2 * day)} {
			got, id, err := v.Verify(env, payloadType, now)
			if err != nil {
				if got != nil || id != "" {
					t.Fatalf("Verify returned payload %q, key %q with error %v", got, id, err)
				}
				continue
			}
			var key *sign.VerificationKey
			for _, k := range ks.Keys {
				if k.KeyID == id {
					key = &k
				}
			}
			if key == nil || !key.ValidAt(now) {
				t.Fatalf("Verify at %v: accepted key %q, which is not in the key set or not valid then", now, id)
			}
			if !signed[id][msg] {
				t.Fatalf("Verify accepted a message key %s did not sign: type %q payload %q", id, payloadType, payload)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("Verify: got payload %q; want %q", got, payload)
			}
		}

		// A fresh verifier with the same root must accept only the key
		// set the root signed.
		fresh := sign.NewVerifier(root.pub)
		if err := fresh.UpdateKeySet(env, t0); err == nil {
			if !signed[root.id][msg] || payloadType != sign.KeySetPayloadType {
				t.Fatalf("UpdateKeySet accepted a message the root did not sign: type %q payload %q", payloadType, payload)
			}
		}
		if err := v.UpdateKeySet(env, t0); err == nil {
			t.Fatalf("UpdateKeySet accepted a key set that is not newer than version 1")
		}
	})
}
