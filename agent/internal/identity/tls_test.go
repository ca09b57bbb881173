package identity

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cairnhq/cairn/certs"
)

// TestTrustHandshake runs real TLS handshakes of the enrollment
// configuration against servers presenting serving SVIDs from real CAs.
func TestTrustHandshake(t *testing.T) {
	cp := newCA(t)    // the control plane's CA
	other := newCA(t) // some other CA of the same trust domain
	cpID := certs.ControlPlaneID(td)
	expired := newCAAt(t, func() time.Time { return time.Now().Add(-48 * time.Hour) })

	pin := cp.Pin()
	upperPin := "sha256:" + strings.ToUpper(strings.TrimPrefix(pin, "sha256:"))
	bundle := writeBundle(t, cp.Active())

	for _, tc := range []struct {
		name    string
		cert    tls.Certificate
		trust   Trust
		wantErr string // "" means the handshake succeeds
	}{
		{"pin", servingCert(t, cp, cpID, cp.Active()), Trust{Pin: pin}, ""},
		{"pin in upper-case hex", servingCert(t, cp, cpID, cp.Active()), Trust{Pin: upperPin}, ""},
		{"bundle file", servingCert(t, cp, cpID, cp.Active()), Trust{BundleFile: bundle}, ""},
		{"bundle file of several CAs", servingCert(t, cp, cpID, cp.Active()), Trust{BundleFile: writeBundle(t, other.Active(), cp.Active())}, ""},
		{"bundle file, server sends its leaf only", servingCert(t, cp, cpID), Trust{BundleFile: bundle}, ""},

		{"pin, server sends its leaf only", servingCert(t, cp, cpID), Trust{Pin: pin}, "matches the CA pin"},
		{"pin of another CA", servingCert(t, cp, cpID, cp.Active()), Trust{Pin: other.Pin()}, "matches the CA pin"},
		{"bundle file of another CA", servingCert(t, cp, cpID, cp.Active()), Trust{BundleFile: writeBundle(t, other.Active())}, "unknown authority"},
		{"agent id, pin", servingCert(t, cp, agentID(t, "a1"), cp.Active()), Trust{Pin: pin}, "not the control plane"},
		{"agent id, bundle file", servingCert(t, cp, agentID(t, "a1"), cp.Active()), Trust{BundleFile: bundle}, "not the control plane"},
		{"another path of the trust domain", servingCert(t, cp, spiffeid.RequireFromPath(td, "/controlplane/x"), cp.Active()), Trust{Pin: pin}, "not the control plane"},
		// The server's own CA matches neither the pin nor the bundle.
		{"chain of another CA, pin", servingCert(t, other, cpID, other.Active()), Trust{Pin: pin}, "matches the CA pin"},
		{"chain of another CA, bundle file", servingCert(t, other, cpID, other.Active()), Trust{BundleFile: bundle}, "unknown authority"},
		// The pinned or bundled CA is in the chain, but did not sign the
		// leaf: being presented must not make it vouch for the leaf.
		{"leaf of another CA with the pinned CA appended", servingCert(t, other, cpID, other.Active(), cp.Active()), Trust{Pin: pin}, "unknown authority"},
		{"leaf of another CA with the bundled CA appended", servingCert(t, other, cpID, other.Active(), cp.Active()), Trust{BundleFile: bundle}, "unknown authority"},
		{"expired serving SVID", servingCert(t, expired, cpID, expired.Active()), Trust{Pin: expired.Pin()}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := tc.trust.tlsConfig()
			if err != nil {
				t.Fatalf("tlsConfig: %v", err)
			}
			addr := tlsServer(t, tc.cert, false)
			err = handshake(t, addr, cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake: got %v; want success", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("handshake succeeded; want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("handshake: got %v; want an error containing %q", err, tc.wantErr)
			case err != nil:
				t.Logf("refused: %v", err)
			}
		})
	}
}

