package store_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

type enrollFixture struct {
	s      *store.Store
	tenant store.Tenant
	dp     store.DataPlane
}

func newEnrollFixture(t testing.TB, s *store.Store) enrollFixture {
	t.Helper()
	ctx := context.Background()
	tn := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
	dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"}))
	return enrollFixture{s: s, tenant: tn, dp: dp}
}

func (f enrollFixture) token(t testing.TB, secret string, ttl time.Duration) store.JoinToken {
	t.Helper()
	return must[store.JoinToken](t)(f.s.CreateJoinToken(context.Background(), actor, "", f.dp.ID, uuid.NewString(), []byte(secret), ttl))
}

// agent enrolls a new agent in the fixture's data plane with a token of
// its own.
func (f enrollFixture) agent(t testing.TB) store.Agent {
	t.Helper()
	return must[store.Agent](t)(f.s.EnrollAgent(context.Background(), enrollment(f.token(t, "s", time.Hour).ID, "s")))
}

func enrollment(tokenID, secret string) store.Enrollment {
	agentID := uuid.NewString()
	return store.Enrollment{
		JoinTokenID: tokenID,
		CheckSecret: func(h []byte) bool { return bytes.Equal(h, []byte(secret)) },
		AgentID:     agentID,
		SPIFFEID: func(tenant, dp string) (string, error) {
			return "spiffe://cairn.test/tenant/" + tenant + "/dataplane/" + dp + "/agent/" + agentID, nil
		},
		SVIDExpireTime: time.Now().Add(time.Hour),
		Issue:          func(string) error { return nil },
	}
}

func TestEnrollAgent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		jt := f.token(t, "s3cret", time.Hour)
		a := must[store.Agent](t)(s.EnrollAgent(ctx, enrollment(jt.ID, "s3cret")))
		if a.TenantID != f.tenant.ID || a.DataPlaneID != f.dp.ID || a.RevokeTime != nil {
			t.Fatalf("enrolled %+v", a)
		}
		for _, tc := range []struct {
			name string
			e    store.Enrollment
		}{
			{"reused token", enrollment(jt.ID, "s3cret")},
			{"wrong secret", enrollment(f.token(t, "right", time.Hour).ID, "wrong")},
			{"unknown token", enrollment(uuid.NewString(), "s3cret")},
			{"expired token", enrollment(f.token(t, "x", time.Microsecond).ID, "x")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				time.Sleep(time.Millisecond) // let the microsecond token lapse
				_, err := s.EnrollAgent(ctx, tc.e)
				wantErr(t, err, store.ErrJoinTokenInvalid)
				evs, _, _ := s.ListAuditEvents(ctx, store.AuditFilter{ResourceID: tc.e.JoinTokenID}, store.Page{Size: 10})
				if len(evs) == 0 || evs[0].Action != "agent.enroll.refused" || evs[0].Detail == "" {
					t.Fatalf("refusal not audited: %+v", evs)
				}
				if _, err := s.GetAgent(ctx, "", tc.e.AgentID); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("refused enrollment registered an agent: %v", err)
				}
			})
		}
		// An issue failure leaves the token usable.
		jt2 := f.token(t, "y", time.Hour)
		bad := enrollment(jt2.ID, "y")
		boom := errors.New("csr refused")
		bad.Issue = func(string) error { return boom }
		_, err := s.EnrollAgent(ctx, bad)
		wantErr(t, err, boom)
		must[store.Agent](t)(s.EnrollAgent(ctx, enrollment(jt2.ID, "y")))

		// Renewal works until revocation; revocation is visible to pollers.
		since := time.Now().Add(-time.Second)
		_, err = s.RenewAgent(ctx, a.ID, func(store.Agent) (time.Time, error) { return time.Now().Add(2 * time.Hour), nil })
		if err != nil {
			t.Fatal(err)
		}
		other := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "other"}))
		_, err = s.RevokeAgent(ctx, actor, other.ID, a.ID, "x")
		wantErr(t, err, store.ErrNotFound)
		rev := must[store.Agent](t)(s.RevokeAgent(ctx, actor, f.tenant.ID, a.ID, "key leaked"))
		if rev.RevokeTime == nil || rev.RevokeReason != "key leaked" {
			t.Fatalf("revoked %+v", rev)
		}
		_, err = s.RenewAgent(ctx, a.ID, func(store.Agent) (time.Time, error) {
			t.Fatal("issue called for a revoked agent")
			return time.Time{}, nil
		})
		wantErr(t, err, store.ErrFailedPrecondition)
		ids := must[[]string](t)(s.RevokedSince(ctx, since))
		if len(ids) != 1 || ids[0] != a.ID {
			t.Fatalf("RevokedSince = %v; want [%s]", ids, a.ID)
		}
		list, _, err := s.ListAgents(ctx, store.Filter{Visible: other.ID}, store.AgentFilter{}, store.Page{Size: 10})
		if err != nil || len(list) != 0 {
			t.Fatalf("other tenant lists %v, %v", list, err)
		}
	})
}

