package agentapi_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/controlplane/internal/agentapi"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// tokenRefusal is the one message every join token refusal carries, so a
// caller cannot tell an unknown token from a used or expired one.
const tokenRefusal = "join token is invalid, used or expired"

func TestEnroll(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := start(t, options{StoreURL: b.URL(t)})
			ctx := t.Context()
			tok, tokID := e.joinToken(t, e.DP.ID, time.Hour)
			key, csr := newCSR(t)
			resp, err := e.enroll.Enroll(ctx, &agentv1.EnrollRequest{JoinToken: tok, Csr: csr, AgentVersion: "v1.2.3", Hostname: "node-1"})
			if err != nil {
				t.Fatalf("Enroll: %v", err)
			}

			if err := uuid.Validate(resp.AgentId); err != nil {
				t.Errorf("agent id %q: %v; want a UUID", resp.AgentId, err)
			}
			if resp.TenantId != e.Tenant.ID || resp.DataPlaneId != e.DP.ID {
				t.Errorf("got tenant %q, data plane %q; want %q, %q", resp.TenantId, resp.DataPlaneId, e.Tenant.ID, e.DP.ID)
			}
			wantID := "spiffe://cairn.test/tenant/" + e.Tenant.ID + "/dataplane/" + e.DP.ID + "/agent/" + resp.AgentId
			if resp.SpiffeId != wantID {
				t.Errorf("got spiffe id %q; want %q", resp.SpiffeId, wantID)
			}
			if !bytes.Equal(resp.SigningRootKey, e.Signer.RootPublicKey()) {
				t.Errorf("got signing root key %x; want the signer's %x", resp.SigningRootKey, []byte(e.Signer.RootPublicKey()))
			}

			// The SVID: a leaf for our key that verifies against the
			// returned bundle, names exactly the agent and cannot sign.
			bundleCerts := parseDERs(t, resp.Bundle)
			if diff := cmp.Diff(derList(e.CA.BundleCerts()), resp.Bundle); diff != "" {
				t.Errorf("bundle is not the CA's (-want +got):\n%s", diff)
			}
			chain := parseDERs(t, resp.SvidChain)
			if len(chain) == 0 {
				t.Fatalf("empty SVID chain")
			}
			leaf := chain[0]
			id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, bundleCerts))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if id.String() != wantID {
				t.Errorf("SVID names %s; want %s", id, wantID)
			}
			if leaf.IsCA || !leaf.BasicConstraintsValid {
				t.Errorf("leaf IsCA=%v BasicConstraintsValid=%v; want false, true", leaf.IsCA, leaf.BasicConstraintsValid)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
				t.Errorf("leaf URI SANs %v; want exactly [%s]", leaf.URIs, wantID)
			}
			if n := len(leaf.DNSNames) + len(leaf.IPAddresses) + len(leaf.EmailAddresses); n != 0 {
				t.Errorf("leaf has %d DNS, IP or email SANs; want 0", n)
			}
			if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
				t.Errorf("SVID is not for the key in the CSR")
			}
			if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
				t.Errorf("leaf ExtKeyUsage %v lacks client auth", leaf.ExtKeyUsage)
			}

			// The registration.
			ag, err := e.Store.GetAgent(ctx, "", resp.AgentId)
			if err != nil {
				t.Fatalf("GetAgent: %v", err)
			}
			if ag.TenantID != e.Tenant.ID || ag.DataPlaneID != e.DP.ID || ag.SPIFFEID != wantID ||
				ag.AgentVersion != "v1.2.3" || ag.Hostname != "node-1" || ag.RevokeTime != nil {
				t.Errorf("registered %+v; want tenant %s, data plane %s, %s, v1.2.3, node-1, unrevoked", ag, e.Tenant.ID, e.DP.ID, wantID)
			}
			if d := ag.SVIDExpireTime.Sub(leaf.NotAfter).Abs(); d > time.Minute {
				t.Errorf("registered SVID expiry %v is %v from the leaf's NotAfter %v", ag.SVIDExpireTime, d, leaf.NotAfter)
			}
			evs := e.auditEvents(t, "agent.enroll")
			if len(evs) != 1 || evs[0].ResourceID != resp.AgentId || evs[0].Actor != "agent:"+resp.AgentId || evs[0].TenantID != e.Tenant.ID {
				t.Errorf("agent.enroll audit events %+v; want one for agent %s by itself", evs, resp.AgentId)
			}
			for _, ev := range e.auditEvents(t, "agent.enroll.refused") {
				t.Errorf("successful enrollment left a refusal: %+v", ev)
			}
			// The token is spent.
			_, err = e.enroll.Enroll(ctx, &agentv1.EnrollRequest{JoinToken: tok, Csr: csr})
			wantCode(t, err, codes.Unauthenticated)
			if evs := e.auditEvents(t, "agent.enroll.refused"); len(evs) != 1 || evs[0].ResourceID != tokID {
				t.Errorf("second use of the token: refusals %+v; want one for %s", evs, tokID)
			}

			// Over mTLS with the new SVID: renew with a new key, then
			// watch the bundle.
			a := agentFromResponse(t, resp, key)
			client := agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src))
			svid2, err := renew(ctx, t, client, a.ID, a.Src.bundle)
			if err != nil {
				t.Fatalf("RenewSVID: %v", err)
			}
			if svid2.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				t.Errorf("renewed SVID has the old serial number")
			}
			ag2, err := e.Store.GetAgent(ctx, "", resp.AgentId)
			if err != nil {
				t.Fatalf("GetAgent: %v", err)
			}
			if !ag2.SVIDExpireTime.Equal(svid2.Certificates[0].NotAfter) {
				t.Errorf("registered SVID expiry %v after renewal; want the new leaf's NotAfter %v", ag2.SVIDExpireTime, svid2.Certificates[0].NotAfter)
			}
			_, msg, err := watchFirst(ctx, client)
			if err != nil {
				t.Fatalf("WatchBundle: %v", err)
			}
			want := &agentv1.WatchBundleResponse{Bundle: derList(e.CA.BundleCerts())}
			if diff := cmp.Diff(want, msg, protocmp.Transform(), protocmp.IgnoreFields(&agentv1.WatchBundleResponse{}, "time")); diff != "" {
				t.Errorf("WatchBundle first message (-want +got):\n%s", diff)
			}
			if d := time.Since(msg.GetTime().AsTime()).Abs(); msg.Time == nil || d > waitLimit {
				t.Errorf("WatchBundle time %v is %v from now", msg.GetTime(), d)
			}
		})
	}
}

