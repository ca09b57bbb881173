package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("cairn.test")

const (
	tenant = "6f1c2a9e-3b1d-4c8e-9a51-0d2f7e6b4a10"
	dp     = "a3e4b5c6-d7e8-4f90-8a1b-2c3d4e5f6a7b"
	agent  = "0b9c8d7e-6f5a-4b3c-8d2e-1f0a9b8c7d6e"
)

func TestAgentIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, tenant, dp, agent string
	}{
		{"uuids", tenant, dp, agent},
		{"other valid segments", "acme", "eu-west_1", "host.example"},
		{"upper case", "ACME", "DP", "A1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := certs.AgentID(td, tc.tenant, tc.dp, tc.agent)
			if err != nil {
				t.Fatalf("AgentID: %v", err)
			}
			want := "spiffe://cairn.test/tenant/" + tc.tenant + "/dataplane/" + tc.dp + "/agent/" + tc.agent
			if got := id.String(); got != want {
				t.Errorf("got %s; want %s", got, want)
			}
			ai, err := certs.ParseAgentID(id)
			if err != nil {
				t.Fatalf("ParseAgentID: %v", err)
			}
			wantAI := certs.AgentIdentity{TrustDomain: td, TenantID: tc.tenant, DataPlaneID: tc.dp, AgentID: tc.agent}
			if ai != wantAI {
				t.Errorf("got %+v; want %+v", ai, wantAI)
			}
			if got := ai.ID(); got != id {
				t.Errorf("ID(): got %v; want %v", got, id)
			}
		})
	}
}

func TestAgentIDRejects(t *testing.T) {
	for _, tc := range []struct {
		name            string
		td              spiffeid.TrustDomain
		tenant, dp, agt string
	}{
		{"zero trust domain", spiffeid.TrustDomain{}, tenant, dp, agent},
		{"empty tenant", td, "", dp, agent},
		{"empty data plane", td, tenant, "", agent},
		{"empty agent", td, tenant, dp, ""},
		{"slash in segment", td, "a/b", dp, agent},
		{"dot segment", td, ".", dp, agent},
		{"dot dot segment", td, tenant, "..", agent},
		{"space", td, tenant, dp, "a b"},
		{"percent", td, tenant, dp, "a%2F"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := certs.AgentID(tc.td, tc.tenant, tc.dp, tc.agt)
			if err == nil {
				t.Fatalf("got %v, nil error; want error", id)
			}
			ai := certs.AgentIdentity{TrustDomain: tc.td, TenantID: tc.tenant, DataPlaneID: tc.dp, AgentID: tc.agt}
			if got := ai.ID(); !got.IsZero() {
				t.Errorf("ID(): got %v; want zero ID", got)
			}
		})
	}
}

func TestParseAgentIDRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   spiffeid.ID
	}{
		{"zero", spiffeid.ID{}},
		{"trust domain only", td.ID()},
		{"wrong keyword", spiffeid.RequireFromSegments(td, "tenant", tenant, "dataplane", dp, "agents", agent)},
		{"keywords swapped", spiffeid.RequireFromSegments(td, "dataplane", dp, "tenant", tenant, "agent", agent)},
		{"missing agent", spiffeid.RequireFromSegments(td, "tenant", tenant, "dataplane", dp)},
		{"missing agent id", spiffeid.RequireFromSegments(td, "tenant", tenant, "dataplane", dp, "agent")},
		{"extra segment", spiffeid.RequireFromSegments(td, "tenant", tenant, "dataplane", dp, "agent", agent, "x")},
		{"extra pair", spiffeid.RequireFromSegments(td, "tenant", tenant, "dataplane", dp, "agent", agent, "agent", agent)},
		{"prefix segment", spiffeid.RequireFromSegments(td, "x", "tenant", tenant, "dataplane", dp, "agent", agent)},
		{"upper case keyword", spiffeid.RequireFromSegments(td, "Tenant", tenant, "dataplane", dp, "agent", agent)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ai, err := certs.ParseAgentID(tc.id); err == nil {
				t.Errorf("got %+v, nil error; want error", ai)
			}
		})
	}
	// Empty segments cannot reach ParseAgentID: spiffeid refuses to make
	// such an ID. Check that stays true, since ParseAgentID relies on it
	// only as a second line of defence.
	if id, err := spiffeid.FromString("spiffe://cairn.test/tenant//dataplane/d/agent/a"); err == nil {
		t.Errorf("spiffeid.FromString with an empty segment: got %v; want error", id)
	}
}

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "agent.key")
	key := mustKey(t)
	if err := certs.WriteKeyFile(path, key); err != nil {
		t.Fatalf("WriteKeyFile: %v", err)
	}
	checkMode(t, dir, os.ModeDir|0o700)
	checkMode(t, path, 0o600)
	checkNoTempFiles(t, dir)

	got, err := certs.ReadKeyFile(path)
	if err != nil {
		t.Fatalf("ReadKeyFile: %v", err)
	}
	if !key.Equal(got) {
		t.Errorf("ReadKeyFile: got a different key")
	}

	// Overwriting replaces the key and keeps the mode.
	key2 := mustKey(t)
	if err := certs.WriteKeyFile(path, key2); err != nil {
		t.Fatalf("WriteKeyFile again: %v", err)
	}
	checkMode(t, path, 0o600)
	if got, err := certs.ReadKeyFile(path); err != nil || !key2.Equal(got) {
		t.Errorf("ReadKeyFile after overwrite: got other key or error %v", err)
	}
	checkNoTempFiles(t, dir)
}

