package agentapi_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/controlplane/internal/agentapi"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// mtlsCalls are the calls that need the agent's SVID, each reduced to its
// error.
var mtlsCalls = []struct {
	name string
	call func(ctx context.Context, tb testing.TB, conn *grpc.ClientConn) error
}{
	{"RenewSVID", func(ctx context.Context, tb testing.TB, conn *grpc.ClientConn) error {
		_, csr := newCSR(tb)
		_, err := agentv1.NewIdentityServiceClient(conn).RenewSVID(ctx, &agentv1.RenewSVIDRequest{Csr: csr})
		return err
	}},
	{"WatchBundle", func(ctx context.Context, _ testing.TB, conn *grpc.ClientConn) error {
		_, _, err := watchFirst(ctx, agentv1.NewIdentityServiceClient(conn))
		return err
	}},
	{"reflection", func(ctx context.Context, _ testing.TB, conn *grpc.ClientConn) error {
		_, err := listServices(ctx, conn)
		return err
	}},
}

// TestMTLSRefused presents every kind of wrong client certificate. Those
// go-spiffe must refuse fail the handshake; those that verify but do not
// belong to a registered, unrevoked agent fail the call. Either way no
// call is served, nothing is registered and no SVID is renewed.
func TestMTLSRefused(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			// The CA starts three hours in the past so that the test can
			// issue an SVID that has already expired.
			caClock := &clock{offset: -3 * time.Hour}
			e := start(t, options{StoreURL: b.URL(t), CAClock: caClock})
			caClock.Set(0)
			ctx := t.Context()

			good := e.enrollAgent(t, e.DP.ID)
			victim := e.enrollAgent(t, e.DP.ID)
			revoked := e.enrollAgent(t, e.DP.ID)
			if _, err := e.Store.RevokeAgent(ctx, admin, "", revoked.Resp.AgentId, "test"); err != nil {
				t.Fatalf("RevokeAgent: %v", err)
			}
			tenantB, err := e.Store.CreateTenant(ctx, admin, store.Tenant{Name: "other"})
			if err != nil {
				t.Fatal(err)
			}
			dpB := e.newDataPlane(t, tenantB.ID, "dp-b")
			dpA2 := e.newDataPlane(t, e.Tenant.ID, "dp-2")

			otherCA, err := ca.Open(ca.Config{Dir: filepath.Join(t.TempDir(), "other-ca"), TrustDomain: td})
			if err != nil {
				t.Fatal(err)
			}
			otherTDCA, err := ca.Open(ca.Config{Dir: filepath.Join(t.TempDir(), "other-td-ca"), TrustDomain: otherTD})
			if err != nil {
				t.Fatal(err)
			}
			caClock.Set(-2 * time.Hour)
			expired := issue(t, e.CA, victim.ID, 10*time.Minute)
			caClock.Set(2 * time.Hour)
			notYetValid := issue(t, e.CA, victim.ID, 10*time.Minute)
			caClock.Set(0)
			if na := expired.Certificates[0].NotAfter; !na.Before(time.Now()) {
				t.Fatalf("the expired SVID's NotAfter %v is not past", na)
			}

			victimAg, err := e.Store.GetAgent(ctx, "", victim.Resp.AgentId)
			if err != nil {
				t.Fatal(err)
			}
			agents := e.agentCount(t)

			for _, tc := range []struct {
				name string
				// svid is the client certificate; nil presents none.
				svid *x509svid.SVID
				// handshake: the server accepts the TLS handshake.
				handshake bool
				// code is what every call gets.
				code codes.Code
			}{
				{name: "valid SVID (control)", svid: good.Src.svid, handshake: true, code: codes.OK},
				{name: "no client certificate", handshake: true, code: codes.Unauthenticated},
				{name: "SVID from another CA of the same trust domain", svid: issue(t, otherCA, victim.ID, time.Hour), code: codes.Unavailable},
				{name: "SVID of another trust domain", svid: issue(t, otherTDCA, agentID(t, otherTD, e.Tenant.ID, e.DP.ID, victim.Resp.AgentId), time.Hour), code: codes.Unavailable},
				{name: "expired SVID", svid: expired, code: codes.Unavailable},
				{name: "SVID not valid yet", svid: notYetValid, code: codes.Unavailable},
				{name: "unregistered agent", svid: issue(t, e.CA, agentID(t, td, e.Tenant.ID, e.DP.ID, uuid.NewString()), time.Hour), handshake: true, code: codes.PermissionDenied},
				{name: "registered agent under another tenant and data plane", svid: issue(t, e.CA, agentID(t, td, tenantB.ID, dpB.ID, victim.Resp.AgentId), time.Hour), handshake: true, code: codes.PermissionDenied},
				{name: "registered agent under another data plane", svid: issue(t, e.CA, agentID(t, td, e.Tenant.ID, dpA2.ID, victim.Resp.AgentId), time.Hour), handshake: true, code: codes.PermissionDenied},
				{name: "the control plane's own identity", svid: issue(t, e.CA, certs.ControlPlaneID(td), time.Hour), handshake: true, code: codes.PermissionDenied},
				{name: "revoked agent", svid: revoked.Src.svid, handshake: true, code: codes.PermissionDenied},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var conf *tls.Config
					if tc.svid == nil {
						conf = e.serverAuthTLS()
					} else {
						conf = mtlsTLS(newSource(tc.svid, e.CA.Bundle()))
					}
					err := e.rawHandshake(conf)
					if tc.handshake && err != nil {
						t.Errorf("TLS handshake: %v; want it accepted", err)
					}
					if !tc.handshake && err == nil {
						t.Errorf("TLS handshake accepted; want the client certificate refused")
					}
					if err != nil {
						t.Logf("handshake refused: %v", err)
					}
					conn := e.dial(t, conf)
					for _, c := range mtlsCalls {
						t.Run(c.name, func(t *testing.T) {
							ctx, cancel := context.WithTimeout(ctx, waitLimit)
							defer cancel()
							err := c.call(ctx, t, conn)
							wantCode(t, err, tc.code)
							if err != nil {
								t.Logf("refused: %v", err)
							}
						})
					}
				})
			}

			if got := e.agentCount(t); got != agents {
				t.Errorf("got %d agents; want %d", got, agents)
			}
			after, err := e.Store.GetAgent(ctx, "", victim.Resp.AgentId)
			if err != nil {
				t.Fatal(err)
			}
			if !after.SVIDExpireTime.Equal(victimAg.SVIDExpireTime) || after.RevokeTime != nil {
				t.Errorf("the agent whose id the forged SVIDs carry changed: %+v; was %+v", after, victimAg)
			}
		})
	}
}

