package sign_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs/sign"
)

func TestVerifyRoundTrip(t *testing.T) {
	root, k := newKey(t), newKey(t)
	v := newVerifier(t, root, k.open())
	for _, payload := range [][]byte{[]byte(`{"op":"add"}`), {}, nil, bytes.Repeat([]byte{0xff}, 1<<16)} {
		env := sign.SignEnvelope(deltaType, payload, k.priv)
		// Through the wire format too.
		data, err := sign.MarshalEnvelope(env)
		if err != nil {
			t.Fatalf("MarshalEnvelope: %v", err)
		}
		env, err = sign.UnmarshalEnvelope(data)
		if err != nil {
			t.Fatalf("UnmarshalEnvelope: %v", err)
		}
		got, id, err := v.Verify(env, deltaType, t0)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if !bytes.Equal(got, payload) || id != k.id {
			t.Errorf("got %d bytes, key %s; want %d bytes, key %s", len(got), id, len(payload), k.id)
		}
	}
}

func TestVerifyTampered(t *testing.T) {
	root, k, other, stranger := newKey(t), newKey(t), newKey(t), newKey(t)
	v := newVerifier(t, root, k.open(), other.open())
	payload := []byte(`{"op":"set","v":1}`)
	good := sign.SignEnvelope(deltaType, payload, k.priv)
	if _, _, err := v.Verify(good, deltaType, t0); err != nil {
		t.Fatalf("untampered: %v", err)
	}

	type tamper struct {
		name string
		edit func(*sign.Envelope)
		want error
	}
	var cases []tamper
	for i := range payload {
		cases = append(cases, tamper{fmt.Sprintf("payload byte %d", i), func(e *sign.Envelope) { e.Payload[i] ^= 0xff }, sign.ErrBadSignature})
		for bit := range 8 {
			cases = append(cases, tamper{fmt.Sprintf("payload byte %d bit %d", i, bit), func(e *sign.Envelope) { e.Payload[i] ^= 1 << bit }, sign.ErrBadSignature})
		}
	}
	for i := range 64 {
		cases = append(cases, tamper{fmt.Sprintf("sig byte %d", i), func(e *sign.Envelope) { e.Signatures[0].Sig[i] ^= 0xff }, sign.ErrBadSignature})
		for bit := range 8 {
			cases = append(cases, tamper{fmt.Sprintf("sig byte %d bit %d", i, bit), func(e *sign.Envelope) { e.Signatures[0].Sig[i] ^= 1 << bit }, sign.ErrBadSignature})
		}
	}
	otherSig := sign.SignEnvelope(deltaType, payload, other.priv).Signatures[0]
	strangerSig := sign.SignEnvelope(deltaType, payload, stranger.priv).Signatures[0]
	cases = append(cases, []tamper{
		{"payload truncated", func(e *sign.Envelope) { e.Payload = e.Payload[:len(e.Payload)-1] }, sign.ErrBadSignature},
		{"payload extended", func(e *sign.Envelope) { e.Payload = append(e.Payload, ' ') }, sign.ErrBadSignature},
		{"payload emptied", func(e *sign.Envelope) { e.Payload = nil }, sign.ErrBadSignature},
		{"payload type changed", func(e *sign.Envelope) { e.PayloadType = "application/vnd.cairn.other+json" }, sign.ErrWrongType},
		{"sig truncated", func(e *sign.Envelope) { e.Signatures[0].Sig = e.Signatures[0].Sig[:63] }, sign.ErrBadSignature},
		{"sig empty", func(e *sign.Envelope) { e.Signatures[0].Sig = nil }, sign.ErrBadSignature},
		{"key id swapped to another known key", func(e *sign.Envelope) { e.Signatures[0].KeyID = other.id }, sign.ErrBadSignature},
		{"key id swapped to an unknown key", func(e *sign.Envelope) { e.Signatures[0].KeyID = stranger.id }, sign.ErrUnknownKey},
		{"key id upper case", func(e *sign.Envelope) { e.Signatures[0].KeyID = string(bytes.ToUpper([]byte(k.id))) }, sign.ErrUnknownKey},
		{"key id of the root", func(e *sign.Envelope) { e.Signatures[0].KeyID = root.id }, sign.ErrUnknownKey},
		{"no signatures", func(e *sign.Envelope) { e.Signatures = nil }, sign.ErrUnknownKey},
		{"unknown-key signature alone", func(e *sign.Envelope) { e.Signatures = []sign.Signature{strangerSig} }, sign.ErrUnknownKey},
		{"unknown-key signature claiming a known id", func(e *sign.Envelope) {
			e.Signatures = []sign.Signature{{KeyID: k.id, Sig: strangerSig.Sig}}
		}, sign.ErrBadSignature},
		{"signature by the root", func(e *sign.Envelope) {
			e.Signatures = sign.SignEnvelope(deltaType, payload, root.priv).Signatures
		}, sign.ErrUnknownKey},
		{"signature over another payload", func(e *sign.Envelope) {
			e.Signatures = sign.SignEnvelope(deltaType, []byte("other"), k.priv).Signatures
		}, sign.ErrBadSignature},
		{"signature over another type", func(e *sign.Envelope) {
			e.Signatures = sign.SignEnvelope("application/vnd.cairn.other+json", payload, k.priv).Signatures
		}, sign.ErrBadSignature},
		{"signature over the raw payload, not PAE", func(e *sign.Envelope) {
			e.Signatures[0].Sig = ed25519.Sign(k.priv, payload)
		}, sign.ErrBadSignature},
		{"nine signatures", func(e *sign.Envelope) {
			for range 8 {
				e.Signatures = append(e.Signatures, e.Signatures[0])
			}
		}, sign.ErrMalformed},
		// Accepted: an unknown or broken signature beside a good one.
		{"unknown-key signature beside a valid one", func(e *sign.Envelope) {
			e.Signatures = []sign.Signature{strangerSig, e.Signatures[0]}
		}, nil},
		{"bad signature beside a valid one", func(e *sign.Envelope) {
			e.Signatures = []sign.Signature{{KeyID: other.id, Sig: make([]byte, 64)}, e.Signatures[0]}
		}, nil},
		{"two valid signatures", func(e *sign.Envelope) { e.Signatures = append(e.Signatures, otherSig) }, nil},
		{"eight signatures", func(e *sign.Envelope) {
			for range 7 {
				e.Signatures = append([]sign.Signature{strangerSig}, e.Signatures...)
			}
		}, nil},
	}...)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := cloneEnvelope(good)
			tc.edit(&env)
			got, id, err := v.Verify(env, deltaType, t0)
			checkErr(t, err, tc.want)
			if tc.want != nil && (got != nil || id != "") {
				t.Errorf("got payload %q, key %q with the error; want none", got, id)
			}
			if tc.want == nil && (!bytes.Equal(got, payload) || (id != k.id && id != other.id)) {
				t.Errorf("got payload %q, key %s; want %q from %s", got, id, payload, k.id)
			}
		})
	}
	// The unknown signature came first but the known one answers.
	env := sign.Envelope{PayloadType: deltaType, Payload: payload, Signatures: []sign.Signature{strangerSig, good.Signatures[0]}}
	if _, id, err := v.Verify(env, deltaType, t0); err != nil || id != k.id {
		t.Errorf("got key %q, %v; want %s, nil", id, err, k.id)
	}
}

