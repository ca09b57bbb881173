package agentapi_test

// Regression tests for bugs the suite found in the first agent API: each
// failed before its fix.

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/agentapi"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
	"github.com/cairnhq/cairn/internal/storetest"
)

// Shutting down must not wait for WatchBundle or config streams, which
// only end when the agent goes away: with any agent connected,
// GracefulStop never finishes and Run sits out its 10 s fallback, polling
// no revocations meanwhile.
func TestShutdownEndsStreams(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	stream, _, err := watchFirst(t.Context(), agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src)))
	if err != nil {
		t.Fatal(err)
	}
	b := e.enrollAgent(t, e.DP.ID)
	c := openStreamWithin(t, waitLimit, e, b, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, sign.NewVerifier(e.Signer.RootPublicKey()))
	c.next() // the key set
	took := e.Stop()
	_, err = stream.Recv()
	_, cerr := c.stream.Recv()
	t.Logf("Run returned after %v; the streams ended with %v and %v", took, err, cerr)
	// Generous: an idle server stops in milliseconds; the bug makes it 10 s.
	if took > 5*time.Second {
		t.Errorf("Run took %v to return with a WatchBundle and a config stream open; want it to end the streams and return promptly", took)
	}
	wantCode(t, err, codes.Unavailable)
	wantCode(t, cerr, codes.Unavailable)
}

// A replica must close a revoked agent's streams even if its clock is
// ahead of the replica that revoked it by more than the 5 s lookback. The
// same window, anchored to the local clock and never widened, also loses
// every revocation made while polls fail for over 5 s (a store outage
// seen by this replica only).
func TestRevocationSurvivesClockSkew(t *testing.T) {
	// This replica's clock is 6 s ahead of the store writer's.
	serverClock := &clock{offset: 6 * time.Second}
	e := start(t, options{CAClock: serverClock})
	a := e.enrollAgent(t, e.DP.ID)
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	stream, _, err := watchFirst(ctx, agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.RevokeAgent(t.Context(), admin, "", a.Resp.AgentId, "compromised"); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.PermissionDenied)
}

// Every refused enrollment is audited, but the checks Enroll makes before
// parsing the token return without a trace.
func TestEnrollRefusalsBeforeTokenAudited(t *testing.T) {
	e := start(t, options{})
	_, csr := newCSR(t)
	for _, tc := range []struct {
		name string
		req  *agentv1.EnrollRequest
	}{
		{"empty csr", &agentv1.EnrollRequest{JoinToken: "cairnjoin_x"}},
		{"hostname too long", &agentv1.EnrollRequest{JoinToken: "cairnjoin_x", Csr: csr, Hostname: strings.Repeat("h", 256)}},
		{"agent version too long", &agentv1.EnrollRequest{JoinToken: "cairnjoin_x", Csr: csr, AgentVersion: strings.Repeat("v", 101)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.auditEvents(t, "agent.enroll.refused")
			_, err := e.enroll.Enroll(t.Context(), tc.req)
			wantCode(t, err, codes.InvalidArgument)
			if evs := newEvents(before, e.auditEvents(t, "agent.enroll.refused")); len(evs) != 1 {
				t.Errorf("got %d refusal events; want 1", len(evs))
			}
		})
	}
}

// New must accept any CA that Open accepts, and reject a configuration
// whose SVIDs the CA would refuse rather than fail later at each call.
func TestNewChecksTTLsAgainstCA(t *testing.T) {
	st, err := store.Open(t.Context(), store.Config{URL: storetest.SQLiteURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		name    string
		ca      ca.Config
		svidTTL time.Duration
		wantErr bool
	}{
		{"CA with MaxSVIDTTL 1h, default SVIDTTL", ca.Config{MaxSVIDTTL: time.Hour, CATTL: 30 * 24 * time.Hour}, 0, false},
		{"SVIDTTL 48h above the CA's default 24h MaxSVIDTTL", ca.Config{}, 48 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.ca
			cfg.Dir, cfg.TrustDomain = filepath.Join(t.TempDir(), "ca"), td
			authority, err := ca.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			_, err = agentapi.New(agentapi.Config{Listener: lis, Store: st, CA: authority, TrustDomain: td, SVIDTTL: tc.svidTTL})
			if (err != nil) != tc.wantErr {
				t.Errorf("New: got %v; want error=%v", err, tc.wantErr)
			}
		})
	}
}

// An SVID's lifetime bounds what it can do, also on a connection opened
// while it was valid: otherwise a connection kept alive past NotAfter
// renews forever.
func TestSVIDExpiryOnOpenConnection(t *testing.T) {
	caClock := &clock{}
	e := start(t, options{CAClock: caClock})
	a := e.enrollAgent(t, e.DP.ID)
	// An SVID for the agent that expires in about two seconds.
	caClock.Set(-time.Hour + 2*time.Second)
	short := issue(t, e.CA, a.ID, time.Hour)
	caClock.Set(0)
	client := agentv1.NewIdentityServiceClient(e.dialMTLS(t, newSource(short, e.CA.Bundle())))
	if _, _, err := watchFirst(t.Context(), client); err != nil {
		t.Fatalf("WatchBundle while the SVID is valid: %v", err)
	}
	for notAfter := short.Certificates[0].NotAfter; !time.Now().After(notAfter.Add(time.Second)); {
		time.Sleep(100 * time.Millisecond)
	}
	_, err := renew(t.Context(), t, client, a.ID, e.CA.Bundle())
	if err == nil {
		t.Errorf("RenewSVID with an SVID that expired at %v succeeded; want it refused", short.Certificates[0].NotAfter)
	}
}
