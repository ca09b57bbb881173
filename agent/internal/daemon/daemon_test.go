package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/agent/internal/identity"
	"github.com/cairnhq/cairn/certs"
)

// config is a daemon Config for f with test logging and short backoff.
func config(tb testing.TB, f *fakeCP, token string) (Config, *logBuffer) {
	tb.Helper()
	log, lb := newLogger(tb)
	return Config{
		Addr: f.addr, Dir: filepath.Join(tb.TempDir(), "agent"), JoinToken: token,
		Trust: identity.Trust{Pin: f.pin()}, Version: "test", Logger: log, MaxBackoff: 200 * time.Millisecond,
	}, lb
}

// agentIDIn reads the agent id the daemon persisted in dir.
func agentIDIn(tb testing.TB, dir string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "identity", "identity.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var info identity.Info
	if err := json.Unmarshal(b, &info); err != nil {
		tb.Fatal(err)
	}
	return info.AgentID
}

// enrolledDaemon starts a daemon, waits until it has enrolled and
// opened its bundle stream, and returns it and its agent id.
func enrolledDaemon(t *testing.T, f *fakeCP, cfg Config) (*running, string) {
	t.Helper()
	r := start(t, cfg)
	return r, waitEnrolled(t, f, r, cfg.Dir)
}

// waitEnrolled waits until the daemon r, with data directory dir, has
// enrolled and opened its bundle stream, and returns its agent id.
func waitEnrolled(t *testing.T, f *fakeCP, r *running, dir string) string {
	t.Helper()
	var agent string
	waitFor(t, 10*time.Second, "enrollment", func() bool {
		r.mustBeRunning(t)
		if _, err := os.Stat(filepath.Join(dir, "identity", "identity.json")); err != nil {
			return false
		}
		agent = agentIDIn(t, dir)
		return f.watchCount(agent) > 0
	})
	return agent
}

func TestNewChecksConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		wantOK bool
	}{
		{"empty", Config{}, false},
		{"no dir", Config{Addr: "127.0.0.1:1"}, false},
		{"no addr", Config{Dir: t.TempDir()}, false},
		{"minimal", Config{Addr: "127.0.0.1:1", Dir: t.TempDir()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(tc.cfg)
			if (err == nil) != tc.wantOK {
				t.Fatalf("New: got %v; want ok=%v", err, tc.wantOK)
			}
			if d != nil && (d.cfg.MaxBackoff != 30*time.Second || d.log == nil) {
				t.Fatalf("New did not default MaxBackoff and Logger: %+v", d.cfg)
			}
		})
	}
}

func TestNotEnrolledWithoutToken(t *testing.T) {
	f := startFakeCP(t)
	cfg, _ := config(t, f, "")
	err := start(t, cfg).wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "join token") {
		t.Fatalf("Run: got %v; want an error about the missing join token", err)
	}
	if n := f.counts().enrolls; n != 0 {
		t.Fatalf("control plane saw %d enrollments; want 0", n)
	}
}

// TestEnrollThenRestart enrolls with each kind of trust, stops, and
// starts again from the data directory without a token.
func TestEnrollThenRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trust func(t *testing.T, f *fakeCP) identity.Trust
	}{
		{"pin", func(t *testing.T, f *fakeCP) identity.Trust { return identity.Trust{Pin: f.pin()} }},
		{"bundle file", func(t *testing.T, f *fakeCP) identity.Trust {
			p := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(p, certs.EncodeCertsPEM(f.bundleCerts()), 0o644); err != nil {
				t.Fatal(err)
			}
			return identity.Trust{BundleFile: p}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeCP(t)
			token := f.newToken()
			cfg, log := config(t, f, token)
			cfg.Trust = tc.trust(t, f)
			r, agent := enrolledDaemon(t, f, cfg)

			svid := filepath.Join(cfg.Dir, "identity", "svid.pem")
			fi, err := os.Stat(svid)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("svid.pem mode %v; want 0600", fi.Mode().Perm())
			}
			if err := r.stop(t); err != nil {
				t.Fatalf("Run after cancel: got %v; want nil", err)
			}

			cfg.JoinToken = ""
			r2 := start(t, cfg)
			waitFor(t, 10*time.Second, "the restarted agent's bundle stream", func() bool { return f.watchCount(agent) >= 2 })
			if c := f.counts(); c.enrolls != 1 || c.agents != 1 {
				t.Fatalf("after restart: %d enrollments, %d agents; want 1 and 1", c.enrolls, c.agents)
			}
			if err := r2.stop(t); err != nil {
				t.Fatalf("Run after cancel: got %v; want nil", err)
			}
			if strings.Contains(log.String(), token) {
				t.Fatal("the join token appears in the log")
			}
		})
	}
}

