package ca_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("cairn.test")

const day = 24 * time.Hour

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// tbWriter routes log output to the test log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a Config over dir with the clock and test logging.
func testConfig(tb testing.TB, dir string, clock *fakeClock) ca.Config {
	return ca.Config{Dir: dir, TrustDomain: td, Now: clock.Now, Logger: testLogger(tb)}
}

func mustOpen(tb testing.TB, cfg ca.Config) *ca.Authority {
	tb.Helper()
	a, err := ca.Open(cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return a
}

func agentID(tb testing.TB, n string) spiffeid.ID {
	tb.Helper()
	id, err := certs.AgentID(td, "tenant-1", "dp-1", n)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// newCSR returns a fresh key and a CSR for it as an agent makes them.
func newCSR(tb testing.TB) (*ecdsa.PrivateKey, []byte) {
	tb.Helper()
	key, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	der, err := certs.NewCSR(key)
	if err != nil {
		tb.Fatal(err)
	}
	return key, der
}

func mustSign(tb testing.TB, a *ca.Authority, id spiffeid.ID, ttl time.Duration) []*x509.Certificate {
	tb.Helper()
	_, csr := newCSR(tb)
	chain, err := a.SignSVID(csr, id, ttl)
	if err != nil {
		tb.Fatalf("SignSVID: %v", err)
	}
	return chain
}

// verify checks chain against bundle at now as an agent or the control
// plane's TLS stack would, and that it names want.
func verify(tb testing.TB, chain []*x509.Certificate, bundle x509bundle.Source, now time.Time, want spiffeid.ID) error {
	tb.Helper()
	got, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	if err != nil {
		return err
	}
	if got != want {
		tb.Errorf("Verify: got id %v; want %v", got, want)
	}
	return nil
}

// signedBy reports whether leaf's signature is from caCert.
func signedBy(leaf, caCert *x509.Certificate) bool {
	return leaf.CheckSignatureFrom(caCert) == nil
}

// diskState is authority.json as the tests read it.
type diskState struct {
	Version     int    `json:"version"`
	TrustDomain string `json:"trust_domain"`
	CAs         []struct {
		ID             string    `json:"id"`
		State          string    `json:"state"`
		ActivatedAt    time.Time `json:"activated_at"`
		LastSVIDExpiry time.Time `json:"last_svid_expiry"`
	} `json:"cas"`
	Discard []string `json:"discard"`
}

func readState(tb testing.TB, dir string) diskState {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "authority.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var st diskState
	if err := json.Unmarshal(data, &st); err != nil {
		tb.Fatal(err)
	}
	return st
}

// states returns id → state from authority.json.
func states(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for _, c := range readState(tb, dir).CAs {
		out[c.ID] = c.State
	}
	return out
}

// caFileID is the id a CA's files are named by.
func caFileID(c *x509.Certificate) string {
	return fmt.Sprintf("%032x", c.SerialNumber)
}

func fileExists(tb testing.TB, path string) bool {
	tb.Helper()
	_, err := os.Stat(path)
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	return err == nil
}

func listDir(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