func TestVerifyKeyValidity(t *testing.T) {
	root, k := newKey(t), newKey(t)
	notBefore, notAfter := t0, t0.Add(7*day)
	bounded := newVerifier(t, root, k.vkey(notBefore, notAfter))
	open := newVerifier(t, root, k.vkey(notBefore, time.Time{}))
	env := sign.SignEnvelope(deltaType, []byte("x"), k.priv)
	for _, tc := range []struct {
		name string
		v    *sign.Verifier
		now  time.Time
		want error
	}{
		{"at NotBefore", bounded, notBefore, nil},
		{"inside", bounded, notBefore.Add(day), nil},
		{"just before NotAfter", bounded, notAfter.Add(-time.Nanosecond), nil},
		{"at NotAfter", bounded, notAfter, sign.ErrExpiredKey},
		{"after NotAfter", bounded, notAfter.Add(day), sign.ErrExpiredKey},
		{"just before NotBefore", bounded, notBefore.Add(-time.Nanosecond), sign.ErrExpiredKey},
		{"long before NotBefore", bounded, notBefore.Add(-365 * day), sign.ErrExpiredKey},
		{"open-ended, far future", open, notBefore.Add(100 * 365 * day), nil},
		{"open-ended, before NotBefore", open, notBefore.Add(-time.Second), sign.ErrExpiredKey},
		{"other time zone, inside", bounded, notAfter.Add(-time.Minute).In(time.FixedZone("x", -8*3600)), nil},
		{"other time zone, at NotAfter", bounded, notAfter.In(time.FixedZone("x", 5*3600)), sign.ErrExpiredKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.v.Verify(env, deltaType, tc.now)
			checkErr(t, err, tc.want)
		})
	}
	// A forged signature by an expired key is a bad signature, not an
	// expired key: "expired" says the envelope is genuine.
	forged := cloneEnvelope(env)
	forged.Signatures[0].Sig[0] ^= 1
	_, _, err := bounded.Verify(forged, deltaType, notAfter.Add(day))
	checkErr(t, err, sign.ErrBadSignature)
}