func TestTrustConfigErrors(t *testing.T) {
	cp := newCA(t)
	bundle := writeBundle(t, cp.Active())
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	writeFile(t, notPEM, []byte("not a certificate\n"), 0o644)
	empty := filepath.Join(dir, "empty.pem")
	writeFile(t, empty, nil, 0o644)
	hex64 := strings.Repeat("ab", 32)

	for _, tc := range []struct {
		name  string
		trust Trust
	}{
		{"neither", Trust{}},
		{"both", Trust{BundleFile: bundle, Pin: cp.Pin()}},
		{"pin without prefix", Trust{Pin: hex64}},
		{"pin of another digest", Trust{Pin: "sha1:" + hex64}},
		{"pin too short", Trust{Pin: "sha256:" + hex64[:62]}},
		{"pin too long", Trust{Pin: "sha256:" + hex64 + "ab"}},
		{"pin not hex", Trust{Pin: "sha256:" + strings.Repeat("zz", 32)}},
		{"pin with spaces", Trust{Pin: " " + cp.Pin()}},
		{"bundle file missing", Trust{BundleFile: filepath.Join(dir, "missing.pem")}},
		{"bundle file not PEM", Trust{BundleFile: notPEM}},
		{"bundle file empty", Trust{BundleFile: empty}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := tc.trust.tlsConfig(); err == nil {
				t.Fatalf("tlsConfig(%+v) succeeded; want an error", tc.trust)
			}
		})
	}
}

// TestMTLSConfig checks the configuration every call after enrollment
// uses: the agent's SVID goes to the server, and only the control plane's
// SPIFFE ID under the current bundle is accepted.
func TestMTLSConfig(t *testing.T) {
	cp, other := newCA(t), newCA(t)
	f := goodFiles(t, cp)
	src, err := newSource(t.TempDir(), f.info, f.chain, f.key, f.bundle)
	if err != nil {
		t.Fatal(err)
	}
	cpID := certs.ControlPlaneID(td)
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		wantOK bool
	}{
		{"control plane", servingCert(t, cp, cpID, cp.Active()), true},
		{"control plane, leaf only", servingCert(t, cp, cpID), true},
		{"agent id", servingCert(t, cp, agentID(t, "a2"), cp.Active()), false},
		{"another CA", servingCert(t, other, cpID, other.Active()), false},
		{"another CA with ours appended", servingCert(t, other, cpID, other.Active(), cp.Active()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tlsServer(t, tc.cert, true)
			err := handshake(t, addr, src.MTLSConfig())
			if (err == nil) != tc.wantOK {
				t.Fatalf("handshake: got %v; want ok=%v", err, tc.wantOK)
			}
		})
	}
}

// TestMTLSConfigPresentsSVID checks the client certificate the agent
// sends is its current SVID, and a renewed one after Renew's set.
func TestMTLSConfigPresentsSVID(t *testing.T) {
	cp := newCA(t)
	f := goodFiles(t, cp)
	src, err := newSource(t.TempDir(), f.info, f.chain, f.key, f.bundle)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *x509.Certificate, 2)
	cert := servingCert(t, cp, certs.ControlPlaneID(td), cp.Active())
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err == nil {
				got <- c
			}
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
	}()

	if err := handshake(t, lis.Addr().String(), src.MTLSConfig()); err != nil {
		t.Fatal(err)
	}
	if c := <-got; !c.Equal(f.chain[0]) {
		t.Fatalf("client certificate serial %x; want the SVID's %x", c.SerialNumber, f.chain[0].SerialNumber)
	}
	id, _ := spiffeid.FromString(f.info.SPIFFEID)
	chain, key := issue(t, cp, id, time.Hour)
	if err := src.set(chain, key, cp.BundleCerts()); err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, lis.Addr().String(), src.MTLSConfig()); err != nil {
		t.Fatal(err)
	}
	if c := <-got; !c.Equal(chain[0]) {
		t.Fatalf("after renewal, client certificate serial %x; want the new SVID's %x", c.SerialNumber, chain[0].SerialNumber)
	}
}
