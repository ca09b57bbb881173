package signer_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
)

func TestRotate(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testConfig(t, dir, clock))
	v := agent(t, s, clock.Now())
	oldKS := keySet(t, s)
	oldID := activeID(t, s)
	oldEnv := s.Sign(deltaType, []byte("before"))

	clock.Advance(time.Hour)
	rotatedAt := clock.Now()
	if err := s.Rotate(); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	newID := activeID(t, s)
	if newID == oldID {
		t.Fatalf("after Rotate: still signing with %s", oldID)
	}
	newEnv := s.Sign(deltaType, []byte("after"))
	if got := newEnv.Signatures[0].KeyID; got != newID {
		t.Errorf("new envelope: signed by %s; want %s", got, newID)
	}

	ks := keySet(t, s)
	if ks.Version != oldKS.Version+1 {
		t.Errorf("version: got %d; want %d", ks.Version, oldKS.Version+1)
	}
	if got, want := keyIDs(ks), []string{newID, oldID}; !slices.Equal(got, want) {
		t.Errorf("keys: got %v; want %v", got, want)
	}
	if got, want := ks.Keys[1].NotAfter, rotatedAt.Add(grace); !got.Equal(want) {
		t.Errorf("old key NotAfter: got %v; want %v", got, want)
	}
	if !ks.Keys[0].NotAfter.IsZero() || !ks.Keys[0].NotBefore.Equal(rotatedAt) {
		t.Errorf("new key: got window [%v, %v); want [%v, open)", ks.Keys[0].NotBefore, ks.Keys[0].NotAfter, rotatedAt)
	}

	// An agent holding the old key set does not know the new key yet,
	// and accepts the new key set.
	if _, _, err := v.Verify(newEnv, deltaType, rotatedAt); !errors.Is(err, sign.ErrUnknownKey) {
		t.Errorf("new envelope, old key set: got %v; want ErrUnknownKey", err)
	}
	if err := v.UpdateKeySet(s.KeySetEnvelope(), rotatedAt); err != nil {
		t.Fatalf("UpdateKeySet(new): %v", err)
	}
	for _, tc := range []struct {
		name string
		env  sign.Envelope
		now  time.Time
		want error
	}{
		{"new key", newEnv, rotatedAt, nil},
		{"new key, much later", newEnv, rotatedAt.Add(365 * day), nil},
		{"old key at rotation", oldEnv, rotatedAt, nil},
		{"old key just before the grace ends", oldEnv, rotatedAt.Add(grace - time.Nanosecond), nil},
		{"old key at the end of grace", oldEnv, rotatedAt.Add(grace), sign.ErrExpiredKey},
		{"old key after grace", oldEnv, rotatedAt.Add(grace + day), sign.ErrExpiredKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := v.Verify(tc.env, deltaType, tc.now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v; want %v", err, tc.want)
			}
		})
	}

	// The rotation is on disk.
	r := mustOpen(t, testConfig(t, dir, clock))
	if got := activeID(t, r); got != newID {
		t.Errorf("reopened: active key %s; want %s", got, newID)
	}
	if got := keySet(t, r).Version; got != ks.Version {
		t.Errorf("reopened: version %d; want %d", got, ks.Version)
	}
}