// TestUsedTokenIsFatal: a refused join token is not retried.
func TestUsedTokenIsFatal(t *testing.T) {
	f := startFakeCP(t)
	token := f.newToken()
	cfg, _ := config(t, f, token)
	enrolledDaemon(t, f, cfg)

	cfg2, log := config(t, f, token)
	err := start(t, cfg2).wait(t, 10*time.Second)
	if status.Code(err) != codes.Unauthenticated || errors.Is(err, ErrRevoked) {
		t.Fatalf("Run with a used token: got %v; want the Unauthenticated refusal", err)
	}
	if c := f.counts(); c.enrolls != 2 || c.agents != 1 {
		t.Fatalf("%d enrollment attempts, %d agents; want 2 (one refused, not retried) and 1", c.enrolls, c.agents)
	}
	if strings.Contains(log.String(), token) {
		t.Fatal("the join token appears in the log")
	}
}

// TestEnrollWaitsForControlPlane: an unreachable control plane is
// retried with backoff until it comes up.
func TestEnrollWaitsForControlPlane(t *testing.T) {
	f := newFakeCP(t)
	f.addr = freeAddr(t)
	token := f.newToken()
	cfg, log := config(t, f, token)
	r := start(t, cfg)
	waitFor(t, 10*time.Second, "two failed enrollment attempts", func() bool {
		return log.count("enrollment failed; retrying") >= 2
	})
	r.mustBeRunning(t)
	f.serve(t, f.addr)
	waitEnrolled(t, f, r, cfg.Dir)
	if strings.Contains(log.String(), token) {
		t.Fatal("the join token appears in the log")
	}
}

// TestUntrustedControlPlaneGetsNoToken: with a pin or bundle of another
// CA the agent never sends its join token, however often it tries.
func TestUntrustedControlPlaneGetsNoToken(t *testing.T) {
	f := startFakeCP(t)
	other := newTestCA(t)
	bundle := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(bundle, certs.EncodeCertsPEM([]*x509.Certificate{other.cert}), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, trust := range map[string]identity.Trust{
		"pin":         {Pin: certs.SPKIPin(other.cert)},
		"bundle file": {BundleFile: bundle},
	} {
		t.Run(name, func(t *testing.T) {
			token := f.newToken()
			cfg, log := config(t, f, token)
			cfg.Trust = trust
			cfg.MaxBackoff = 50 * time.Millisecond
			r := start(t, cfg)
			time.Sleep(time.Second)
			r.stop(t)
			if n := f.counts().enrolls; n != 0 {
				t.Fatalf("the untrusted control plane received %d enrollment requests; want 0", n)
			}
			if _, err := os.Stat(filepath.Join(cfg.Dir, "identity", "svid.pem")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("svid.pem after refused enrollments: %v; want none", err)
			}
			if strings.Contains(log.String(), token) {
				t.Fatal("the join token appears in the log")
			}
		})
	}
}

// TestUntrustedControlPlaneIsFatal: a control plane that fails the pin or
// bundle check will not pass it later; the agent should stop with an
// error (cairn-agent exits non-zero) rather than retry forever.
func TestUntrustedControlPlaneIsFatal(t *testing.T) {
	f := startFakeCP(t)
	cfg, _ := config(t, f, f.newToken())
	cfg.Trust = identity.Trust{Pin: certs.SPKIPin(newTestCA(t).cert)}
	err := start(t, cfg).wait(t, 10*time.Second)
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Run: got %v; want an error about the untrusted control plane", err)
	}
}

func TestRevokedWhileRunning(t *testing.T) {
	f := startFakeCP(t)
	cfg, _ := config(t, f, f.newToken())
	r, agent := enrolledDaemon(t, f, cfg)
	f.revoke(agent)
	if err := r.wait(t, 10*time.Second); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Run after revocation: got %v; want ErrRevoked", err)
	}

	// A restart from disk finds out at once.
	cfg.JoinToken = ""
	if err := start(t, cfg).wait(t, 10*time.Second); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Run of a revoked agent: got %v; want ErrRevoked", err)
	}
}

