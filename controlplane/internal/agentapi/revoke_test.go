package agentapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// TestRevocationClosesStreams revokes an agent with an open WatchBundle
// stream and waits for the stream to end with PermissionDenied. The
// package promises about a second (RevocationPoll is 250ms by default,
// 50ms here); the test allows waitLimit so a loaded machine passes, and
// logs what it took.
func TestRevocationClosesStreams(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := start(t, options{StoreURL: b.URL(t)})
			for _, tc := range []struct {
				name string
				// revoke revokes the agent, which is in its own data plane
				// with no clusters.
				revoke func(t *testing.T, a *testAgent)
			}{
				{"RevokeAgent", func(t *testing.T, a *testAgent) {
					if _, err := e.Store.RevokeAgent(t.Context(), admin, "", a.Resp.AgentId, "compromised"); err != nil {
						t.Fatalf("RevokeAgent: %v", err)
					}
				}},
				{"DeleteDataPlane", func(t *testing.T, a *testAgent) {
					if err := e.Store.DeleteDataPlane(t.Context(), admin, "", a.Resp.DataPlaneId, ""); err != nil {
						t.Fatalf("DeleteDataPlane: %v", err)
					}
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					dp := e.newDataPlane(t, e.Tenant.ID, "dp-"+tc.name)
					a := e.enrollAgent(t, dp.ID)
					// A bystander in the tenant's first data plane keeps its
					// stream.
					bystander := e.enrollAgent(t, e.DP.ID)
					ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
					defer cancel()
					conn := e.dialMTLS(t, a.Src)
					client := agentv1.NewIdentityServiceClient(conn)
					stream, _, err := watchFirst(ctx, client)
					if err != nil {
						t.Fatalf("WatchBundle: %v", err)
					}
					bystanderClient := agentv1.NewIdentityServiceClient(e.dialMTLS(t, bystander.Src))
					if _, _, err := watchFirst(ctx, bystanderClient); err != nil {
						t.Fatalf("bystander WatchBundle: %v", err)
					}
					if n := e.Server.OpenStreams(); n != 2 {
						t.Fatalf("server tracks %d streams; want 2", n)
					}

					began := time.Now()
					tc.revoke(t, a)
					_, err = stream.Recv()
					took := time.Since(began)
					if status.Code(err) == codes.DeadlineExceeded {
						t.Fatalf("stream still open %v after revocation", waitLimit)
					}
					wantCode(t, err, codes.PermissionDenied)
					t.Logf("revocation closed the stream after %v (%v)", took, err)

					ag, err := e.Store.GetAgent(t.Context(), "", a.Resp.AgentId)
					if err != nil || ag.RevokeTime == nil {
						t.Errorf("agent after revocation: %+v, %v; want it revoked", ag, err)
					}
					// The bystander's stream is the only one left, and it is
					// still served: the server removes a closed stream before
					// the client sees its status.
					if n := e.Server.OpenStreams(); n != 1 {
						t.Errorf("server tracks %d streams after the revocation; want the bystander's 1", n)
					}
					if _, err := renew(ctx, t, bystanderClient, bystander.ID, bystander.Src.bundle); err != nil {
						t.Errorf("bystander RenewSVID: %v", err)
					}

					// Every later call of the revoked agent is refused, on the
					// open connection as on a new one.
					for _, c := range mtlsCalls {
						if err := c.call(ctx, t, conn); status.Code(err) != codes.PermissionDenied {
							t.Errorf("%s on the old connection: got %v; want PermissionDenied", c.name, err)
						}
						if err := c.call(ctx, t, e.dialMTLS(t, a.Src)); status.Code(err) != codes.PermissionDenied {
							t.Errorf("%s on a new connection: got %v; want PermissionDenied", c.name, err)
						}
					}
				})
			}
		})
	}
}

// TestRevocationEndsRememberedRegistration: an agent's calls do not each
// read its registration (the server remembers it), yet once the agent is
// revoked its calls are refused within the revocation poll, even when it
// never opened a stream.
func TestRevocationEndsRememberedRegistration(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	client := agentv1.NewReportServiceClient(e.dialMTLS(t, a.Src))
	report := func(seq int64) error {
		_, err := client.Report(t.Context(), &agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{statusItem(seq, 1)}})
		return err
	}
	for seq := int64(1); seq <= 3; seq++ {
		if err := report(seq); err != nil {
			t.Fatalf("Report %d: %v", seq, err)
		}
	}
	if _, err := e.Store.RevokeAgent(t.Context(), admin, "", a.Resp.AgentId, "compromised"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for seq := int64(4); ; seq++ {
		err := report(seq)
		if status.Code(err) == codes.PermissionDenied {
			break
		}
		if err != nil {
			t.Fatalf("Report after revocation: %v; want PermissionDenied or, briefly, success", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Report still accepted %v after the revocation", waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