// csrFor makes a CSR from tmpl signed by a new P-256 key.
func csrFor(tb testing.TB, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	key, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	return csrWithKey(tb, tmpl, key)
}

// csrTemplateURI asks for a URI SAN.
func csrTemplateURI(u *url.URL) *x509.CertificateRequest {
	return &x509.CertificateRequest{URIs: []*url.URL{u}}
}

// csrTemplateCA asks to be a CA with a critical basicConstraints
// extension, cA TRUE.
func csrTemplateCA(tb testing.TB) *x509.CertificateRequest {
	tb.Helper()
	v, err := asn1.Marshal(struct{ IsCA bool }{true})
	if err != nil {
		tb.Fatal(err)
	}
	return &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v}}}
}

func csrWithKey(tb testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func TestEnrollRefused(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			storeClock := &clock{}
			e := start(t, options{StoreURL: b.URL(t), StoreClock: storeClock})
			ctx := t.Context()
			goodCSR := func() []byte { _, csr := newCSR(t); return csr }
			validToken := func() (string, string) { return e.joinToken(t, e.DP.ID, time.Hour) }

			for _, tc := range []struct {
				name string
				// setup does what must happen first and returns the
				// refused request and the token id the refusal is
				// audited under ("" for a token that does not parse).
				setup func(t *testing.T) (*agentv1.EnrollRequest, string)
				code  codes.Code
				// tokenSurvives: the refusal must not spend the token.
				tokenSurvives bool
			}{
				{
					name: "reused token",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						if _, err := e.enroll.Enroll(ctx, &agentv1.EnrollRequest{JoinToken: tok, Csr: goodCSR()}); err != nil {
							t.Fatalf("first Enroll: %v", err)
						}
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: goodCSR()}, id
					},
					code: codes.Unauthenticated,
				},
				{
					name: "expired token",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := e.joinToken(t, e.DP.ID, time.Minute)
						storeClock.Advance(time.Minute + time.Second)
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: goodCSR()}, id
					},
					code: codes.Unauthenticated,
				},
				{
					name: "token of a deleted data plane",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						dp := e.newDataPlane(t, e.Tenant.ID, "doomed")
						tok, id := e.joinToken(t, dp.ID, time.Hour)
						if err := e.Store.DeleteDataPlane(ctx, admin, "", dp.ID, ""); err != nil {
							t.Fatalf("DeleteDataPlane: %v", err)
						}
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: goodCSR()}, id
					},
					code: codes.Unauthenticated,
				},
				{
					name: "unknown token",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						sec := auth.NewJoinSecret()
						return &agentv1.EnrollRequest{JoinToken: sec.String(), Csr: goodCSR()}, sec.ID
					},
					code: codes.Unauthenticated,
				},
				{
					name: "wrong secret with a right token id",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						_, id := validToken()
						other := auth.NewJoinSecret()
						forged := strings.Replace(other.String(), other.ID, id, 1)
						return &agentv1.EnrollRequest{JoinToken: forged, Csr: goodCSR()}, id
					},
					code: codes.Unauthenticated,
				},
				{
					name: "malformed token: garbage",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						return &agentv1.EnrollRequest{JoinToken: "cairnjoin_garbage", Csr: goodCSR()}, ""
					},
					code: codes.Unauthenticated,
				},
				{
					name: "malformed token: empty",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						return &agentv1.EnrollRequest{Csr: goodCSR()}, ""
					},
					code: codes.Unauthenticated,
				},
				{
					name: "malformed token: an admin API token",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						return &agentv1.EnrollRequest{JoinToken: auth.NewSecret().String(), Csr: goodCSR()}, ""
					},
					code: codes.Unauthenticated,
				},
				{
					name: "malformed token: truncated secret",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, _ := validToken()
						return &agentv1.EnrollRequest{JoinToken: tok[:len(tok)-20], Csr: goodCSR()}, ""
					},
					code: codes.Unauthenticated,
				},
				{
					name: "csr names another agent",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						other := agentID(t, td, e.Tenant.ID, e.DP.ID, uuid.NewString())
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: csrFor(t, csrTemplateURI(other.URL()))}, id
					},
					code:          codes.PermissionDenied,
					tokenSurvives: true,
				},
				{
					name: "csr names the control plane",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: csrFor(t, csrTemplateURI(certs.ControlPlaneID(td).URL()))}, id
					},
					code:          codes.PermissionDenied,
					tokenSurvives: true,
				},
				{
					name: "csr names another trust domain",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						other := agentID(t, otherTD, e.Tenant.ID, e.DP.ID, uuid.NewString())
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: csrFor(t, csrTemplateURI(other.URL()))}, id
					},
					code:          codes.PermissionDenied,
					tokenSurvives: true,
				},
				{
					name: "csr with a DNS SAN",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: csrFor(t, &x509.CertificateRequest{DNSNames: []string{"localhost"}})}, id
					},
					code:          codes.PermissionDenied,
					tokenSurvives: true,
				},
				{
					name: "csr asks to be a CA",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: csrFor(t, csrTemplateCA(t))}, id
					},
					code:          codes.PermissionDenied,
					tokenSurvives: true,
				},
				{
					name: "garbage csr",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: []byte("not a certificate request")}, id
					},
					code:          codes.InvalidArgument,
					tokenSurvives: true,
				},
				{
					name: "csr with a bad signature",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						csr := goodCSR()
						csr[len(csr)-1] ^= 0xff
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: csr}, id
					},
					code:          codes.InvalidArgument,
					tokenSurvives: true,
				},
				{
					name: "csr with a P-384 key",
					setup: func(t *testing.T) (*agentv1.EnrollRequest, string) {
						tok, id := validToken()
						key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
						if err != nil {
							t.Fatal(err)
						}
						return &agentv1.EnrollRequest{JoinToken: tok, Csr: csrWithKey(t, &x509.CertificateRequest{}, key)}, id
					},
					code:          codes.InvalidArgument,
					tokenSurvives: true,
				},
			} {
				t.Run(tc.name, func(t *testing.T) {
					req, tokID := tc.setup(t)
					agents := e.agentCount(t)
					before := e.auditEvents(t, "agent.enroll.refused")

					_, err := e.enroll.Enroll(ctx, req)
					wantCode(t, err, tc.code)
					if tc.code == codes.Unauthenticated {
						if got := status.Convert(err).Message(); got != tokenRefusal {
							t.Errorf("got message %q; want %q for every token refusal", got, tokenRefusal)
						}
					}
					if got := e.agentCount(t); got != agents {
						t.Errorf("got %d agents after the refusal; want %d", got, agents)
					}
					evs := newEvents(before, e.auditEvents(t, "agent.enroll.refused"))
					if len(evs) != 1 {
						t.Fatalf("got %d new refusal events %+v; want 1", len(evs), evs)
					}
					ev := evs[0]
					if ev.ResourceType != "join_token" || ev.ResourceID != tokID || ev.Actor != "anonymous" || ev.Detail == "" {
						t.Errorf("refusal event %+v; want join_token %q by anonymous with a detail", ev, tokID)
					}
					if secret := req.JoinToken[strings.LastIndex(req.JoinToken, "_")+1:]; len(secret) >= 8 && strings.Contains(ev.Detail+ev.ResourceID, secret) {
						t.Errorf("refusal event %+v holds the token secret", ev)
					}

					if tc.tokenSurvives {
						if _, err := e.enroll.Enroll(ctx, &agentv1.EnrollRequest{JoinToken: req.JoinToken, Csr: goodCSR()}); err != nil {
							t.Errorf("Enroll with the same token and a good CSR after the refusal: %v; want the token unspent", err)
						}
					}
				})
			}
		})
	}
}