func TestRenewal(t *testing.T) {
	f := startFakeCP(t)
	f.setSVIDLife(5 * time.Second) // renewed 1-3s after issue
	cfg, log := config(t, f, f.newToken())
	r, agent := enrolledDaemon(t, f, cfg)
	svidPath := filepath.Join(cfg.Dir, "identity", "svid.pem")
	first := readSVID(t, svidPath)

	waitFor(t, 20*time.Second, "two renewals", func() bool { return log.count("SVID renewed") >= 2 })
	r.mustBeRunning(t)
	if n := f.counts().renewals; n < 2 {
		t.Fatalf("control plane saw %d renewals; want at least 2", n)
	}
	if got := readSVID(t, svidPath); got.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("svid.pem still holds the first SVID")
	}
	// Renewed SVIDs are used: once the SVID the bundle stream's connection
	// was opened with has expired, the reconnecting stream is refused and
	// the agent dials again with its current SVID.
	f.setSVIDLife(time.Hour)
	time.Sleep(time.Until(first.NotAfter) + 1500*time.Millisecond)
	f.drop()
	waitFor(t, 10*time.Second, "a new bundle stream with the renewed SVID", func() bool { return f.watchCount(agent) >= 2 })
	r.mustBeRunning(t)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: got %v; want nil", err)
	}
}

func readSVID(tb testing.TB, path string) *x509.Certificate {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		tb.Fatalf("%s does not start with a certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestRenewalRefusedMeansRevoked(t *testing.T) {
	f := startFakeCP(t)
	f.setSVIDLife(5 * time.Second)
	f.setRenewErr(status.Error(codes.PermissionDenied, "agent revoked"))
	cfg, log := config(t, f, f.newToken())
	if err := start(t, cfg).wait(t, 10*time.Second); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Run after a refused renewal: got %v; want ErrRevoked", err)
	}
	if log.count("enrolled") != 1 {
		t.Fatal("the daemon did not enroll first")
	}
}

// TestRenewalRetries: a control plane that cannot renew for a while is
// retried, and the daemon keeps running.
func TestRenewalRetries(t *testing.T) {
	f := startFakeCP(t)
	f.setSVIDLife(6 * time.Second)
	f.setRenewErr(status.Error(codes.Unavailable, "busy"))
	cfg, log := config(t, f, f.newToken())
	r, _ := enrolledDaemon(t, f, cfg)
	waitFor(t, 10*time.Second, "two failed renewals", func() bool { return log.count("SVID renewal failed; retrying") >= 2 })
	f.setRenewErr(nil)
	// Wait for the log line, written once the renewed SVID is on disk: the
	// control plane's count goes up before that (see TestRunWaitsForRenewal).
	waitFor(t, 10*time.Second, "a renewal", func() bool { return log.count("SVID renewed") >= 1 })
	r.mustBeRunning(t)
}

// TestRunWaitsForRenewal: when Run returns, the daemon must be done with
// its identity directory; a renewal still writing svid.pem could race a
// restart (or a test's cleanup) reading or removing it.
//
// One-second SVIDs keep renewals back to back, so Run is usually stopped
// mid-renewal, which is what catches a Run that does not wait. Certificate
// times have whole seconds, though, and a stalled (loaded) machine can let
// such an SVID expire before it is renewed; an iteration where that
// happens proves nothing and is not counted, but enough must count.
func TestRunWaitsForRenewal(t *testing.T) {
	f := startFakeCP(t)
	f.setSVIDLife(time.Second)
	root := t.TempDir()
	exercised := 0
	for i := range 20 {
		cfg, log := config(t, f, f.newToken())
		cfg.Dir = filepath.Join(root, fmt.Sprint(i))
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		renewed := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if log.count("SVID renewed") >= 2 {
				renewed = true
				break
			}
		}
		cancel()
		err = <-done
		if goroutineRunning("(*Daemon).renewLoop") {
			t.Fatalf("iteration %d: Run returned while renewLoop was still running", i)
		}
		switch {
		case err != nil && renewed:
			t.Fatalf("Run: %v", err)
		case err != nil:
			// A one-second SVID can even be issued already expired.
			t.Logf("iteration %d not counted: %v", i, err)
		case renewed:
			exercised++
		}
	}
	if exercised < 5 {
		t.Fatalf("only %d of 20 iterations got two renewals in; the machine is too loaded for this test to mean anything", exercised)
	}
	t.Logf("%d of 20 iterations stopped Run during back-to-back renewals", exercised)
}

// goroutineRunning reports whether any goroutine's stack contains fn.
func goroutineRunning(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}

