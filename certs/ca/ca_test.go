package ca_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestOpenCreatesCA(t *testing.T) {
	clock := newClock()
	dir := filepath.Join(t.TempDir(), "ca")
	a := mustOpen(t, testConfig(t, dir, clock))
	now := clock.Now()

	c := a.Active()
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"IsCA", c.IsCA, true},
		{"BasicConstraintsValid", c.BasicConstraintsValid, true},
		{"MaxPathLen", c.MaxPathLen, 0},
		{"MaxPathLenZero", c.MaxPathLenZero, true},
		{"KeyUsage", c.KeyUsage, x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		{"SubjectKeyId set", len(c.SubjectKeyId) > 0, true},
		{"URI SANs", len(c.URIs), 1},
		{"URI SAN", c.URIs[0].String(), "spiffe://cairn.test"},
		{"CN prefix", strings.HasPrefix(c.Subject.CommonName, "Cairn CA "), true},
		{"O", strings.Join(c.Subject.Organization, ","), "Cairn"},
		{"NotBefore", c.NotBefore, now.Add(-time.Minute)},
		{"NotAfter", c.NotAfter, now.Add(365 * day)},
		{"self-signed", c.CheckSignatureFrom(c) == nil, true},
		{"serial bits <= 128", c.SerialNumber.BitLen() <= 128 && c.SerialNumber.Sign() > 0, true},
		{"P-256", c.PublicKeyAlgorithm == x509.ECDSA, true},
		{"bundle size", len(a.BundleCerts()), 1},
		{"pin", a.Pin(), certs.SPKIPin(c)},
		{"PinAll", strings.Join(a.PinAll(), ","), certs.SPKIPin(c)},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v; want %v", tc.name, tc.got, tc.want)
		}
	}

	id := caFileID(c)
	checkMode(t, dir, os.ModeDir|0o700)
	checkMode(t, filepath.Join(dir, id+".key"), 0o600)
	checkMode(t, filepath.Join(dir, id+".crt"), 0o644)
	checkMode(t, filepath.Join(dir, "authority.json"), 0o600)
	checkMode(t, filepath.Join(dir, certs.LockFileName), 0o600)
	if got, want := states(t, dir), map[string]string{id: "active"}; !maps.Equal(got, want) {
		t.Errorf("authority.json: got %v; want %v", got, want)
	}
	if got := listDir(t, dir); len(got) != 4 {
		t.Errorf("dir: got %v; want authority.json, one .crt, one .key and the lock file", got)
	}
	k, err := certs.ReadKeyFile(filepath.Join(dir, id+".key"))
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(c.PublicKey) {
		t.Errorf("key file does not match the CA certificate")
	}
}