func TestVerifyType(t *testing.T) {
	root, k := newKey(t), newKey(t)
	v := newVerifier(t, root, k.open())
	for _, tc := range []struct {
		name, envType, wantType string
		want                    error
	}{
		{"match", deltaType, deltaType, nil},
		{"other type", deltaType, "application/vnd.cairn.other+json", sign.ErrWrongType},
		{"case differs", deltaType, "application/vnd.cairn.DELTA+json", sign.ErrWrongType},
		{"want empty", deltaType, "", sign.ErrWrongType},
		{"envelope empty", "", deltaType, sign.ErrWrongType},
		// A signing key must not be able to pass off a key set.
		{"key set type", sign.KeySetPayloadType, sign.KeySetPayloadType, sign.ErrWrongType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := sign.SignEnvelope(tc.envType, []byte("{}"), k.priv)
			_, _, err := v.Verify(env, tc.wantType, t0)
			checkErr(t, err, tc.want)
		})
	}
}

func TestVerifyBeforeKeySet(t *testing.T) {
	root, k := newKey(t), newKey(t)
	v := sign.NewVerifier(root.pub)
	if got := v.KeySet(); got.Version != 0 || len(got.Keys) != 0 || !got.IssuedAt.IsZero() {
		t.Errorf("KeySet: got %+v; want zero", got)
	}
	_, _, err := v.Verify(sign.SignEnvelope(deltaType, []byte("x"), k.priv), deltaType, t0)
	checkErr(t, err, sign.ErrUnknownKey)
}

func TestUpdateKeySet(t *testing.T) {
	root, k1, k2 := newKey(t), newKey(t), newKey(t)
	v := sign.NewVerifier(root.pub)
	ks1 := sign.KeySet{Version: 1, IssuedAt: t0, Keys: []sign.VerificationKey{k1.open()}}
	if err := v.UpdateKeySet(signKeySet(t, root.priv, ks1), t0); err != nil {
		t.Fatalf("version 1: %v", err)
	}
	checkKeySet(t, v.KeySet(), ks1)
	env1 := sign.SignEnvelope(deltaType, []byte("one"), k1.priv)
	env2 := sign.SignEnvelope(deltaType, []byte("two"), k2.priv)
	if _, _, err := v.Verify(env2, deltaType, t0); err == nil {
		t.Errorf("k2 before it is in the set: got nil error; want error")
	}

	// Rotation: k1 in grace for a day, k2 active.
	ks2 := sign.KeySet{Version: 2, IssuedAt: t0.Add(time.Hour), Keys: []sign.VerificationKey{k2.open(), k1.vkey(t0.Add(-day), t0.Add(day))}}
	if err := v.UpdateKeySet(signKeySet(t, root.priv, ks2), t0.Add(time.Hour)); err != nil {
		t.Fatalf("version 2: %v", err)
	}
	checkKeySet(t, v.KeySet(), ks2)
	for _, tc := range []struct {
		name string
		env  sign.Envelope
		now  time.Time
		want error
	}{
		{"new key", env2, t0.Add(time.Hour), nil},
		{"old key in grace", env1, t0.Add(day - time.Second), nil},
		{"old key after grace", env1, t0.Add(day), sign.ErrExpiredKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := v.Verify(tc.env, deltaType, tc.now)
			checkErr(t, err, tc.want)
		})
	}

	// Versions may skip (an agent may miss some), never go back.
	ks7 := sign.KeySet{Version: 7, IssuedAt: t0.Add(2 * time.Hour), Keys: []sign.VerificationKey{k2.open()}}
	if err := v.UpdateKeySet(signKeySet(t, root.priv, ks7), t0); err != nil {
		t.Fatalf("version 7: %v", err)
	}
	for _, tc := range []struct {
		name string
		ks   sign.KeySet
	}{
		{"replayed version 1", ks1},
		{"replayed version 2", ks2},
		{"current version again", ks7},
		{"same version, other keys", sign.KeySet{Version: 7, Keys: []sign.VerificationKey{k1.open()}}},
		{"version 0", sign.KeySet{Version: 0, Keys: []sign.VerificationKey{k1.open()}}},
		{"negative version", sign.KeySet{Version: -8, Keys: []sign.VerificationKey{k1.open()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.UpdateKeySet(signKeySet(t, root.priv, tc.ks), t0)
			checkErr(t, err, sign.ErrStaleKeySet)
			checkKeySet(t, v.KeySet(), ks7)
		})
	}

	// An empty set, signed by the root, revokes every signing key.
	ks8 := sign.KeySet{Version: 8, IssuedAt: t0}
	if err := v.UpdateKeySet(signKeySet(t, root.priv, ks8), t0); err != nil {
		t.Fatalf("empty version 8: %v", err)
	}
	if _, _, err := v.Verify(env2, deltaType, t0); err == nil {
		t.Errorf("after revocation: got nil error; want error")
	}
}