// TestRenewalRetryDoesNotSpin: once the SVID has expired and renewal
// keeps failing, the retry delay must not drop to zero.
func TestRenewalRetryDoesNotSpin(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 15s")
	}
	f := startFakeCP(t)
	f.setSVIDLife(2 * time.Second)
	f.setRenewErr(status.Error(codes.Unavailable, "down"))
	cfg, log := config(t, f, f.newToken())
	enrolledDaemon(t, f, cfg)
	time.Sleep(13 * time.Second) // 2s of life, then 10s of shrinking delays
	before := log.count("SVID renewal failed; retrying")
	time.Sleep(time.Second)
	if n := log.count("SVID renewal failed; retrying") - before; n > 20 {
		t.Fatalf("%d renewal attempts in one second after expiry; want a backoff", n)
	}
}

func TestBundleUpdates(t *testing.T) {
	f := startFakeCP(t)
	cfg, log := config(t, f, f.newToken())
	r, _ := enrolledDaemon(t, f, cfg)
	bundlePath := filepath.Join(cfg.Dir, "identity", "bundle.pem")
	readBundle := func() []*x509.Certificate {
		b, err := os.ReadFile(bundlePath)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := certs.ParseCertsPEM(b)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}

	// A prepared CA is added beside the signing one.
	next := newTestCA(t)
	f.setBundle(next.cert, f.ca.cert)
	waitFor(t, 10*time.Second, "the new bundle on disk", func() bool { return len(readBundle()) == 2 })

	// A bundle that would cut the agent off is ignored.
	f.setBundle(next.cert)
	waitFor(t, 10*time.Second, "the bad bundle to be ignored", func() bool { return log.count("ignoring trust bundle") >= 1 })
	if got := readBundle(); len(got) != 2 {
		t.Fatalf("bundle.pem has %d certificates after a bad bundle; want the 2 of the good one", len(got))
	}
	r.mustBeRunning(t)
}

// TestConfigStreamCarriesTrustBundle: an agent that syncs config asks
// for the trust bundle in its config stream's Hello and installs each one
// it gets there, and opens no WatchBundle stream.
func TestConfigStreamCarriesTrustBundle(t *testing.T) {
	f := startFakeCP(t)
	root, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.signingRoot = root
	cfg, _ := config(t, f, f.newToken())
	r := start(t, cfg)
	select {
	case h := <-f.hellos:
		if !h.WantTrustBundle {
			t.Fatalf("Hello %v does not ask for the trust bundle", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no config stream")
	}
	next := newTestCA(t)
	f.setBundle(next.cert, f.ca.cert)
	bundlePath := filepath.Join(cfg.Dir, "identity", "bundle.pem")
	waitFor(t, 10*time.Second, "the new bundle on disk", func() bool {
		b, err := os.ReadFile(bundlePath)
		if err != nil {
			return false
		}
		cs, err := certs.ParseCertsPEM(b)
		return err == nil && len(cs) == 2
	})
	if n := f.watchCount(agentIDIn(t, cfg.Dir)); n != 0 {
		t.Errorf("the agent opened %d WatchBundle streams; want none", n)
	}
	r.mustBeRunning(t)
}

func TestReconnectsAfterStreamEnds(t *testing.T) {
	f := startFakeCP(t)
	cfg, log := config(t, f, f.newToken())
	r, agent := enrolledDaemon(t, f, cfg)
	for i := 2; i <= 4; i++ {
		f.drop()
		waitFor(t, 10*time.Second, "a new bundle stream", func() bool { return f.watchCount(agent) >= i })
	}
	if n := log.count("control plane stream ended; reconnecting"); n < 3 {
		t.Fatalf("log has %d reconnects; want at least 3", n)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: got %v; want nil", err)
	}
}

func TestBackoff(t *testing.T) {
	for _, maxBackoff := range []time.Duration{0, 5 * time.Second} {
		d, err := New(Config{Addr: "x", Dir: "y", MaxBackoff: maxBackoff})
		if err != nil {
			t.Fatal(err)
		}
		for attempt := range 40 {
			ceil := min(time.Second<<min(attempt, 10), d.cfg.MaxBackoff)
			seen := map[time.Duration]bool{}
			for range 200 {
				got := d.backoff(attempt)
				if got <= 0 || got > ceil {
					t.Fatalf("max %v: backoff(%d) = %v; want in (0, %v]", maxBackoff, attempt, got, ceil)
				}
				seen[got] = true
			}
			if len(seen) < 100 {
				t.Fatalf("max %v: backoff(%d) gave %d distinct delays in 200; want full jitter", maxBackoff, attempt, len(seen))
			}
		}
	}
}
