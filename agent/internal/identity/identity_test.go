package identity

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cairnhq/cairn/certs"
)

func TestLoadRoundTrip(t *testing.T) {
	cp := newCA(t)
	f := goodFiles(t, cp)
	dir := filepath.Join(t.TempDir(), "identity")
	src, err := newSource(dir, f.info, f.chain, f.key, f.bundle)
	if err != nil {
		t.Fatal(err)
	}
	rootPub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	src.signingRoot = rootPub
	if err := src.save(); err != nil {
		t.Fatalf("save: %v", err)
	}
	for name, want := range map[string]os.FileMode{svidFile: 0o600, infoFile: 0o600, bundleFile: 0o644, rootKeyFile: 0o644} {
		if got := fileMode(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s mode %v; want %v", name, got, want)
		}
	}
	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("identity directory mode %v; want 0700", got)
	}

	got, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Info() != f.info {
		t.Errorf("Info %+v; want %+v", got.Info(), f.info)
	}
	if !got.SigningRoot().Equal(rootPub) {
		t.Errorf("loaded signing root %x; want %x", []byte(got.SigningRoot()), []byte(rootPub))
	}
	if got.TrustDomain() != td {
		t.Errorf("TrustDomain %v; want %v", got.TrustDomain(), td)
	}
	svid := got.SVID()
	if len(svid.Certificates) != len(f.chain) || !svid.Certificates[0].Equal(f.chain[0]) {
		t.Errorf("loaded SVID serial %x; want %x", svid.Certificates[0].SerialNumber, f.chain[0].SerialNumber)
	}
	if svid.ID.String() != f.info.SPIFFEID {
		t.Errorf("loaded SVID id %v; want %v", svid.ID, f.info.SPIFFEID)
	}
	if !sameKey(svid.PrivateKey, f.key) {
		t.Error("loaded key is not the saved key")
	}
	if b := got.BundleCerts(); len(b) != 1 || !b[0].Equal(cp.Active()) {
		t.Errorf("loaded bundle has %d certificates; want the CA", len(b))
	}
	if _, err := got.GetX509BundleForTrustDomain(td); err != nil {
		t.Errorf("GetX509BundleForTrustDomain(%v): %v", td, err)
	}
	if _, err := got.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.test")); err == nil {
		t.Error("GetX509BundleForTrustDomain(other.test) succeeded; want an error")
	}
}

// sameKey reports whether a and b hold the same key pair.
func sameKey(a, b crypto.Signer) bool {
	pub, ok := a.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(b.Public())
}

func TestLoadNotEnrolled(t *testing.T) {
	cp := newCA(t)
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"empty directory", func(t *testing.T) string { return t.TempDir() }},
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }},
		{"only the SVID", func(t *testing.T) string {
			dir := goodFiles(t, cp).write(t)
			mustRemove(t, filepath.Join(dir, infoFile))
			mustRemove(t, filepath.Join(dir, bundleFile))
			return dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.dir(t))
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Load: got %v; want an error wrapping fs.ErrNotExist", err)
			}
		})
	}
}