func TestReadKeyFileRejects(t *testing.T) {
	key := mustKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"world readable", good, 0o644},
		{"group readable", good, 0o640},
		{"group writable", good, 0o620},
		{"others executable", good, 0o601},
		{"empty", nil, 0o600},
		{"not PEM", []byte("hello"), 0o600},
		{"SEC1 block", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600},
		{"certificate block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600},
		{"trailing data", append(bytes.Clone(good), "junk"...), 0o600},
		{"two keys", append(bytes.Clone(good), good...), 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.key")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			if k, err := certs.ReadKeyFile(path); err == nil {
				t.Errorf("got %T, nil error; want error", k)
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := certs.ReadKeyFile(dir); err == nil {
			t.Errorf("got nil error; want error")
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := certs.ReadKeyFile(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v; want a not-exist error", err)
		}
	})
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	for _, tc := range []struct {
		data string
		perm os.FileMode
	}{
		{"one", 0o640},
		{"two, longer than one", 0o600},
		{"", 0o644},
	} {
		if err := certs.WriteFileAtomic(path, []byte(tc.data), tc.perm); err != nil {
			t.Fatalf("WriteFileAtomic(%q): %v", tc.data, err)
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != tc.data {
			t.Errorf("got %q, %v; want %q", got, err, tc.data)
		}
		checkMode(t, path, tc.perm)
	}
	checkNoTempFiles(t, dir)

	if err := certs.WriteFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Errorf("missing directory: got nil error; want error")
	}
	if err := certs.WriteFileAtomic(dir+"/", []byte("x"), 0o600); err == nil {
		t.Errorf("no file name: got nil error; want error")
	}
	checkNoTempFiles(t, dir)
}