// TestEnrollAgentTokenUsedOnce races 20 enrollments on one token.
func TestEnrollAgentTokenUsedOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		f := newEnrollFixture(t, s)
		jt := f.token(t, "s", time.Hour)
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, refusals := 0, 0
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.EnrollAgent(context.Background(), enrollment(jt.ID, "s"))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, store.ErrJoinTokenInvalid):
					refusals++
				default:
					t.Errorf("enroll: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || refusals != 19 {
			t.Fatalf("got %d enrollments and %d refusals; want 1 and 19", wins, refusals)
		}
	})
}

func TestDeleteDataPlaneRevokesAgents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		a := f.agent(t)
		unused := f.token(t, "u", time.Hour)
		if err := s.DeleteDataPlane(ctx, actor, "", f.dp.ID, ""); err != nil {
			t.Fatal(err)
		}
		got := must[store.Agent](t)(s.GetAgent(ctx, "", a.ID))
		if got.RevokeTime == nil || got.RevokeReason != "data plane deleted" {
			t.Fatalf("agent after data plane deletion: %+v", got)
		}
		_, err := s.EnrollAgent(ctx, enrollment(unused.ID, "u"))
		wantErr(t, err, store.ErrJoinTokenInvalid)
	})
}

func TestRegisterExternalAgent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		id := uuid.NewString()
		in := store.Agent{ID: id, TenantID: f.tenant.ID, DataPlaneID: f.dp.ID, SPIFFEID: "spiffe://spire.test/agent/a"}
		a := must[store.Agent](t)(s.RegisterExternalAgent(ctx, in))
		again := must[store.Agent](t)(s.RegisterExternalAgent(ctx, in))
		if a.ID != id || again.CreateTime != a.CreateTime {
			t.Fatalf("second registration changed the agent: %+v vs %+v", again, a)
		}
		if n := auditCount(t, s, id); n != 1 {
			t.Fatalf("audit events = %d; want 1 registration", n)
		}
		other := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: f.tenant.ID, Name: "dp2", Region: "r"}))
		moved := in
		moved.DataPlaneID = other.ID
		_, err := s.RegisterExternalAgent(ctx, moved)
		wantErr(t, err, store.ErrFailedPrecondition)
		// A mapping to another tenant's data plane is refused.
		t2 := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "t2"}))
		wrong := store.Agent{ID: uuid.NewString(), TenantID: t2.ID, DataPlaneID: f.dp.ID, SPIFFEID: "spiffe://spire.test/agent/b"}
		_, err = s.RegisterExternalAgent(ctx, wrong)
		wantErr(t, err, store.ErrNotFound)
	})
}

func TestAgentSync(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		id := uuid.NewString()
		_, err := s.GetAgentSync(ctx, id)
		wantErr(t, err, store.ErrNotFound)
		in := store.AgentSync{AgentID: id, DataPlaneID: uuid.NewString(), Epoch: "e1", LastSentRevision: 5, LastAppliedRevision: 4}
		if err := s.PutAgentSync(ctx, in); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordNack(ctx, id, in.DataPlaneID, 6, "NACK_REASON_CHAIN_BROKEN", "x"); err != nil {
			t.Fatal(err)
		}
		// A position update does not erase the NACK.
		in.LastAppliedRevision = 5
		if err := s.PutAgentSync(ctx, in); err != nil {
			t.Fatal(err)
		}
		got := must[store.AgentSync](t)(s.GetAgentSync(ctx, id))
		if got.LastAppliedRevision != 5 || got.LastNackRevision != 6 || got.LastNackReason != "NACK_REASON_CHAIN_BROKEN" || got.Epoch != "e1" || got.LastSeen.IsZero() {
			t.Fatalf("got %+v", got)
		}
	})
}