// TestEnrollOneTokenConcurrently races many agents for one join token:
// exactly one may enroll.
func TestEnrollOneTokenConcurrently(t *testing.T) {
	const n = 20
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := start(t, options{StoreURL: b.URL(t)})
			ctx := t.Context()
			tok, tokID := e.joinToken(t, e.DP.ID, time.Hour)
			clients := make([]agentv1.EnrollmentServiceClient, n)
			for i := range clients {
				conn := e.dialServerAuth(t)
				waitReady(t, conn)
				clients[i] = agentv1.NewEnrollmentServiceClient(conn)
			}
			resps := make([]*agentv1.EnrollResponse, n)
			errs := make([]error, n)
			csrs := make([][]byte, n)
			for i := range csrs {
				_, csrs[i] = newCSR(t)
			}
			gate := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-gate
					resps[i], errs[i] = clients[i].Enroll(ctx, &agentv1.EnrollRequest{JoinToken: tok, Csr: csrs[i]})
				})
			}
			close(gate)
			wg.Wait()

			var won []*agentv1.EnrollResponse
			for i, err := range errs {
				switch status.Code(err) {
				case codes.OK:
					won = append(won, resps[i])
				case codes.Unauthenticated:
				default:
					t.Errorf("enrollment %d: got %v; want OK or Unauthenticated", i, err)
				}
			}
			if len(won) != 1 {
				t.Fatalf("%d enrollments succeeded; want exactly 1", len(won))
			}
			as, _, err := e.Store.ListAgents(ctx, store.Filter{}, store.AgentFilter{DataPlaneID: e.DP.ID}, store.Page{Size: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(as) != 1 || as[0].ID != won[0].AgentId {
				t.Errorf("registered agents %+v; want only %s", as, won[0].AgentId)
			}
			var refused int
			for _, ev := range e.auditEvents(t, "agent.enroll.refused") {
				if ev.ResourceID == tokID {
					refused++
				}
			}
			if refused != n-1 {
				t.Errorf("got %d refusal events for the token; want %d", refused, n-1)
			}
		})
	}
}