func TestUpdateKeySetRejects(t *testing.T) {
	root, k, notRoot := newKey(t), newKey(t), newKey(t)
	current := sign.KeySet{Version: 5, IssuedAt: t0, Keys: []sign.VerificationKey{k.open()}}
	next := sign.KeySet{Version: 6, IssuedAt: t0, Keys: []sign.VerificationKey{k.open()}}
	keyset := func(edit func(*sign.KeySet)) []byte {
		ks := next
		ks.Keys = slices.Clone(next.Keys)
		edit(&ks)
		data, err := json.Marshal(ks)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	byRoot := func(payload []byte) sign.Envelope {
		return sign.SignEnvelope(sign.KeySetPayloadType, payload, root.priv)
	}
	manyKeys := func(n int) func(*sign.KeySet) {
		return func(ks *sign.KeySet) {
			ks.Keys = nil
			for range n {
				ks.Keys = append(ks.Keys, newKey(t).open())
			}
		}
	}
	good := keyset(func(*sign.KeySet) {})
	for _, tc := range []struct {
		name string
		root []byte // the Verifier's root; nil means root.pub
		env  sign.Envelope
		want error
	}{
		{"signed by a non-root key", nil, sign.SignEnvelope(sign.KeySetPayloadType, good, notRoot.priv), sign.ErrUnknownKey},
		{"signed by a signing key in the set", nil, sign.SignEnvelope(sign.KeySetPayloadType, good, k.priv), sign.ErrUnknownKey},
		{"non-root signature with the root's key id", nil, func() sign.Envelope {
			e := sign.SignEnvelope(sign.KeySetPayloadType, good, notRoot.priv)
			e.Signatures[0].KeyID = root.id
			return e
		}(), sign.ErrBadSignature},
		{"tampered payload", nil, func() sign.Envelope {
			e := byRoot(good)
			e.Payload = bytes.Replace(e.Payload, []byte(`"version":6`), []byte(`"version":9`), 1)
			return e
		}(), sign.ErrBadSignature},
		{"no signatures", nil, sign.Envelope{PayloadType: sign.KeySetPayloadType, Payload: good}, sign.ErrUnknownKey},
		{"nine signatures", nil, func() sign.Envelope {
			e := byRoot(good)
			for range 8 {
				e.Signatures = append(e.Signatures, e.Signatures[0])
			}
			return e
		}(), sign.ErrMalformed},
		{"wrong payload type", nil, sign.SignEnvelope(deltaType, good, root.priv), sign.ErrWrongType},
		{"payload type in other case", nil, sign.SignEnvelope("application/vnd.cairn.KEYSET+json", good, root.priv), sign.ErrWrongType},
		{"key id mismatch", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys[0].KeyID = newKey(t).id })), sign.ErrMalformed},
		{"key id empty", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys[0].KeyID = "" })), sign.ErrMalformed},
		{"key id upper case", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys[0].KeyID = string(bytes.ToUpper([]byte(k.id))) })), sign.ErrMalformed},
		{"key repeated", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys = append(ks.Keys, ks.Keys[0]) })), sign.ErrMalformed},
		{"root listed as a signing key", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys = append(ks.Keys, root.open()) })), sign.ErrMalformed},
		{"short public key", nil, byRoot(keyset(func(ks *sign.KeySet) {
			ks.Keys[0].PublicKey = ks.Keys[0].PublicKey[:31]
			ks.Keys[0].KeyID = sign.KeyID(ks.Keys[0].PublicKey)
		})), sign.ErrMalformed},
		{"no public key", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys[0].PublicKey = nil; ks.Keys[0].KeyID = sign.KeyID(nil) })), sign.ErrMalformed},
		{"NotAfter before NotBefore", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys[0].NotAfter = ks.Keys[0].NotBefore.Add(-time.Second) })), sign.ErrMalformed},
		{"NotAfter equal to NotBefore", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys[0].NotAfter = ks.Keys[0].NotBefore })), sign.ErrMalformed},
		{"33 keys", nil, byRoot(keyset(manyKeys(33))), sign.ErrMalformed},
		{"every key expired", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Keys[0].NotAfter = t0 })), sign.ErrExpiredKey},
		{"payload not JSON", nil, byRoot([]byte("not json")), sign.ErrMalformed},
		{"payload empty", nil, byRoot(nil), sign.ErrMalformed},
		{"payload null", nil, byRoot([]byte("null")), sign.ErrStaleKeySet},
		{"payload an array", nil, byRoot([]byte("[]")), sign.ErrMalformed},
		{"unknown member", nil, byRoot([]byte(`{"version":6,"keys":[],"extra":true}`)), sign.ErrMalformed},
		{"trailing data", nil, byRoot(append(bytes.Clone(good), "{}"...)), sign.ErrMalformed},
		{"version as string", nil, byRoot([]byte(`{"version":"6","keys":[]}`)), sign.ErrMalformed},
		{"stale", nil, byRoot(keyset(func(ks *sign.KeySet) { ks.Version = 4 })), sign.ErrStaleKeySet},
		{"verifier root too short", root.pub[:31], byRoot(good), sign.ErrMalformed},
		{"verifier root empty", []byte{}, byRoot(good), sign.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.root
			if r == nil {
				r = root.pub
			}
			v := sign.NewVerifier(r)
			if tc.root == nil {
				if err := v.UpdateKeySet(signKeySet(t, root.priv, current), t0); err != nil {
					t.Fatalf("UpdateKeySet(current): %v", err)
				}
			}
			before := v.KeySet()
			err := v.UpdateKeySet(tc.env, t0)
			checkErr(t, err, tc.want)
			checkKeySet(t, v.KeySet(), before)
		})
	}

	// The good set, a full set and a multi-signature envelope with the
	// root's signature second are accepted.
	for _, tc := range []struct {
		name string
		env  sign.Envelope
	}{
		{"good", byRoot(good)},
		{"32 keys", byRoot(keyset(manyKeys(32)))},
		{"some keys expired", byRoot(keyset(func(ks *sign.KeySet) {
			ks.Keys = append(ks.Keys, newKey(t).vkey(t0.Add(-2*day), t0.Add(-day)))
		}))},
		{"root signature second", func() sign.Envelope {
			e := sign.SignEnvelope(sign.KeySetPayloadType, good, notRoot.priv)
			e.Signatures = append(e.Signatures, byRoot(good).Signatures...)
			return e
		}()},
		{"bad root-named signature, then a good one", func() sign.Envelope {
			e := byRoot(good)
			e.Signatures = append([]sign.Signature{{KeyID: root.id, Sig: make([]byte, 64)}}, e.Signatures...)
			return e
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := sign.NewVerifier(root.pub)
			if err := v.UpdateKeySet(signKeySet(t, root.priv, current), t0); err != nil {
				t.Fatal(err)
			}
			if err := v.UpdateKeySet(tc.env, t0); err != nil {
				t.Errorf("got %v; want nil error", err)
			}
			if got := v.KeySet().Version; got != 6 {
				t.Errorf("version: got %d; want 6", got)
			}
		})
	}
}