func TestOpenReopen(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	a := mustOpen(t, testConfig(t, dir, clock))
	clock.Advance(time.Hour)
	b := mustOpen(t, testConfig(t, dir, clock))
	if !a.Active().Equal(b.Active()) {
		t.Errorf("reopened: got a different active CA")
	}
	if got, want := b.Pin(), a.Pin(); got != want {
		t.Errorf("reopened pin: got %s; want %s", got, want)
	}
	if got := len(b.BundleCerts()); got != 1 {
		t.Errorf("reopened bundle: got %d CAs; want 1", got)
	}
	// An SVID from the first instance verifies against the second's bundle.
	id := agentID(t, "a1")
	chain := mustSign(t, a, id, time.Hour)
	if err := verify(t, chain, b.Bundle(), clock.Now(), id); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestOpenConfig(t *testing.T) {
	clock := newClock()
	for _, tc := range []struct {
		name string
		edit func(*ca.Config)
		ok   bool
	}{
		{"defaults", func(*ca.Config) {}, true},
		{"no dir", func(c *ca.Config) { c.Dir = "" }, false},
		{"no trust domain", func(c *ca.Config) { c.TrustDomain = spiffeid.TrustDomain{} }, false},
		{"negative CATTL", func(c *ca.Config) { c.CATTL = -time.Hour }, false},
		{"negative MaxSVIDTTL", func(c *ca.Config) { c.MaxSVIDTTL = -time.Hour }, false},
		{"CATTL under 6 SVID lifetimes", func(c *ca.Config) { c.CATTL = 6*day - time.Second }, false},
		{"CATTL exactly 6 SVID lifetimes", func(c *ca.Config) { c.CATTL = 6 * day }, true},
		{"short SVIDs, short CA", func(c *ca.Config) { c.CATTL = 6 * time.Hour; c.MaxSVIDTTL = time.Hour }, true},
		{"nil clock and logger", func(c *ca.Config) { c.Now = nil; c.Logger = nil }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), clock)
			tc.edit(&cfg)
			_, err := ca.Open(cfg)
			if (err == nil) != tc.ok {
				t.Errorf("got %v; want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestOpenRefuses(t *testing.T) {
	other := spiffeid.RequireTrustDomainFromString("other.test")
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, dir, id string, cfg *ca.Config)
		want   string // in the error
	}{
		{"key readable by others", func(t *testing.T, dir, id string, _ *ca.Config) {
			chmod(t, filepath.Join(dir, id+".key"), 0o644)
		}, "group or others"},
		{"key readable by group", func(t *testing.T, dir, id string, _ *ca.Config) {
			chmod(t, filepath.Join(dir, id+".key"), 0o640)
		}, "group or others"},
		{"certificate missing", func(t *testing.T, dir, id string, _ *ca.Config) {
			remove(t, filepath.Join(dir, id+".crt"))
		}, ".crt"},
		{"key missing", func(t *testing.T, dir, id string, _ *ca.Config) {
			remove(t, filepath.Join(dir, id+".key"))
		}, ".key"},
		{"state file missing", func(t *testing.T, dir, _ string, _ *ca.Config) {
			remove(t, filepath.Join(dir, "authority.json"))
		}, "authority.json is missing"},
		{"unlisted CA files", func(t *testing.T, dir, _ string, _ *ca.Config) {
			// Another authority's CA dropped in: what an old state file
			// restored from backup would look like.
			src := t.TempDir()
			b := mustOpen(t, testConfig(t, src, newClock()))
			bid := caFileID(b.Active())
			for _, ext := range []string{".crt", ".key"} {
				copyFile(t, filepath.Join(src, bid+ext), filepath.Join(dir, bid+ext))
			}
		}, "not listed"},
		{"key swapped", func(t *testing.T, dir, id string, _ *ca.Config) {
			k, err := certs.NewKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := certs.WriteKeyFile(filepath.Join(dir, id+".key"), k); err != nil {
				t.Fatal(err)
			}
		}, "does not match"},
		{"certificate swapped", func(t *testing.T, dir, id string, _ *ca.Config) {
			src := t.TempDir()
			b := mustOpen(t, testConfig(t, src, newClock()))
			copyFile(t, filepath.Join(src, caFileID(b.Active())+".crt"), filepath.Join(dir, id+".crt"))
		}, "serial"},
		{"other trust domain", func(t *testing.T, _, _ string, cfg *ca.Config) {
			cfg.TrustDomain = other
		}, "trust domain"},
		{"unknown state", func(t *testing.T, dir, _ string, _ *ca.Config) {
			editState(t, dir, func(m map[string]any) {
				m["cas"].([]any)[0].(map[string]any)["state"] = "revoked"
			})
		}, "unknown state"},
		{"no active CA", func(t *testing.T, dir, _ string, _ *ca.Config) {
			editState(t, dir, func(m map[string]any) {
				m["cas"].([]any)[0].(map[string]any)["state"] = "retiring"
			})
		}, "0 active"},
		{"bad id", func(t *testing.T, dir, _ string, _ *ca.Config) {
			editState(t, dir, func(m map[string]any) {
				m["cas"].([]any)[0].(map[string]any)["id"] = "../../etc/passwd"
			})
		}, "bad CA id"},
		{"unknown version", func(t *testing.T, dir, _ string, _ *ca.Config) {
			editState(t, dir, func(m map[string]any) { m["version"] = 2 })
		}, "version"},
		{"garbage state", func(t *testing.T, dir, _ string, _ *ca.Config) {
			if err := os.WriteFile(filepath.Join(dir, "authority.json"), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "authority.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			dir := t.TempDir()
			cfg := testConfig(t, dir, clock)
			a := mustOpen(t, cfg)
			tc.mutate(t, dir, caFileID(a.Active()), &cfg)
			_, err := ca.Open(cfg)
			if err == nil {
				t.Fatalf("got nil error; want one mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestOpenFinishesInterruptedChanges checks that files a crash can leave
// behind, and that the state file says are garbage, are cleaned up.
func TestOpenFinishesInterruptedChanges(t *testing.T) {
	t.Run("prepare", func(t *testing.T) {
		clock := newClock()
		dir := t.TempDir()
		a := mustOpen(t, testConfig(t, dir, clock))
		if err := a.Prepare(); err != nil {
			t.Fatal(err)
		}
		prepared := caFileID(a.BundleCerts()[0])
		// What authority.json says between writing the new CA's files and
		// listing it: the id is marked for discarding.
		editState(t, dir, func(m map[string]any) {
			var keep []any
			for _, c := range m["cas"].([]any) {
				if c.(map[string]any)["id"] != prepared {
					keep = append(keep, c)
				}
			}
			m["cas"] = keep
			m["discard"] = []any{prepared}
		})
		// And a temporary file from an interrupted atomic write.
		tmp := filepath.Join(dir, ".x.key.tmp-12345")
		if err := os.WriteFile(tmp, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}

		b := mustOpen(t, testConfig(t, dir, clock))
		if got := len(b.BundleCerts()); got != 1 {
			t.Errorf("bundle: got %d CAs; want 1", got)
		}
		for _, p := range []string{prepared + ".crt", prepared + ".key", ".x.key.tmp-12345"} {
			if fileExists(t, filepath.Join(dir, p)) {
				t.Errorf("%s: still there; want it removed", p)
			}
		}
		if d := readState(t, dir).Discard; len(d) != 0 {
			t.Errorf("discard: got %v; want none", d)
		}
		// Preparing again works.
		if err := b.Prepare(); err != nil {
			t.Errorf("Prepare after recovery: %v", err)
		}
	})
	t.Run("first start", func(t *testing.T) {
		clock := newClock()
		dir := t.TempDir()
		a := mustOpen(t, testConfig(t, dir, clock))
		id := caFileID(a.Active())
		editState(t, dir, func(m map[string]any) {
			m["cas"] = []any{}
			m["discard"] = []any{id}
		})
		b := mustOpen(t, testConfig(t, dir, clock))
		if b.Active().Equal(a.Active()) {
			t.Errorf("got the discarded CA back; want a new one")
		}
		if fileExists(t, filepath.Join(dir, id+".key")) {
			t.Errorf("discarded key still on disk")
		}
	})
}

func chmod(tb testing.TB, path string, mode os.FileMode) {
	tb.Helper()
	if err := os.Chmod(path, mode); err != nil {
		tb.Fatal(err)
	}
}

func remove(tb testing.TB, path string) {
	tb.Helper()
	if err := os.Remove(path); err != nil {
		tb.Fatal(err)
	}
}

func copyFile(tb testing.TB, from, to string) {
	tb.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// editState rewrites authority.json through edit.
func editState(tb testing.TB, dir string, edit func(map[string]any)) {
	tb.Helper()
	path := filepath.Join(dir, "authority.json")
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&m); err != nil {
		tb.Fatal(err)
	}
	edit(m)
	if data, err = json.Marshal(m); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

func checkMode(tb testing.TB, path string, want os.FileMode) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if got := fi.Mode() & (os.ModeDir | os.ModePerm); got != want {
		tb.Errorf("%s: got mode %v; want %v", filepath.Base(path), got, want)
	}
}