func TestRotateDropsNextAndPrunes(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testConfig(t, dir, clock))
	first := activeID(t, s)
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyTTL - grace)
	if changed, err := s.MaybeRotate(); err != nil || !changed {
		t.Fatalf("MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	ks := keySet(t, s)
	next := ks.Keys[0].KeyID
	if len(ks.Keys) != 2 || slices.Contains(keyIDs(ks), first) {
		t.Fatalf("after publishing: got keys %v; want [next, active] without the first key (pruned)", keyIDs(ks))
	}
	// Rotate makes a fresh key rather than activate the published one, and
	// drops that one: it never signed.
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	ks2 := keySet(t, s)
	if got := activeID(t, s); got == next || len(ks2.Keys) != 2 || slices.Contains(keyIDs(ks2), next) {
		t.Errorf("after Rotate: active %s, keys %v; want a fresh key and the retired one", got, keyIDs(ks2))
	}
	if ks2.Version != ks.Version+1 {
		t.Errorf("version: got %d; want %d", ks2.Version, ks.Version+1)
	}
	if got := listDir(t, dir); len(got) != 5 { // root, two keys, state, lock
		t.Errorf("dir: got %v; want the root, 2 signing keys, signer.json and the lock file", got)
	}
}

func TestRotateLimit(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, testConfig(t, t.TempDir(), clock))
	for i := 1; i < sign.MaxKeys; i++ {
		if err := s.Rotate(); err != nil {
			t.Fatalf("Rotate %d: %v", i, err)
		}
	}
	before := snap(t, s)
	if err := s.Rotate(); err == nil {
		t.Errorf("Rotate with %d keys: got nil error; want error", sign.MaxKeys)
	}
	if got := snap(t, s); got != before {
		t.Errorf("a refused Rotate changed the signer")
	}
	// The full set is still one agents accept.
	agent(t, s, clock.Now())
	// Once the grace is over, the old keys go and rotation works again.
	clock.Advance(grace)
	if err := s.Rotate(); err != nil {
		t.Errorf("Rotate after the grace: %v", err)
	}
	if got := len(keySet(t, s).Keys); got != 2 {
		t.Errorf("keys: got %d; want 2", got)
	}
}

func TestMaybeRotateSchedule(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, testConfig(t, t.TempDir(), clock))
	start := clock.Now()
	first := activeID(t, s)
	var second string
	for _, tc := range []struct {
		at      time.Duration // since start
		changed bool
		keys    int
		version int64
		check   func(t *testing.T, ks sign.KeySet)
	}{
		{0, false, 1, 1, nil},
		{keyTTL - grace - time.Second, false, 1, 1, nil},
		{keyTTL - grace, true, 2, 2, func(t *testing.T, ks sign.KeySet) {
			second = ks.Keys[0].KeyID
			if got := activeID(t, s); got != first {
				t.Errorf("published key signs already: got %s; want %s", got, first)
			}
			if !ks.Keys[0].NotBefore.Equal(clock.Now()) || !ks.Keys[0].NotAfter.IsZero() {
				t.Errorf("next key: got [%v, %v); want [now, open)", ks.Keys[0].NotBefore, ks.Keys[0].NotAfter)
			}
		}},
		{keyTTL - time.Second, false, 2, 2, nil},
		{keyTTL, true, 2, 3, func(t *testing.T, ks sign.KeySet) {
			if got := activeID(t, s); got != second {
				t.Errorf("active: got %s; want %s", got, second)
			}
			if got, want := keyIDs(ks), []string{second, first}; !slices.Equal(got, want) {
				t.Errorf("keys: got %v; want %v", got, want)
			}
			if got, want := ks.Keys[1].NotAfter, start.Add(keyTTL+grace); !got.Equal(want) {
				t.Errorf("retired NotAfter: got %v; want %v", got, want)
			}
		}},
		{keyTTL + grace - time.Second, false, 2, 3, nil},
		{keyTTL + grace, true, 1, 4, func(t *testing.T, ks sign.KeySet) {
			if got := keyIDs(ks); !slices.Equal(got, []string{second}) {
				t.Errorf("keys: got %v; want [%s]", got, second)
			}
		}},
		{keyTTL + grace + time.Second, false, 1, 4, nil},
		{2*keyTTL - grace, true, 2, 5, nil},
	} {
		t.Run(fmt.Sprint(tc.at), func(t *testing.T) {
			clock.Advance(start.Add(tc.at).Sub(clock.Now()))
			changed, err := s.MaybeRotate()
			if err != nil {
				t.Fatalf("MaybeRotate: %v", err)
			}
			ks := keySet(t, s)
			if changed != tc.changed || len(ks.Keys) != tc.keys || ks.Version != tc.version {
				t.Errorf("got changed=%v, %d keys, version %d; want %v, %d, %d", changed, len(ks.Keys), ks.Version, tc.changed, tc.keys, tc.version)
			}
			if tc.check != nil {
				tc.check(t, ks)
			}
		})
	}
}

