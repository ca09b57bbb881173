package identity

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
)

var td = spiffeid.RequireTrustDomainFromString("cairn.test")

// newCA opens a real certs/ca Authority in a temporary directory.
func newCA(tb testing.TB) *ca.Authority {
	tb.Helper()
	return newCAAt(tb, time.Now)
}

// newCAAt is newCA with a clock, for certificates that are already expired.
func newCAAt(tb testing.TB, now func() time.Time) *ca.Authority {
	tb.Helper()
	a, err := ca.Open(ca.Config{Dir: filepath.Join(tb.TempDir(), "ca"), TrustDomain: td, Now: now})
	if err != nil {
		tb.Fatalf("ca.Open: %v", err)
	}
	return a
}

func agentID(tb testing.TB, agent string) spiffeid.ID {
	tb.Helper()
	id, err := certs.AgentID(td, "tenant-1", "dp-1", agent)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// newKeyCSR makes a key and a CSR for it, as the agent does.
func newKeyCSR(tb testing.TB) (crypto.Signer, []byte) {
	tb.Helper()
	key, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		tb.Fatal(err)
	}
	return key, csr
}

// issue signs an SVID for id with a and returns its chain and key.
func issue(tb testing.TB, a *ca.Authority, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, crypto.Signer) {
	tb.Helper()
	key, csr := newKeyCSR(tb)
	chain, err := a.SignSVID(csr, id, ttl)
	if err != nil {
		tb.Fatalf("SignSVID: %v", err)
	}
	return chain, key
}

// servingCert is a TLS certificate as the control plane serves the agent
// API: a serving SVID for id signed by a, followed by extra (the agent API
// appends the signing CA).
func servingCert(tb testing.TB, a *ca.Authority, id spiffeid.ID, extra ...*x509.Certificate) tls.Certificate {
	tb.Helper()
	key, csr := newKeyCSR(tb)
	chain, err := a.SignServingSVID(csr, id, time.Hour, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatalf("SignServingSVID: %v", err)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range append(chain, extra...) {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// tlsServer serves TLS with cert on a local port until the test ends; each
// connection does its handshake, then is closed. askClientCert makes it
// require a client certificate, which it does not verify.
func tlsServer(tb testing.TB, cert tls.Certificate, askClientCert bool) string {
	tb.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if askClientCert {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_ = c.(*tls.Conn).Handshake()
			// Read until the client hangs up, so the client sees the
			// completed handshake rather than a reset.
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
	}()
	tb.Cleanup(func() {
		lis.Close()
		<-done
	})
	return lis.Addr().String()
}

// handshake dials addr with cfg and completes a TLS handshake.
func handshake(tb testing.TB, addr string, cfg *tls.Config) error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// writeBundle writes cas as a PEM bundle file and returns its path.
func writeBundle(tb testing.TB, cas ...*x509.Certificate) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "bundle.pem")
	if err := os.WriteFile(p, certs.EncodeCertsPEM(cas), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// identityFiles is an identity directory's content, written by hand so
// that tests can break one piece at a time.
type identityFiles struct {
	info     Info
	chain    []*x509.Certificate
	key      crypto.Signer
	bundle   []*x509.Certificate
	svidMode os.FileMode
}

// goodFiles returns a valid identity for agent "agent-1" signed by a.
func goodFiles(tb testing.TB, a *ca.Authority) identityFiles {
	tb.Helper()
	id := agentID(tb, "agent-1")
	chain, key := issue(tb, a, id, time.Hour)
	return identityFiles{
		info:     Info{AgentID: "agent-1", TenantID: "tenant-1", DataPlaneID: "dp-1", SPIFFEID: id.String()},
		chain:    chain,
		key:      key,
		bundle:   a.BundleCerts(),
		svidMode: 0o600,
	}
}

// write puts f into a new directory and returns it.
func (f identityFiles) write(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "identity")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(f.key)
	if err != nil {
		tb.Fatal(err)
	}
	svid := append(certs.EncodeCertsPEM(f.chain), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	info, err := json.Marshal(f.info)
	if err != nil {
		tb.Fatal(err)
	}
	for _, w := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{svidFile, svid, f.svidMode},
		{bundleFile, certs.EncodeCertsPEM(f.bundle), 0o644},
		{infoFile, info, 0o600},
	} {
		p := filepath.Join(dir, w.name)
		if err := os.WriteFile(p, w.data, w.mode); err != nil {
			tb.Fatal(err)
		}
		// WriteFile's mode is subject to the umask; set it exactly.
		if err := os.Chmod(p, w.mode); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

func fileMode(tb testing.TB, path string) os.FileMode {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Mode().Perm()
}

// writeFile writes data with exactly mode perm, whatever the umask.
func writeFile(tb testing.TB, path string, data []byte, perm os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		tb.Fatal(err)
	}
}