// waitReady connects conn and waits until it is ready.
func waitReady(tb testing.TB, conn *grpc.ClientConn) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			tb.Fatalf("connection not ready within %v: %v", waitLimit, s)
		}
	}
}

// TestServingSVID checks what an enrolling agent sees before it trusts
// anything: the control plane's SVID with the signing CA in the chain, so
// a CA pin alone is enough.
func TestServingSVID(t *testing.T) {
	e := start(t, options{})
	conn, err := tls.Dial("tcp", e.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // inspected below
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	if len(chain) < 2 {
		t.Fatalf("got a chain of %d certificates; want the SVID and its CA", len(chain))
	}
	id, _, err := x509svid.Verify(chain[:1], e.CA.Bundle())
	if err != nil {
		t.Fatalf("serving SVID does not verify against the bundle: %v", err)
	}
	if id != certs.ControlPlaneID(td) {
		t.Errorf("serving SVID names %s; want %s", id, certs.ControlPlaneID(td))
	}
	if ca, ok := certs.MatchPin(chain[1:], e.CA.Pin()); !ok || !ca.Equal(e.CA.Active()) {
		t.Errorf("the active CA's pin matches no certificate in the served chain")
	}
	leaf := chain[0]
	if leaf.IsCA || len(leaf.URIs) != 1 {
		t.Errorf("serving leaf IsCA=%v with URIs %v; want a non-CA with one URI SAN", leaf.IsCA, leaf.URIs)
	}
	if !slices.Contains(leaf.DNSNames, "localhost") || !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
		t.Errorf("serving leaf names %v %v; want localhost and 127.0.0.1 by default", leaf.DNSNames, leaf.IPAddresses)
	}
}

func TestNewRequiresConfig(t *testing.T) {
	st, err := store.Open(t.Context(), store.Config{URL: storetest.SQLiteURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	authority, err := ca.Open(ca.Config{Dir: filepath.Join(t.TempDir(), "ca"), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	full := agentapi.Config{Listener: lis, Store: st, CA: authority, TrustDomain: td}
	for _, tc := range []struct {
		name string
		drop func(*agentapi.Config)
	}{
		{"no listener", func(c *agentapi.Config) { c.Listener = nil }},
		{"no store", func(c *agentapi.Config) { c.Store = nil }},
		{"no CA", func(c *agentapi.Config) { c.CA = nil }},
		{"no trust domain", func(c *agentapi.Config) { c.TrustDomain = spiffeid.TrustDomain{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := full
			tc.drop(&cfg)
			if s, err := agentapi.New(cfg); err == nil || s != nil {
				t.Errorf("got %v, %v; want nil and an error", s, err)
			}
		})
	}
}