func TestMaybeRotateLate(t *testing.T) {
	// A control plane that was down past the TTL publishes first and
	// switches a grace later; the old key signs meanwhile.
	clock := newClock()
	s := mustOpen(t, testConfig(t, t.TempDir(), clock))
	first := activeID(t, s)
	clock.Advance(90 * day)
	v := agent(t, s, clock.Now())
	if changed, err := s.MaybeRotate(); err != nil || !changed {
		t.Fatalf("MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	if got := activeID(t, s); got != first {
		t.Errorf("switched at once: active %s; want %s", got, first)
	}
	clock.Advance(grace - time.Second)
	if changed, err := s.MaybeRotate(); err != nil || changed {
		t.Errorf("before the grace: got %v, %v; want false, nil", changed, err)
	}
	clock.Advance(time.Second)
	if changed, err := s.MaybeRotate(); err != nil || !changed {
		t.Errorf("after the grace: got %v, %v; want true, nil", changed, err)
	}
	if got := activeID(t, s); got == first {
		t.Errorf("still signing with the first key")
	}
	// The agent missed one key set but accepts the latest.
	if err := v.UpdateKeySet(s.KeySetEnvelope(), clock.Now()); err != nil {
		t.Errorf("UpdateKeySet: %v", err)
	}
}

// TestMaybeRotateYear runs the schedule for a year with the defaults and an
// agent that is as far behind as allowed: at every moment, the newest
// envelope must verify against every key set the signer issued in the last
// Grace/2 and the one current Grace/2 ago, and an envelope signed Grace/2
// ago must verify against the newest key set.
func TestMaybeRotateYear(t *testing.T) {
	const step = 2 * time.Hour
	clock := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testConfig(t, dir, clock))
	start := clock.Now()

	type issued struct {
		at time.Time
		v  *sign.Verifier // an agent holding this key set only
	}
	history := []issued{{start, agent(t, s, start)}}
	type signed struct {
		at  time.Time
		env sign.Envelope
	}
	var envs []signed
	live := agent(t, s, start) // follows every key set
	lastVersion := keySet(t, s).Version
	active := map[string]bool{}
	maxKeys := 0

	for now := start; now.Before(start.Add(365 * day)); now = now.Add(step) {
		clock.Advance(now.Sub(clock.Now()))
		if now.Sub(start) == 200*day {
			s = mustOpen(t, testConfig(t, dir, clock)) // a restart on the way
		}
		changed, err := s.MaybeRotate()
		if err != nil {
			t.Fatalf("%v: MaybeRotate: %v", now, err)
		}
		ks := keySet(t, s)
		if changed {
			if ks.Version != lastVersion+1 {
				t.Fatalf("%v: version %d after %d; want one more", now, ks.Version, lastVersion)
			}
			lastVersion = ks.Version
			history = append(history, issued{now, agent(t, s, now)})
			if err := live.UpdateKeySet(s.KeySetEnvelope(), now); err != nil {
				t.Fatalf("%v: live agent: UpdateKeySet: %v", now, err)
			}
		} else if ks.Version != lastVersion {
			t.Fatalf("%v: version changed to %d without a change reported", now, ks.Version)
		}
		maxKeys = max(maxKeys, len(ks.Keys))

		env := s.Sign(deltaType, []byte(now.String()))
		active[env.Signatures[0].KeyID] = true
		envs = append(envs, signed{now, env})

		oldest := now.Add(-grace / 2)
		for i, h := range history {
			// The key set current at oldest, and any since.
			if i+1 < len(history) && !history[i+1].at.After(oldest) {
				continue
			}
			if _, _, err := h.v.Verify(env, deltaType, now); err != nil {
				t.Fatalf("%v: newest envelope against the key set of %v: %v", now, h.at, err)
			}
		}
		if _, _, err := live.Verify(env, deltaType, now); err != nil {
			t.Fatalf("%v: newest envelope, live agent: %v", now, err)
		}
		// Envelopes signed up to Grace/2 ago still verify for the live
		// agent.
		for len(envs) > 0 && envs[0].at.Before(oldest) {
			envs = envs[1:]
		}
		if _, _, err := live.Verify(envs[0].env, deltaType, now); err != nil {
			t.Fatalf("%v: envelope of %v, live agent: %v", now, envs[0].at, err)
		}
	}
	// About one key a month; three keys at most in a set.
	if n := len(active); n < 11 || n > 13 {
		t.Errorf("got %d signing keys in a year; want about 12", n)
	}
	if maxKeys > 3 {
		t.Errorf("got up to %d keys in a key set; want at most 3", maxKeys)
	}
	// Pruned keys' files are gone: root, at most 3 keys, the state.
	if got := listDir(t, dir); len(got) > 5 {
		t.Errorf("dir: got %v; want at most 5 files", got)
	}
}