func TestKeySetIsACopy(t *testing.T) {
	root, k := newKey(t), newKey(t)
	v := newVerifier(t, root, k.open())
	ks := v.KeySet()
	ks.Keys[0].PublicKey[0] ^= 0xff
	ks.Keys[0].NotAfter = t0
	ks.Keys = nil
	env := sign.SignEnvelope(deltaType, []byte("x"), k.priv)
	if _, _, err := v.Verify(env, deltaType, t0.Add(day)); err != nil {
		t.Errorf("after editing the returned key set: %v", err)
	}
	// Nor does the Verifier keep the caller's root.
	rootPub := bytes.Clone(root.pub)
	v2 := sign.NewVerifier(rootPub)
	rootPub[0] ^= 0xff
	ks1 := sign.KeySet{Version: 1, Keys: []sign.VerificationKey{k.open()}}
	if err := v2.UpdateKeySet(signKeySet(t, root.priv, ks1), t0); err != nil {
		t.Errorf("after editing the root passed to NewVerifier: %v", err)
	}
}

func TestVerifierConcurrent(t *testing.T) {
	root, stable := newKey(t), newKey(t)
	rotating := make([]testKey, 20)
	for i := range rotating {
		rotating[i] = newKey(t)
	}
	// Version i+1 holds the stable key and rotating key i.
	keySetFor := func(i int) sign.Envelope {
		ks := sign.KeySet{Version: int64(i + 1), IssuedAt: t0, Keys: []sign.VerificationKey{stable.open(), rotating[i].open()}}
		return signKeySet(t, root.priv, ks)
	}
	stableEnv := sign.SignEnvelope(deltaType, []byte("stable"), stable.priv)
	rotatingEnvs := make([]sign.Envelope, len(rotating))
	for i, k := range rotating {
		rotatingEnvs[i] = sign.SignEnvelope(deltaType, []byte("rotating"), k.priv)
	}
	v := sign.NewVerifier(root.pub)
	if err := v.UpdateKeySet(keySetFor(0), t0); err != nil {
		t.Fatal(err)
	}

	var readers sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		readers.Go(func() {
			var last int64
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, id, err := v.Verify(stableEnv, deltaType, t0); err != nil || id != stable.id {
					t.Errorf("reader %d: stable key: got %q, %v; want %s, nil", r, id, err, stable.id)
					return
				}
				// Whether a rotating key is current depends on the race;
				// the answer must be one or the other.
				i := (n + r) % len(rotating)
				if _, id, err := v.Verify(rotatingEnvs[i], deltaType, t0); err != nil && !errors.Is(err, sign.ErrUnknownKey) || err == nil && id != rotating[i].id {
					t.Errorf("reader %d: rotating key %d: got %q, %v; want %s or ErrUnknownKey", r, i, id, err, rotating[i].id)
					return
				}
				ks := v.KeySet()
				if ks.Version < last || len(ks.Keys) != 2 {
					t.Errorf("reader %d: got version %d with %d keys after version %d; want a later version with 2 keys", r, ks.Version, len(ks.Keys), last)
					return
				}
				last = ks.Version
			}
		})
	}
	// Several writers race to install each version; exactly one wins and
	// the others get ErrStaleKeySet.
	for i := 1; i < len(rotating); i++ {
		env := keySetFor(i)
		var writers sync.WaitGroup
		wins := make(chan struct{}, 4)
		for range 4 {
			writers.Go(func() {
				err := v.UpdateKeySet(env, t0)
				switch {
				case err == nil:
					wins <- struct{}{}
				case !errors.Is(err, sign.ErrStaleKeySet):
					t.Errorf("UpdateKeySet(version %d): %v", i+1, err)
				}
			})
		}
		writers.Wait()
		if n := len(wins); n != 1 {
			t.Errorf("version %d: got %d successful updates; want 1", i+1, n)
		}
	}
	close(stop)
	readers.Wait()
	if got, want := v.KeySet().Version, int64(len(rotating)); got != want {
		t.Errorf("final version: got %d; want %d", got, want)
	}
}

func checkKeySet(tb testing.TB, got, want sign.KeySet) {
	tb.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		tb.Errorf("key set: got %s; want %s", g, w)
	}
}

func cloneEnvelope(e sign.Envelope) sign.Envelope {
	e.Payload = bytes.Clone(e.Payload)
	e.Signatures = slices.Clone(e.Signatures)
	for i := range e.Signatures {
		e.Signatures[i].Sig = bytes.Clone(e.Signatures[i].Sig)
	}
	return e
}