func TestNewCSR(t *testing.T) {
	key := mustKey(t)
	der, err := certs.NewCSR(key)
	if err != nil {
		t.Fatalf("NewCSR: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("ParseCertificateRequest: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CheckSignature: %v", err)
	}
	if n := len(csr.URIs) + len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n != 0 {
		t.Errorf("got %d SANs; want 0", n)
	}
	if n := len(csr.Extensions); n != 0 {
		t.Errorf("got %d requested extensions; want 0", n)
	}
	if s := csr.Subject.String(); s != "" {
		t.Errorf("got subject %q; want empty", s)
	}
	if !key.PublicKey.Equal(csr.PublicKey) {
		t.Errorf("CSR public key is not the key's")
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("got %T; want ECDSA P-256", csr.PublicKey)
	}
}

func TestPins(t *testing.T) {
	a, b, c := mustCert(t), mustCert(t), mustCert(t)
	pa := certs.SPKIPin(a)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(pa) {
		t.Fatalf("got pin %q; want sha256:<64 lowercase hex>", pa)
	}
	if err := certs.CheckPin(pa); err != nil {
		t.Errorf("CheckPin(SPKIPin): %v", err)
	}
	if pa == certs.SPKIPin(b) {
		t.Errorf("two keys have the same pin %s", pa)
	}

	t.Run("match", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			certs []*x509.Certificate
			pin   string
			want  *x509.Certificate
		}{
			{"only", []*x509.Certificate{a}, pa, a},
			{"second", []*x509.Certificate{b, a, c}, pa, a},
			{"upper case hex", []*x509.Certificate{b, a}, "sha256:" + strings.ToUpper(strings.TrimPrefix(pa, "sha256:")), a},
			{"mismatch", []*x509.Certificate{b, c}, pa, nil},
			{"empty list", nil, pa, nil},
			{"nil entry", []*x509.Certificate{nil, a}, pa, a},
			{"malformed pin", []*x509.Certificate{a}, strings.TrimPrefix(pa, "sha256:"), nil},
			{"truncated pin", []*x509.Certificate{a}, pa[:len(pa)-2], nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, ok := certs.MatchPin(tc.certs, tc.pin)
				if got != tc.want || ok != (tc.want != nil) {
					t.Errorf("got %v, %v; want %v, %v", got != nil, ok, tc.want != nil, tc.want != nil)
				}
			})
		}
	})

	t.Run("check", func(t *testing.T) {
		hex64 := strings.Repeat("ab", 32)
		for _, tc := range []struct {
			pin string
			ok  bool
		}{
			{"sha256:" + hex64, true},
			{"sha256:" + strings.ToUpper(hex64), true},
			{"", false},
			{"sha256:", false},
			{hex64, false},
			{"SHA256:" + hex64, false},
			{"sha1:" + hex64[:40], false},
			{"sha256:" + hex64[:62], false},
			{"sha256:" + hex64 + "ab", false},
			{"sha256:" + hex64[:63] + "g", false},
			{" sha256:" + hex64, false},
			{"sha256:" + hex64 + "\n", false},
			{"sha256: " + hex64[1:], false},
		} {
			t.Run(tc.pin, func(t *testing.T) {
				err := certs.CheckPin(tc.pin)
				if (err == nil) != tc.ok {
					t.Errorf("got %v; want ok=%v", err, tc.ok)
				}
			})
		}
	})
}

func TestCertsPEM(t *testing.T) {
	a, b := mustCert(t), mustCert(t)
	enc := certs.EncodeCertsPEM([]*x509.Certificate{a, b})
	got, err := certs.ParseCertsPEM(enc)
	if err != nil {
		t.Fatalf("ParseCertsPEM: %v", err)
	}
	if len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b) {
		t.Fatalf("got %d certificates, not a then b; want [a b]", len(got))
	}
	// Surrounding whitespace, as editors and echo leave it, is fine.
	if got, err := certs.ParseCertsPEM(append(append([]byte("\n  "), enc...), "\n\n"...)); err != nil || len(got) != 2 {
		t.Errorf("with whitespace: got %d certificates, %v; want 2, nil", len(got), err)
	}

	keyDER, err := x509.MarshalPKCS8PrivateKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	one := certs.EncodeCertsPEM([]*x509.Certificate{a})
	damaged := bytes.Replace(bytes.Clone(one), []byte("-----BEGIN CERTIFICATE-----"), []byte("----BEGIN CERTIFICATE-----"), 1)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"nil", nil},
		{"whitespace", []byte(" \n\t")},
		{"text", []byte("not pem")},
		{"private key", keyPEM},
		{"certificate then private key", append(bytes.Clone(one), keyPEM...)},
		{"leading text", append([]byte("subject=CN=x\n"), one...)},
		{"trailing text", append(bytes.Clone(one), "junk"...)},
		{"damaged second block", append(bytes.Clone(one), damaged...)},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}})},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: a.Raw})},
		{"truncated", one[:len(one)/2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := certs.ParseCertsPEM(tc.data); err == nil {
				t.Errorf("got %d certificates, nil error; want error", len(got))
			}
		})
	}
	if got := certs.EncodeCertsPEM(nil); len(got) != 0 {
		t.Errorf("EncodeCertsPEM(nil): got %q; want empty", got)
	}
}

func mustKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	if k.Curve != elliptic.P256() {
		tb.Fatalf("NewKey: got curve %s; want P-256", k.Curve.Params().Name)
	}
	return k
}

// mustCert returns a self-signed certificate for a new key.
func mustCert(tb testing.TB) *x509.Certificate {
	tb.Helper()
	key := mustKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
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

func checkNoTempFiles(tb testing.TB, dir string) {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			tb.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