func TestConcurrent(t *testing.T) {
	clock := newClock()
	cfg := testConfig(t, t.TempDir(), clock)
	cfg.KeyTTL = time.Hour
	cfg.Grace = day
	s := mustOpen(t, cfg)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				env := s.Sign(deltaType, []byte(fmt.Sprint(g, n)))
				// A key set fetched after signing knows the key, and the
				// clock moves far less than a grace during the test.
				v := sign.NewVerifier(s.RootPublicKey())
				if err := v.UpdateKeySet(s.KeySetEnvelope(), clock.Now()); err != nil {
					t.Errorf("goroutine %d: UpdateKeySet: %v", g, err)
					return
				}
				if _, _, err := v.Verify(env, deltaType, clock.Now()); err != nil {
					t.Errorf("goroutine %d: Verify: %v", g, err)
					return
				}
			}
		})
	}
	for i := range 20 {
		clock.Advance(10 * time.Minute)
		if i%5 == 4 {
			if err := s.Rotate(); err != nil {
				t.Errorf("Rotate: %v", err)
			}
		} else if _, err := s.MaybeRotate(); err != nil {
			t.Errorf("MaybeRotate: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

func TestNoKeyMaterialInLogs(t *testing.T) {
	var buf syncBuffer
	clock := newClock()
	dir := t.TempDir()
	cfg := testConfig(t, dir, clock)
	cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	keys := map[string]ed25519.PrivateKey{}

	s := mustOpen(t, cfg)
	readKeys(t, dir, keys)
	for range 120 { // four months in days
		clock.Advance(day)
		changed, err := s.MaybeRotate()
		if err != nil {
			t.Fatal(err)
		}
		if changed {
			readKeys(t, dir, keys)
		}
		s.Sign(deltaType, []byte("x"))
		s.KeySetEnvelope()
	}
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	readKeys(t, dir, keys)
	s = mustOpen(t, cfg)
	// A refused Open logs too.
	for name := range keys {
		if err := os.Chmod(filepath.Join(dir, name), 0o644); err == nil {
			break
		}
	}
	_, _ = signer.Open(cfg)

	out := buf.String()
	for _, want := range []string{"signer created", "signing key published", "signing key activated", "signing key removed", "signing key rotated", "signer loaded"} {
		if !strings.Contains(out, want) {
			t.Errorf("log output is missing %q; got:\n%s", want, out)
		}
	}
	if len(keys) < 6 {
		t.Fatalf("got %d keys to look for; want at least 6", len(keys))
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("log output contains a PEM private key")
	}
	for name, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		seed := k.Seed()
		for _, s := range []string{
			hex.EncodeToString(seed), strings.ToUpper(hex.EncodeToString(seed)),
			hex.EncodeToString(k),
			base64.StdEncoding.EncodeToString(seed)[:40], base64.RawURLEncoding.EncodeToString(seed)[:40],
			base64.StdEncoding.EncodeToString(k)[:40], base64.RawURLEncoding.EncodeToString(k)[:40],
			base64.StdEncoding.EncodeToString(der)[:40],
			fmt.Sprint([]byte(seed))[:40],
		} {
			if strings.Contains(out, s) {
				t.Errorf("log output contains %s's private key (%q...)", name, s[:8])
			}
		}
	}
}
