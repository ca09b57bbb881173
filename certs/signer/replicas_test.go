package signer_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
)

// These tests stand in for control-plane replicas with several Signers on
// one directory in one process: the directory lock is held by an open
// file, so Signers exclude each other here as processes do.

// openAll opens n Signers on dir at once.
func openAll(t *testing.T, cfg signer.Config, n int) []*signer.Signer {
	t.Helper()
	out := make([]*signer.Signer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := signer.Open(cfg)
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			out[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// checkSame checks that every Signer has the same root, signs with the
// same key and publishes the same key set.
func checkSame(t *testing.T, ss []*signer.Signer) {
	t.Helper()
	want := ss[0]
	for i, s := range ss[1:] {
		if got := sign.KeyID(s.RootPublicKey()); got != sign.KeyID(want.RootPublicKey()) {
			t.Errorf("signer %d: root %s; want %s", i+1, got, sign.KeyID(want.RootPublicKey()))
		}
		if got := activeID(t, s); got != activeID(t, want) {
			t.Errorf("signer %d: active key %s; want %s", i+1, got, activeID(t, want))
		}
		if got := s.KeySetEnvelope().Payload; !bytes.Equal(got, want.KeySetEnvelope().Payload) {
			t.Errorf("signer %d: key set %s; want %s", i+1, got, want.KeySetEnvelope().Payload)
		}
	}
}

// keyFileCount counts the *.key files in dir: the root and the signing
// keys.
func keyFileCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, f := range listDir(t, dir) {
		if strings.HasSuffix(f, ".key") {
			n++
		}
	}
	return n
}

func TestReplicasOpenEmptyDir(t *testing.T) {
	clock := newClock()
	dir := filepath.Join(t.TempDir(), "signing")
	ss := openAll(t, testConfig(t, dir, clock), 8)
	checkSame(t, ss)
	if got := keyFileCount(t, dir); got != 2 {
		t.Errorf("key files: got %d; want 2 (one root, one signing key)", got)
	}
	// What one signs, an agent that enrolled with another accepts.
	v := agent(t, ss[3], clock.Now())
	for i, s := range ss {
		if _, _, err := v.Verify(s.Sign(deltaType, []byte("x")), deltaType, clock.Now()); err != nil {
			t.Errorf("signer %d: Verify: %v", i, err)
		}
	}
}

func TestReplicaTakesUpRotation(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	a := mustOpen(t, testConfig(t, dir, clock))
	b := mustOpen(t, testConfig(t, dir, clock))
	first := activeID(t, a)

	// A publishes the next key; B learns it at its next MaybeRotate.
	clock.Advance(keyTTL - grace)
	if changed, err := a.MaybeRotate(); err != nil || !changed {
		t.Fatalf("A: MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	if got := len(keySet(t, b).Keys); got != 1 {
		t.Fatalf("B before its MaybeRotate: got %d keys; want 1", got)
	}
	if changed, err := b.MaybeRotate(); err != nil || !changed {
		t.Fatalf("B: MaybeRotate: got %v, %v; want true, nil (A's new key set)", changed, err)
	}
	checkSame(t, []*signer.Signer{a, b})
	if changed, err := b.MaybeRotate(); err != nil || changed {
		t.Errorf("B: MaybeRotate again: got %v, %v; want false, nil", changed, err)
	}
	if changed, err := a.MaybeRotate(); err != nil || changed {
		t.Errorf("A: MaybeRotate again: got %v, %v; want false, nil", changed, err)
	}
	published := agent(t, a, clock.Now()) // an agent that fetched A's key set now

	// B activates the next key; A lags until its next MaybeRotate.
	clock.Advance(grace)
	if changed, err := b.MaybeRotate(); err != nil || !changed {
		t.Fatalf("B: MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	second := activeID(t, b)
	if second == first {
		t.Fatalf("B did not activate a new key")
	}
	if got := activeID(t, a); got != first {
		t.Fatalf("A before its MaybeRotate: signs with %s; want the old key %s", got, first)
	}
	// The lag is harmless: each replica's envelopes verify with the key
	// set of either, since the new key was published a grace ago and the
	// old one stays valid for a grace.
	clock.Advance(time.Minute)
	now := clock.Now()
	activated := agent(t, b, now)
	for _, tc := range []struct {
		name string
		v    *sign.Verifier
		env  sign.Envelope
	}{
		{"lagging A's envelope, B's key set", activated, a.Sign(deltaType, []byte("a"))},
		{"B's envelope, lagging A's key set", agent(t, a, now), b.Sign(deltaType, []byte("b"))},
		{"B's envelope, the key set from before activation", published, b.Sign(deltaType, []byte("b"))},
	} {
		if _, _, err := tc.v.Verify(tc.env, deltaType, now); err != nil {
			t.Errorf("%s: Verify: %v", tc.name, err)
		}
	}

	if changed, err := a.MaybeRotate(); err != nil || !changed {
		t.Fatalf("A: MaybeRotate: got %v, %v; want true, nil (B's activation)", changed, err)
	}
	checkSame(t, []*signer.Signer{a, b})

	// Rotate, the emergency path, is taken up the same way.
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	if changed, err := b.MaybeRotate(); err != nil || !changed {
		t.Fatalf("B: MaybeRotate after A's Rotate: got %v, %v; want true, nil", changed, err)
	}
	checkSame(t, []*signer.Signer{a, b})
	if got := keySet(t, b).Version; got != 4 {
		t.Errorf("key set version: got %d; want 4", got)
	}

	// And the directory is one a new replica opens.
	c := mustOpen(t, testConfig(t, dir, clock))
	checkSame(t, []*signer.Signer{a, b, c})
}

func TestReplicasRotateConcurrently(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	ss := openAll(t, testConfig(t, dir, clock), 4)

	// run calls MaybeRotate on every Signer from 8 goroutines, 10 times
	// each, and returns how many calls reported a change, by Signer.
	run := func() []int {
		var changes [4]atomic.Int32
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for n := range 10 {
					i := (g + n) % len(ss)
					changed, err := ss[i].MaybeRotate()
					if err != nil {
						t.Errorf("signer %d: MaybeRotate: %v", i, err)
						return
					}
					if changed {
						changes[i].Add(1)
					}
					// Readers see a whole state throughout.
					agent(t, ss[i], clock.Now())
				}
			})
		}
		wg.Wait()
		out := make([]int, len(ss))
		for i := range changes[:len(ss)] {
			out[i] = int(changes[i].Load())
		}
		return out
	}

	first := activeID(t, ss[0])
	clock.Advance(keyTTL - grace) // every replica is due to publish
	if got, want := run(), []int{1, 1, 1, 1}; !slices.Equal(got, want) {
		t.Errorf("publish: changes reported by each signer: got %v; want %v", got, want)
	}
	checkSame(t, ss)
	ks := keySet(t, ss[0])
	if len(ks.Keys) != 2 || ks.Version != 2 {
		t.Errorf("after publishing: got %d keys, version %d; want 2, 2 (exactly one new key)", len(ks.Keys), ks.Version)
	}
	if got := keyFileCount(t, dir); got != 3 {
		t.Errorf("key files: got %d; want 3 (root, active, next)", got)
	}

	clock.Advance(grace) // every replica is due to activate
	if got, want := run(), []int{1, 1, 1, 1}; !slices.Equal(got, want) {
		t.Errorf("activate: changes reported by each signer: got %v; want %v", got, want)
	}
	checkSame(t, ss)
	ks = keySet(t, ss[0])
	if len(ks.Keys) != 2 || ks.Version != 3 || activeID(t, ss[0]) == first {
		t.Errorf("after activating: got %d keys, version %d, active %s; want 2, 3 and a new key", len(ks.Keys), ks.Version, activeID(t, ss[0]))
	}

	// An envelope one replica signs verifies with any replica's key set.
	for i, s := range ss {
		v := agent(t, ss[(i+1)%len(ss)], clock.Now())
		if _, _, err := v.Verify(s.Sign(deltaType, []byte("x")), deltaType, clock.Now()); err != nil {
			t.Errorf("signer %d's envelope: Verify: %v", i, err)
		}
	}
}

// TestReplicaRefusesNewRoot: a directory replaced under a running Signer,
// with another root, is not taken up: agents hold the old root.
func TestReplicaRefusesNewRoot(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testConfig(t, dir, clock))
	before := snap(t, s)

	other := t.TempDir()
	mustOpen(t, testConfig(t, other, clock))
	for _, f := range listDir(t, dir) {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range listDir(t, other) {
		data, err := os.ReadFile(filepath.Join(other, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := s.MaybeRotate(); err == nil || !strings.Contains(err.Error(), "root key") {
		t.Errorf("MaybeRotate: got %v; want an error about the root key", err)
	}
	if got := snap(t, s); got != before {
		t.Errorf("a refused reload changed the signer")
	}
	if err := s.Rotate(); err == nil {
		t.Errorf("Rotate: got nil error; want error")
	}
	if _, err := os.Stat(filepath.Join(dir, certs.LockFileName)); err != nil {
		t.Errorf("lock file: %v", err)
	}
}