// TestListAgentsFleetQuestions: agents behind a revision, with a NACK, not
// seen lately, active only.
func TestListAgentsFleetQuestions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		enroll := func() store.Agent {
			return f.agent(t)
		}
		current, behind, nacked, silent, revoked := enroll(), enroll(), enroll(), enroll(), enroll()
		for _, a := range []struct {
			ag      store.Agent
			applied int64
		}{{current, 5}, {behind, 3}, {nacked, 4}, {revoked, 5}} {
			if err := s.PutAgentSync(ctx, store.AgentSync{AgentID: a.ag.ID, DataPlaneID: f.dp.ID, Epoch: "e", LastSentRevision: 5, LastAppliedRevision: a.applied}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RecordNack(ctx, nacked.ID, f.dp.ID, 5, "NACK_REASON_CHAIN_BROKEN", "x"); err != nil {
			t.Fatal(err)
		}
		must[store.Agent](t)(s.RevokeAgent(ctx, actor, "", revoked.ID, "gone"))
		ids := func(af store.AgentFilter) map[string]bool {
			t.Helper()
			list, _, err := s.ListAgents(ctx, store.Filter{}, af, store.Page{Size: 100})
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]bool{}
			for _, a := range list {
				out[a.ID] = true
			}
			return out
		}
		for _, tc := range []struct {
			name string
			af   store.AgentFilter
			want []store.Agent
		}{
			{"behind 5", store.AgentFilter{BehindRevision: 5}, []store.Agent{behind, nacked, silent}},
			{"behind 4", store.AgentFilter{BehindRevision: 4}, []store.Agent{behind, silent}},
			{"with nack", store.AgentFilter{WithNack: true}, []store.Agent{nacked}},
			{"not seen in the last minute", store.AgentFilter{NotSeenSince: time.Now().Add(-time.Minute)}, []store.Agent{silent}},
			{"active only", store.AgentFilter{ActiveOnly: true, DataPlaneID: f.dp.ID}, []store.Agent{current, behind, nacked, silent}},
		} {
			got := ids(tc.af)
			if len(got) != len(tc.want) {
				t.Errorf("%s: got %d agents; want %d", tc.name, len(got), len(tc.want))
			}
			for _, a := range tc.want {
				if !got[a.ID] {
					t.Errorf("%s: %s missing", tc.name, a.ID)
				}
			}
		}
		got := must[store.Agent](t)(s.GetAgent(ctx, "", nacked.ID))
		if got.Sync == nil || got.Sync.LastAppliedRevision != 4 || got.Sync.LastNackRevision != 5 {
			t.Fatalf("GetAgent sync %+v", got.Sync)
		}
		if fresh := must[store.Agent](t)(s.GetAgent(ctx, "", silent.ID)); fresh.Sync != nil {
			t.Fatalf("agent that never streamed has sync %+v", fresh.Sync)
		}
	})
}

// TestAuditRefusalOutlivesTheCaller: a refusal is audited even when the
// refused caller's context has already ended (it hung up).
func TestAuditRefusalOutlivesTheCaller(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		id := "00000000-0000-4000-8000-00000000abcd"
		s.AuditRefusal(ctx, store.Actor{ID: "spiffe://cairn.test/agent"}, "agent.call.refused", "agent", id, "", "gone")
		evs, _, err := s.ListAuditEvents(context.Background(), store.AuditFilter{ResourceID: id}, store.Page{Size: 10})
		if err != nil || len(evs) != 1 || evs[0].Action != "agent.call.refused" {
			t.Fatalf("audit events %+v, %v; want the refusal", evs, err)
		}
	})
}
