package signer_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
)

func TestOpenCreates(t *testing.T) {
	clock := newClock()
	dir := filepath.Join(t.TempDir(), "signer")
	s := mustOpen(t, testConfig(t, dir, clock))
	now := clock.Now()

	root := s.RootPublicKey()
	rootID := sign.KeyID(root)
	if len(root) != ed25519.PublicKeySize {
		t.Fatalf("root: got %d bytes; want %d", len(root), ed25519.PublicKeySize)
	}
	ks := keySet(t, s)
	if ks.Version != 1 || !ks.IssuedAt.Equal(now) || len(ks.Keys) != 1 {
		t.Fatalf("key set: got version %d issued %v with %d keys; want 1, %v, 1", ks.Version, ks.IssuedAt, len(ks.Keys), now)
	}
	k := ks.Keys[0]
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"key id", k.KeyID, sign.KeyID(k.PublicKey)},
		{"signing key is not the root", k.KeyID != rootID, true},
		{"NotBefore", k.NotBefore.Equal(now), true},
		{"NotAfter open-ended", k.NotAfter.IsZero(), true},
		{"Sign uses it", activeID(t, s), k.KeyID},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v; want %v", tc.name, tc.got, tc.want)
		}
	}

	checkMode(t, dir, os.ModeDir|0o700)
	checkMode(t, filepath.Join(dir, rootID+".key"), 0o600)
	checkMode(t, filepath.Join(dir, k.KeyID+".key"), 0o600)
	checkMode(t, filepath.Join(dir, "signer.json"), 0o600)
	checkMode(t, filepath.Join(dir, certs.LockFileName), 0o600)
	want := []string{certs.LockFileName, rootID + ".key", k.KeyID + ".key", "signer.json"}
	slices.Sort(want)
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("dir: got %v; want %v", got, want)
	}
	// The files are PKCS#8 PEM Ed25519 keys matching the ids.
	for _, id := range []string{rootID, k.KeyID} {
		data, err := os.ReadFile(filepath.Join(dir, id+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
			t.Errorf("%s.key: got %.30q; want a PEM PRIVATE KEY", id, data)
		}
		key, err := certs.ReadKeyFile(filepath.Join(dir, id+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if got := sign.KeyID(key.Public().(ed25519.PublicKey)); got != id {
			t.Errorf("%s.key: got key %s", id, got)
		}
	}
}

func TestSignVerifies(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, testConfig(t, t.TempDir(), clock))
	v := agent(t, s, clock.Now())
	payload := []byte(`{"op":"add","route":"r1"}`)
	env := s.Sign(deltaType, payload)
	data, err := sign.MarshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	env, err = sign.UnmarshalEnvelope(data)
	if err != nil {
		t.Fatal(err)
	}
	got, id, err := v.Verify(env, deltaType, clock.Now())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !bytes.Equal(got, payload) || id != activeID(t, s) {
		t.Errorf("got %q from %s; want %q from %s", got, id, payload, activeID(t, s))
	}
	// The root does not sign deltas, and a signing key does not sign key
	// sets.
	if id == sign.KeyID(s.RootPublicKey()) {
		t.Errorf("Sign used the root key")
	}
	if ksEnv := s.KeySetEnvelope(); ksEnv.Signatures[0].KeyID != sign.KeyID(s.RootPublicKey()) {
		t.Errorf("KeySetEnvelope: signed by %s; want the root", ksEnv.Signatures[0].KeyID)
	}
	// Same version, same bytes.
	a, _ := sign.MarshalEnvelope(s.KeySetEnvelope())
	b, _ := sign.MarshalEnvelope(s.KeySetEnvelope())
	if !bytes.Equal(a, b) {
		t.Errorf("KeySetEnvelope: two calls gave different bytes")
	}
}

func TestReopen(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	a := mustOpen(t, testConfig(t, dir, clock))
	clock.Advance(keyTTL - grace) // publishes a next key
	if changed, err := a.MaybeRotate(); err != nil || !changed {
		t.Fatalf("MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	clock.Advance(grace) // activates it
	if changed, err := a.MaybeRotate(); err != nil || !changed {
		t.Fatalf("MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	old := snap(t, a)

	clock.Advance(time.Hour)
	b := mustOpen(t, testConfig(t, dir, clock))
	got := snap(t, b)
	for _, tc := range []struct {
		name      string
		got, want string
	}{
		{"root", got.root, old.root},
		{"active key", got.active, old.active},
		{"key set", got.keySet, old.keySet},
	} {
		if tc.got != tc.want {
			t.Errorf("reopened %s: got %s; want %s", tc.name, tc.got, tc.want)
		}
	}
	if v := keySet(t, b).Version; v != 3 {
		t.Errorf("reopened key set version: got %d; want 3", v)
	}
	// The next change after a reopen continues the versions.
	if err := b.Rotate(); err != nil {
		t.Fatal(err)
	}
	if v := keySet(t, b).Version; v != 4 {
		t.Errorf("after Rotate: got version %d; want 4", v)
	}
	// An agent that enrolled with the first instance accepts what the
	// second signs.
	v := sign.NewVerifier(a.RootPublicKey())
	if err := v.UpdateKeySet(a.KeySetEnvelope(), clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := v.UpdateKeySet(b.KeySetEnvelope(), clock.Now()); err != nil {
		t.Errorf("UpdateKeySet from the reopened signer: %v", err)
	}
	if _, _, err := v.Verify(b.Sign(deltaType, []byte("x")), deltaType, clock.Now()); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// snapshot is what must survive a reopen.
type snapshot struct{ root, active, keySet string }

func snap(tb testing.TB, s *signer.Signer) snapshot {
	tb.Helper()
	data, err := sign.MarshalEnvelope(s.KeySetEnvelope())
	if err != nil {
		tb.Fatal(err)
	}
	return snapshot{sign.KeyID(s.RootPublicKey()), activeID(tb, s), string(data)}
}

func TestOpenConfig(t *testing.T) {
	clock := newClock()
	for _, tc := range []struct {
		name string
		edit func(*signer.Config)
		ok   bool
	}{
		{"defaults", func(*signer.Config) {}, true},
		{"no dir", func(c *signer.Config) { c.Dir = "" }, false},
		{"negative KeyTTL", func(c *signer.Config) { c.KeyTTL = -time.Hour }, false},
		{"negative Grace", func(c *signer.Config) { c.Grace = -time.Hour }, false},
		{"short TTL, long grace", func(c *signer.Config) { c.KeyTTL = time.Hour; c.Grace = day }, true},
		{"nil clock and logger", func(c *signer.Config) { c.Now = nil; c.Logger = nil }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), clock)
			tc.edit(&cfg)
			_, err := signer.Open(cfg)
			if (err == nil) != tc.ok {
				t.Errorf("got %v; want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestOpenRefuses(t *testing.T) {
	clock := newClock()
	// setup makes a signer with an active, a next and a retired key and
	// returns its directory, root id and key ids, newest first.
	setup := func(t *testing.T) (dir, rootID string, ids []string) {
		// A one-day TTL publishes the next key at once.
		clock := newClock()
		dir = t.TempDir()
		cfg := testConfig(t, dir, clock)
		cfg.KeyTTL, cfg.Grace = day, grace
		s := mustOpen(t, cfg)
		for _, d := range []time.Duration{0, grace, 0} { // publish, activate, publish
			clock.Advance(d)
			if changed, err := s.MaybeRotate(); err != nil || !changed {
				t.Fatalf("setup: MaybeRotate: got %v, %v; want true, nil", changed, err)
			}
		}
		ks := keySet(t, s)
		if len(ks.Keys) != 3 {
			t.Fatalf("setup: got %d keys; want 3", len(ks.Keys))
		}
		return dir, sign.KeyID(s.RootPublicKey()), keyIDs(ks)
	}
	otherKeyPEM := func(t *testing.T) (string, []byte) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "k.key")
		if err := certs.WriteKeyFile(p, k); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sign.KeyID(k.Public().(ed25519.PublicKey)), data
	}
	editState := func(edit func(t *testing.T, st diskState, rootID string, ids []string)) func(*testing.T, string, string, []string) {
		return func(t *testing.T, dir, rootID string, ids []string) {
			st := readState(t, dir)
			edit(t, st, rootID, ids)
			writeState(t, dir, st)
		}
	}
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir, rootID string, ids []string)
		errWant string // a part of the error message
	}{
		{"root key 0644", func(t *testing.T, dir, rootID string, _ []string) {
			os.Chmod(filepath.Join(dir, rootID+".key"), 0o644)
		}, "group or others"},
		{"signing key 0644", func(t *testing.T, dir, _ string, ids []string) {
			os.Chmod(filepath.Join(dir, ids[1]+".key"), 0o644)
		}, "group or others"},
		{"signing key 0640", func(t *testing.T, dir, _ string, ids []string) {
			os.Chmod(filepath.Join(dir, ids[2]+".key"), 0o640)
		}, "group or others"},
		{"dir group-writable", func(t *testing.T, dir, _ string, _ []string) {
			os.Chmod(dir, 0o770)
		}, "mode"},
		{"state file missing", func(t *testing.T, dir, _ string, _ []string) {
			os.Remove(filepath.Join(dir, "signer.json"))
		}, "missing"},
		{"root key file missing", func(t *testing.T, dir, rootID string, _ []string) {
			os.Remove(filepath.Join(dir, rootID+".key"))
		}, "root key"},
		{"signing key file missing", func(t *testing.T, dir, _ string, ids []string) {
			os.Remove(filepath.Join(dir, ids[0]+".key"))
		}, "signing key"},
		{"key files swapped", func(t *testing.T, dir, _ string, ids []string) {
			a, b := filepath.Join(dir, ids[0]+".key"), filepath.Join(dir, ids[1]+".key")
			tmp := filepath.Join(dir, "swap")
			os.Rename(a, tmp)
			os.Rename(b, a)
			os.Rename(tmp, b)
		}, "holds key"},
		{"root replaced by another key", func(t *testing.T, dir, rootID string, _ []string) {
			_, data := otherKeyPEM(t)
			os.WriteFile(filepath.Join(dir, rootID+".key"), data, 0o600)
		}, "holds key"},
		{"stray key file", func(t *testing.T, dir, _ string, _ []string) {
			id, data := otherKeyPEM(t)
			os.WriteFile(filepath.Join(dir, id+".key"), data, 0o600)
		}, "not listed"},
		{"key file not a key", func(t *testing.T, dir, _ string, ids []string) {
			os.WriteFile(filepath.Join(dir, ids[0]+".key"), []byte("hello"), 0o600)
		}, "PEM"},
		{"state not JSON", func(t *testing.T, dir, _ string, _ []string) {
			os.WriteFile(filepath.Join(dir, "signer.json"), []byte("{"), 0o600)
		}, "signer.json"},
		{"unknown field", editState(func(t *testing.T, st diskState, _ string, _ []string) { st["extra"] = 1 }), "unknown field"},
		{"format version 2", editState(func(t *testing.T, st diskState, _ string, _ []string) { st["version"] = 2 }), "version"},
		{"key set version 0", editState(func(t *testing.T, st diskState, _ string, _ []string) { st["key_set_version"] = 0 }), "key set version"},
		{"root id changed", editState(func(t *testing.T, st diskState, _ string, ids []string) { st["root_key_id"] = ids[0] }), "listed twice"},
		{"root id malformed", editState(func(t *testing.T, st diskState, _ string, _ []string) { st["root_key_id"] = "../../etc/passwd" }), "bad root key id"},
		{"root id missing with keys", editState(func(t *testing.T, st diskState, _ string, _ []string) { delete(st, "root_key_id") }), "together"},
		{"no keys with a root", editState(func(t *testing.T, st diskState, _ string, _ []string) { st["keys"] = []any{} }), "together"},
		{"two active keys", editState(func(t *testing.T, st diskState, _ string, _ []string) {
			k := stateKeys(t, st)
			k[0]["state"] = "active"
			k[0]["activated_at"] = k[0]["not_before"]
		}), "2 active"},
		{"no active key", editState(func(t *testing.T, st diskState, _ string, _ []string) {
			k := stateKeys(t, st)
			k[1]["state"] = "retired"
			k[1]["not_after"] = "2099-01-01T00:00:00Z"
		}), "0 active"},
		{"unknown key state", editState(func(t *testing.T, st diskState, _ string, _ []string) { stateKeys(t, st)[2]["state"] = "revoked" }), "unknown state"},
		{"retired key without not_after", editState(func(t *testing.T, st diskState, _ string, _ []string) { delete(stateKeys(t, st)[2], "not_after") }), "not_after"},
		{"active key with not_after", editState(func(t *testing.T, st diskState, _ string, _ []string) {
			stateKeys(t, st)[1]["not_after"] = "2099-01-01T00:00:00Z"
		}), "not_after"},
		{"key id malformed", editState(func(t *testing.T, st diskState, _ string, _ []string) { stateKeys(t, st)[0]["id"] = "x" }), "bad key id"},
		{"key listed twice", editState(func(t *testing.T, st diskState, _ string, _ []string) {
			st["keys"] = append(st["keys"].([]any), st["keys"].([]any)[2])
		}), "twice"},
		{"listed key also discarded", editState(func(t *testing.T, st diskState, _ string, ids []string) { st["discard"] = []any{ids[2]} }), "discarded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, rootID, ids := setup(t)
			tc.damage(t, dir, rootID, ids)
			files := listDir(t, dir)
			s, err := signer.Open(testConfig(t, dir, clock))
			if err == nil {
				t.Fatalf("got a Signer with active key %s, nil error; want error", activeID(t, s))
			}
			if !strings.Contains(err.Error(), tc.errWant) {
				t.Errorf("got %v; want an error mentioning %q", err, tc.errWant)
			}
			// Open changed nothing: no new root over the old one.
			if got := listDir(t, dir); !slices.Equal(got, files) {
				t.Errorf("dir after Open: got %v; want %v", got, files)
			}
		})
	}
}

func TestOpenRecovers(t *testing.T) {
	clock := newClock()
	t.Run("leftover temporary file", func(t *testing.T) {
		dir := t.TempDir()
		mustOpen(t, testConfig(t, dir, clock))
		tmp := filepath.Join(dir, ".abc.key.tmp-123")
		if err := os.WriteFile(tmp, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		mustOpen(t, testConfig(t, dir, clock))
		if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("temporary file: got %v; want it removed", err)
		}
	})
	t.Run("interrupted rotation", func(t *testing.T) {
		// A key written but never listed, as a crash in Rotate between
		// the key file and the state file leaves it, is named in discard.
		dir := t.TempDir()
		s := mustOpen(t, testConfig(t, dir, clock))
		before := snap(t, s)
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id := sign.KeyID(k.Public().(ed25519.PublicKey))
		if err := certs.WriteKeyFile(filepath.Join(dir, id+".key"), k); err != nil {
			t.Fatal(err)
		}
		st := readState(t, dir)
		st["discard"] = []any{id}
		writeState(t, dir, st)

		s = mustOpen(t, testConfig(t, dir, clock))
		if _, err := os.Stat(filepath.Join(dir, id+".key")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("discarded key file: got %v; want it removed", err)
		}
		if _, ok := readState(t, dir)["discard"]; ok {
			t.Errorf("signer.json still has a discard list")
		}
		if got := snap(t, s); got != before {
			t.Errorf("after recovery: got %+v; want %+v", got, before)
		}
	})
	t.Run("interrupted first start", func(t *testing.T) {
		// The first Open writes a state with no keys and both ids in
		// discard before it writes the key files.
		dir := t.TempDir()
		s := mustOpen(t, testConfig(t, dir, clock))
		oldRoot := sign.KeyID(s.RootPublicKey())
		st := readState(t, dir)
		st["discard"] = []any{oldRoot, stateKeys(t, st)[0]["id"]}
		delete(st, "root_key_id")
		st["keys"] = []any{}
		st["key_set_version"] = 0
		writeState(t, dir, st)

		s = mustOpen(t, testConfig(t, dir, clock))
		if sign.KeyID(s.RootPublicKey()) == oldRoot {
			t.Errorf("got the discarded root back")
		}
		if got := len(listDir(t, dir)); got != 4 {
			t.Errorf("dir: got %d files; want 4 (the root, a signing key, the state and the lock)", got)
		}
	})
}