// listServices lists the services the server's reflection offers.
func listServices(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// Send reports io.EOF when the server has already ended the stream (a
	// refusal can be that quick); Recv then returns the real status.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, stream.CloseSend()
}

func TestReflection(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	names, err := listServices(t.Context(), e.dialMTLS(t, a.Src))
	if err != nil {
		t.Fatalf("reflection over mTLS: %v", err)
	}
	for _, want := range []string{"cairn.agent.v1.EnrollmentService", "cairn.agent.v1.IdentityService"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v; want it to include %s", names, want)
		}
	}
}

// TestMaxConcurrentStreams fills one connection with WatchBundle streams:
// the next one waits for a free slot instead of being served.
func TestMaxConcurrentStreams(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	client := agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src))
	cancels := make([]context.CancelFunc, agentapi.DefaultMaxConcurrentStreams)
	for i := range cancels {
		ctx, cancel := context.WithCancel(t.Context())
		cancels[i] = cancel
		if _, _, err := watchFirst(ctx, client); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	if n := e.Server.OpenStreams(); n != agentapi.DefaultMaxConcurrentStreams {
		t.Errorf("server tracks %d streams; want %d", n, agentapi.DefaultMaxConcurrentStreams)
	}

	// The extra stream cannot start: the wait ends only at its deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, _, err := watchFirst(ctx, client)
	wantCode(t, err, codes.DeadlineExceeded)

	// A freed slot lets the next one in.
	cancels[0]()
	ctx, cancel = context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	if _, _, err := watchFirst(ctx, client); err != nil {
		t.Errorf("stream after one closed: %v; want it served", err)
	}
}
