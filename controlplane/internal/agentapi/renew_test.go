package agentapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// TestRenewalKeepsConnections renews an agent's SVID while it has a
// WatchBundle stream open: the open connection keeps working (old streams
// and new ones), a new connection presents the new SVID, and when the CA
// rotates every stream, old or new, is told.
func TestRenewalKeepsConnections(t *testing.T) {
	// The CA's clock is moved to its rotation point at the end. CATTL is
	// the shortest the CA allows with its default 24h MaxSVIDTTL.
	const caTTL = 6 * 24 * time.Hour
	caClock := &clock{}
	e := start(t, options{CAClock: caClock, CATTL: caTTL})
	ctx, cancel := context.WithTimeout(t.Context(), 4*waitLimit)
	defer cancel()
	a := e.enrollAgent(t, e.DP.ID)
	oldLeaf := a.Src.svid.Certificates[0]

	conn1 := e.dialMTLS(t, a.Src)
	client1 := agentv1.NewIdentityServiceClient(conn1)
	streamA, first, err := watchFirst(ctx, client1)
	if err != nil {
		t.Fatalf("WatchBundle before renewal: %v", err)
	}
	if got := len(first.Bundle); got != 1 {
		t.Fatalf("bundle has %d CAs; want 1 before rotation", got)
	}

	svid2, err := renew(ctx, t, client1, a.ID, a.Src.bundle)
	if err != nil {
		t.Fatalf("RenewSVID: %v", err)
	}
	a.Src.set(svid2)

	// The old connection still carries the old handshake, and is served.
	streamB, _, err := watchFirst(ctx, client1)
	if err != nil {
		t.Fatalf("WatchBundle on the old connection after renewal: %v", err)
	}
	if _, err := renew(ctx, t, client1, a.ID, a.Src.bundle); err != nil {
		t.Errorf("RenewSVID on the old connection after renewal: %v", err)
	}

	// A new connection presents the new SVID and is served too.
	client2 := agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src))
	streamC, _, err := watchFirst(ctx, client2)
	if err != nil {
		t.Fatalf("WatchBundle on a new connection: %v", err)
	}
	if got := a.Src.lastServed(); got == nil || !got.Equal(svid2.Certificates[0]) || got.Equal(oldLeaf) {
		t.Errorf("the new connection did not present the renewed SVID")
	}
	if n := e.Server.OpenStreams(); n != 3 {
		t.Errorf("server tracks %d streams; want 3", n)
	}

	// Every open stream must receive the next CA.
	want := prepareNextCA(t, e, caClock, caTTL)
	for name, s := range map[string]grpc.ServerStreamingClient[agentv1.WatchBundleResponse]{
		"stream opened before renewal":                streamA,
		"stream opened after renewal, old connection": streamB,
		"stream on the new connection":                streamC,
	} {
		msg, err := s.Recv()
		if err != nil {
			t.Errorf("%s: %v; want the new bundle", name, err)
			continue
		}
		if diff := cmp.Diff(want, msg.Bundle); diff != "" {
			t.Errorf("%s: bundle after rotation (-want +got):\n%s", name, diff)
		}
	}
}

// TestRenewSVIDRefusesBadCSR checks that RenewSVID vets the CSR as
// Enroll does and that a refused renewal records nothing.
func TestRenewSVIDRefusesBadCSR(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	client := agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src))
	other := e.enrollAgent(t, e.DP.ID)
	before, err := e.Store.GetAgent(t.Context(), "", a.Resp.AgentId)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		csr  []byte
		code codes.Code
	}{
		{"empty csr", nil, codes.InvalidArgument},
		{"garbage csr", []byte("garbage"), codes.InvalidArgument},
		{"csr names another agent", csrFor(t, csrTemplateURI(other.ID.URL())), codes.PermissionDenied},
		{"csr asks to be a CA", csrFor(t, csrTemplateCA(t)), codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.RenewSVID(t.Context(), &agentv1.RenewSVIDRequest{Csr: tc.csr})
			wantCode(t, err, tc.code)
		})
	}
	after, err := e.Store.GetAgent(t.Context(), "", a.Resp.AgentId)
	if err != nil {
		t.Fatal(err)
	}
	if !after.SVIDExpireTime.Equal(before.SVIDExpireTime) {
		t.Errorf("refused renewals moved the registered SVID expiry from %v to %v", before.SVIDExpireTime, after.SVIDExpireTime)
	}
}

// TestConfigStreamTrustBundle: an agent that asks for the trust bundle in
// its Hello gets it on the config stream before anything else and again
// when the CA rotates, so it needs no WatchBundle stream; an agent that
// does not ask (one older than the field) never gets one, which it could
// not parse.
func TestConfigStreamTrustBundle(t *testing.T) {
	const caTTL = 6 * 24 * time.Hour
	caClock := &clock{}
	e := start(t, options{CAClock: caClock, CATTL: caTTL, HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	asks := openStreamWithin(t, 4*waitLimit, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e1", WantTrustBundle: true}, ver)
	m, typ := asks.next()
	if typ != trustBundleType {
		t.Fatalf("first message %s; want the trust bundle", typ)
	}
	if diff := cmp.Diff(derList(e.CA.BundleCerts()), m.GetTrustBundle().GetCertificates()); diff != "" {
		t.Errorf("trust bundle (-want +got):\n%s", diff)
	}
	if m.Nonce != "" {
		t.Errorf("trust bundle nonce %q; want none (it is not acknowledged)", m.Nonce)
	}
	if _, typ := asks.next(); typ != sign.KeySetPayloadType {
		t.Fatalf("second message %s; want the key set", typ)
	}
	other := openStreamWithin(t, 4*waitLimit, e, e.enrollAgent(t, e.DP.ID), &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e2"}, sign.NewVerifier(e.Signer.RootPublicKey()))
	if _, typ := other.next(); typ != sign.KeySetPayloadType {
		t.Fatalf("an agent that did not ask: first message %s; want the key set", typ)
	}

	want := prepareNextCA(t, e, caClock, caTTL)
	m, typ = asks.next()
	if typ != trustBundleType {
		t.Fatalf("after the rotation got %s; want the new trust bundle", typ)
	}
	if diff := cmp.Diff(want, m.GetTrustBundle().GetCertificates()); diff != "" {
		t.Errorf("trust bundle after rotation (-want +got):\n%s", diff)
	}
	// The other agent's next message is the next delta, not a bundle.
	putDoc(t, e, "a")
	if m, typ := other.nextUpdate(); typ != fanout.DeltaType || m.Nonce != "1" {
		t.Fatalf("an agent that did not ask got %s nonce %q after the rotation; want delta 1", typ, m.Nonce)
	}
	if m, typ := asks.nextUpdate(); typ != fanout.DeltaType || m.Nonce != "1" {
		t.Fatalf("the agent that asked got %s nonce %q; want delta 1", typ, m.Nonce)
	}
}

// prepareNextCA moves the CA's clock to half its life, where MaybeRotate
// prepares the next CA and publishes it in the bundle, and returns the
// bundle (DER).
func prepareNextCA(tb testing.TB, e *env, caClock *clock, caTTL time.Duration) [][]byte {
	tb.Helper()
	caClock.Advance(caTTL/2 + time.Minute)
	e.Server.MaintainCA()
	want := derList(e.CA.BundleCerts())
	if len(want) != 2 {
		tb.Fatalf("CA bundle has %d CAs after MaintainCA; want 2 (active and prepared)", len(want))
	}
	return want
}