// TestLoadRefuses checks identities Load must not accept. None of the
// errors may wrap fs.ErrNotExist: the daemon would take that for "not
// enrolled" and try to enroll again.
func TestLoadRefuses(t *testing.T) {
	cp, other := newCA(t), newCA(t)
	expiredCA := newCAAt(t, func() time.Time { return time.Now().Add(-48 * time.Hour) })

	for _, tc := range []struct {
		name    string
		files   func(t *testing.T) string
		wantErr string
	}{
		{"svid.pem readable by others", func(t *testing.T) string {
			f := goodFiles(t, cp)
			f.svidMode = 0o644
			return f.write(t)
		}, "readable by others"},
		{"svid.pem readable by group", func(t *testing.T) string {
			f := goodFiles(t, cp)
			f.svidMode = 0o640
			return f.write(t)
		}, "readable by others"},
		{"SVID of another CA than bundle.pem", func(t *testing.T) string {
			f := goodFiles(t, cp)
			f.bundle = other.BundleCerts()
			return f.write(t)
		}, "does not verify"},
		{"SVID for another SPIFFE ID than identity.json", func(t *testing.T) string {
			f := goodFiles(t, cp)
			f.chain, f.key = issue(t, cp, agentID(t, "agent-2"), time.Hour)
			return f.write(t)
		}, "this agent is"},
		{"identity.json names another trust domain", func(t *testing.T) string {
			f := goodFiles(t, cp)
			f.info.SPIFFEID = strings.Replace(f.info.SPIFFEID, "cairn.test", "other.test", 1)
			return f.write(t)
		}, "does not verify"},
		{"expired SVID", func(t *testing.T) string {
			f := goodFiles(t, expiredCA)
			f.chain, f.key = issue(t, expiredCA, agentID(t, "agent-1"), time.Hour)
			return f.write(t)
		}, "does not verify"},
		{"identity.json not JSON", func(t *testing.T) string {
			dir := goodFiles(t, cp).write(t)
			writeFile(t, filepath.Join(dir, infoFile), []byte("{"), 0o600)
			return dir
		}, infoFile},
		{"identity.json with a bad SPIFFE ID", func(t *testing.T) string {
			f := goodFiles(t, cp)
			f.info.SPIFFEID = "https://cairn.test/x"
			return f.write(t)
		}, "identity"},
		{"svid.pem without a key", func(t *testing.T) string {
			f := goodFiles(t, cp)
			dir := f.write(t)
			writeFile(t, filepath.Join(dir, svidFile), certs.EncodeCertsPEM(f.chain), 0o600)
			return dir
		}, "want a certificate chain and a private key"},
		{"svid.pem without a certificate", func(t *testing.T) string {
			dir := goodFiles(t, cp).write(t)
			b, err := os.ReadFile(filepath.Join(dir, svidFile))
			if err != nil {
				t.Fatal(err)
			}
			keyOnly := b[bytes.Index(b, []byte("-----BEGIN PRIVATE KEY")):]
			writeFile(t, filepath.Join(dir, svidFile), keyOnly, 0o600)
			return dir
		}, "want a certificate chain and a private key"},
		{"bundle.pem not PEM", func(t *testing.T) string {
			dir := goodFiles(t, cp).write(t)
			writeFile(t, filepath.Join(dir, bundleFile), []byte("garbage"), 0o644)
			return dir
		}, bundleFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.files(t))
			if err == nil {
				t.Fatal("Load succeeded; want an error")
			}
			if errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Load: %v wraps fs.ErrNotExist; the daemon would enroll again", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load: got %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestLoadRefusesKeyOfAnotherCertificate: svid.pem holds a chain and a
// key that do not belong together (a hand-made or half-restored file).
// Every mTLS handshake would then fail and the agent would retry forever,
// so Load should refuse it, as Enroll does.
func TestLoadRefusesKeyOfAnotherCertificate(t *testing.T) {
	cp := newCA(t)
	f := goodFiles(t, cp)
	_, f.key = issue(t, cp, agentID(t, "agent-1"), time.Hour)
	if _, err := Load(f.write(t)); err == nil {
		t.Fatal("Load accepted an SVID whose key is not in svid.pem")
	}
}

func TestRenewAt(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, life := range []time.Duration{90 * time.Second, time.Hour, 24 * time.Hour} {
		t.Run(life.String(), func(t *testing.T) {
			leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(life)}
			lo, hi := nb.Add(life*4/10), nb.Add(life*6/10)
			seen := map[time.Time]bool{}
			var below, above int
			for range 10000 {
				at := RenewAt(leaf)
				if at.Before(lo) || at.After(hi) {
					t.Fatalf("RenewAt = NotBefore + %v; want within [%v, %v]", at.Sub(nb), lo.Sub(nb), hi.Sub(nb))
				}
				seen[at] = true
				if at.Before(nb.Add(life / 2)) {
					below++
				} else {
					above++
				}
			}
			if len(seen) < 100 {
				t.Fatalf("RenewAt gave %d distinct times in 10000 calls; want jitter", len(seen))
			}
			// Uniform jitter puts about half on each side of the midpoint.
			if below < 3000 || above < 3000 {
				t.Fatalf("RenewAt: %d before the midpoint, %d after; want both near 5000", below, above)
			}
		})
	}
}

func TestUpdateBundle(t *testing.T) {
	cp, other := newCA(t), newCA(t)
	f := goodFiles(t, cp)
	dir := filepath.Join(t.TempDir(), "identity")
	src, err := newSource(dir, f.info, f.chain, f.key, f.bundle)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.save(); err != nil {
		t.Fatal(err)
	}
	onDisk := func() []*x509.Certificate {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, bundleFile))
		if err != nil {
			t.Fatal(err)
		}
		cs, err := certs.ParseCertsPEM(b)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	same := func(got []*x509.Certificate, want ...*x509.Certificate) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if !got[i].Equal(want[i]) {
				return false
			}
		}
		return true
	}

	for _, tc := range []struct {
		name string
		ders [][]byte
	}{
		{"another CA only", [][]byte{other.Active().Raw}},
		{"empty", nil},
		{"not DER", [][]byte{[]byte("garbage")}},
		{"a good CA and garbage", [][]byte{cp.Active().Raw, []byte("garbage")}},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			if err := src.UpdateBundle(tc.ders); err == nil {
				t.Fatal("UpdateBundle succeeded; want an error")
			}
			if !same(src.BundleCerts(), cp.Active()) {
				t.Fatalf("bundle changed after a refused update: %d certificates", len(src.BundleCerts()))
			}
			if !same(onDisk(), cp.Active()) {
				t.Fatal("bundle.pem changed after a refused update")
			}
		})
	}

	t.Run("accepts a bundle that still verifies the SVID", func(t *testing.T) {
		if err := src.UpdateBundle([][]byte{other.Active().Raw, cp.Active().Raw}); err != nil {
			t.Fatalf("UpdateBundle: %v", err)
		}
		if !same(src.BundleCerts(), other.Active(), cp.Active()) {
			t.Fatalf("bundle has %d certificates; want the two CAs", len(src.BundleCerts()))
		}
		if !same(onDisk(), other.Active(), cp.Active()) {
			t.Fatal("bundle.pem does not hold the new bundle")
		}
		if fileMode(t, filepath.Join(dir, bundleFile)) != 0o644 {
			t.Fatal("bundle.pem mode changed")
		}
		// A restart finds the new bundle.
		got, err := Load(dir)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if !same(got.BundleCerts(), other.Active(), cp.Active()) {
			t.Fatal("Load did not read the updated bundle")
		}
	})

	// Every config stream starts with the bundle: the one held is not
	// written again.
	t.Run("writes nothing for the bundle it holds", func(t *testing.T) {
		p := filepath.Join(dir, bundleFile)
		if err := os.WriteFile(p, []byte("sentinel"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := src.UpdateBundle([][]byte{other.Active().Raw, cp.Active().Raw}); err != nil {
			t.Fatalf("UpdateBundle: %v", err)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != "sentinel" {
			t.Fatalf("bundle.pem written again for the bundle held (%v)", err)
		}
	})
}

func TestNewSourceRefuses(t *testing.T) {
	cp, other := newCA(t), newCA(t)
	f := goodFiles(t, cp)
	for _, tc := range []struct {
		name   string
		info   Info
		chain  []*x509.Certificate
		bundle []*x509.Certificate
	}{
		{"empty chain", f.info, nil, f.bundle},
		{"empty bundle", f.info, f.chain, nil},
		{"bundle of another CA", f.info, f.chain, other.BundleCerts()},
		{"CA as SVID", f.info, []*x509.Certificate{cp.Active()}, f.bundle},
		{"no SPIFFE ID", Info{AgentID: "agent-1"}, f.chain, f.bundle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newSource(t.TempDir(), tc.info, tc.chain, f.key, tc.bundle); err == nil {
				t.Fatal("newSource succeeded; want an error")
			}
		})
	}
}

func mustRemove(tb testing.TB, path string) {
	tb.Helper()
	if err := os.Remove(path); err != nil {
		tb.Fatal(err)
	}
}
