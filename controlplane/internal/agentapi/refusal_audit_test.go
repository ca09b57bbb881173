package agentapi_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// A refused call by a verified certificate leaves an audit event naming
// the agent and why.
func TestRefusedCallsAreAudited(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	if _, err := e.Store.RevokeAgent(t.Context(), admin, "", a.Resp.AgentId, "test"); err != nil {
		t.Fatal(err)
	}
	before := e.auditEvents(t, "agent.call.refused")
	client := agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src))
	_, err := client.RenewSVID(t.Context(), &agentv1.RenewSVIDRequest{Csr: []byte("x")})
	wantCode(t, err, codes.PermissionDenied)
	got := newEvents(before, e.auditEvents(t, "agent.call.refused"))
	if len(got) != 1 {
		t.Fatalf("got %d agent.call.refused events; want 1", len(got))
	}
	ev := got[0]
	if ev.ResourceID != a.Resp.AgentId || ev.Actor != "spiffe:"+a.ID.String() ||
		!strings.Contains(ev.Detail, "RenewSVID") || !strings.Contains(ev.Detail, "revoked") {
		t.Fatalf("audit event %+v; want the agent, its SPIFFE ID as actor, the method and the reason", ev)
	}
}
