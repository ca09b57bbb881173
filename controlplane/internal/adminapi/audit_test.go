package adminapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// events returns the audit events about one resource, oldest first.
func events(tb testing.TB, s *admintest.Server, resourceID string) []*adminv1.AuditEvent {
	tb.Helper()
	resp, err := s.Operator().Audit.ListAuditEvents(context.Background(), connect.NewRequest(&adminv1.ListAuditEventsRequest{ResourceId: resourceID}))
	if err != nil {
		tb.Fatalf("ListAuditEvents: %v", err)
	}
	evs := resp.Msg.Events
	out := make([]*adminv1.AuditEvent, len(evs))
	for i, e := range evs {
		out[len(evs)-1-i] = e
	}
	return out
}

// TestAuditContent: every write through the API leaves one audit event
// naming the token that made it, the request id that the caller sent and
// got back in X-Request-Id, and digests that chain: each event's
// old_digest is the previous event's new_digest.
func TestAuditContent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	operator := s.CreateToken(t, "", adminv1.Role_ROLE_OPERATOR)

	withID := func(h interface{ Set(string, string) }, reqID string) {
		if reqID != "" {
			h.Set("X-Request-Id", reqID)
		}
	}
	for _, tc := range []struct {
		name       string
		resourceID string
		action     string
		resource   string
		proto      admintest.Protocol
		// update makes the nth update, sending reqID unless it is "",
		// and returns the X-Request-Id response header. delete, when set,
		// ends the chain.
		update func(c admintest.Clients, reqID string, n int) (string, error)
		delete func(c admintest.Clients, reqID string) (string, error)
	}{
		{
			name: "tenant", resourceID: acme.Tenant.Id, action: "tenant", resource: "tenant", proto: admintest.Connect,
			update: func(c admintest.Clients, reqID string, n int) (string, error) {
				req := connect.NewRequest(&adminv1.UpdateTenantRequest{Tenant: &adminv1.Tenant{Id: acme.Tenant.Id, DisplayName: fmt.Sprint("v", n)}, UpdateMask: mask("display_name")})
				withID(req.Header(), reqID)
				resp, err := c.Tenants.UpdateTenant(ctx, req)
				if err != nil {
					return "", err
				}
				return resp.Header().Get("X-Request-Id"), nil
			},
		},
		{
			name: "data plane", resourceID: acme.DataPlane.Id, action: "data_plane", resource: "data_plane", proto: admintest.GRPC,
			update: func(c admintest.Clients, reqID string, n int) (string, error) {
				req := connect.NewRequest(&adminv1.UpdateDataPlaneRequest{DataPlane: &adminv1.DataPlane{Id: acme.DataPlane.Id, Labels: map[string]string{"n": fmt.Sprint(n)}}})
				withID(req.Header(), reqID)
				resp, err := c.DataPlanes.UpdateDataPlane(ctx, req)
				if err != nil {
					return "", err
				}
				return resp.Header().Get("X-Request-Id"), nil
			},
		},
		{
			name: "cluster", resourceID: acme.Cluster.Id, action: "cluster", resource: "cluster", proto: admintest.Connect,
			update: func(c admintest.Clients, reqID string, n int) (string, error) {
				req := connect.NewRequest(&adminv1.UpdateClusterRequest{Cluster: &adminv1.Cluster{Id: acme.Cluster.Id, Labels: map[string]string{"n": fmt.Sprint(n)}}, UpdateMask: mask("labels")})
				withID(req.Header(), reqID)
				resp, err := c.Clusters.UpdateCluster(ctx, req)
				if err != nil {
					return "", err
				}
				return resp.Header().Get("X-Request-Id"), nil
			},
			delete: func(c admintest.Clients, reqID string) (string, error) {
				req := connect.NewRequest(&adminv1.DeleteClusterRequest{Id: acme.Cluster.Id})
				withID(req.Header(), reqID)
				resp, err := c.Clusters.DeleteCluster(ctx, req)
				if err != nil {
					return "", err
				}
				return resp.Header().Get("X-Request-Id"), nil
			},
		},
		{
			name: "config document", resourceID: acme.DataPlaneDoc.Id, action: "config", resource: "config_document", proto: admintest.GRPC,
			update: func(c admintest.Clients, reqID string, n int) (string, error) {
				req := connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{Id: acme.DataPlaneDoc.Id,
					Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent(fmt.Sprint("n: ", n), "application/yaml")},
					// Labels keep the chain clear of
					// TestBugAuditDigestChainBrokenByEmptyLabels.
					Labels: map[string]string{"n": fmt.Sprint(n)}})
				withID(req.Header(), reqID)
				resp, err := c.Configs.UpdateConfigDocument(ctx, req)
				if err != nil {
					return "", err
				}
				return resp.Header().Get("X-Request-Id"), nil
			},
			delete: func(c admintest.Clients, reqID string) (string, error) {
				req := connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: acme.DataPlaneDoc.Id})
				withID(req.Header(), reqID)
				resp, err := c.Configs.DeleteConfigDocument(ctx, req)
				if err != nil {
					return "", err
				}
				return resp.Header().Get("X-Request-Id"), nil
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Clients(tc.proto, operator.Secret)
			// Our own ids are echoed; a missing or unusable one is
			// replaced by the server's, which the audit event carries too.
			sent := []string{"audit-test-" + tc.resource + "-1", "", "audit-test-" + tc.resource + "-2", strings.Repeat("z", 65), "bad id with spaces"}
			var echoed []string
			for n, id := range sent {
				got, err := tc.update(c, id, n)
				if err != nil {
					t.Fatalf("update with request id %q: %v", id, err)
				}
				switch {
				case id == "" || len(id) > 64 || strings.Contains(id, " "):
					if got == "" || got == id {
						t.Fatalf("request id %q: got X-Request-Id %q; want a fresh server id", id, got)
					}
				case got != id:
					t.Fatalf("got X-Request-Id %q; want %q echoed", got, id)
				}
				echoed = append(echoed, got)
			}
			actions := make([]string, len(sent))
			for i := range actions {
				actions[i] = tc.action + ".update"
			}
			if tc.delete != nil {
				got, err := tc.delete(c, "audit-test-delete")
				if err != nil {
					t.Fatalf("delete: %v", err)
				}
				if got != "audit-test-delete" {
					t.Fatalf("got X-Request-Id %q; want %q", got, "audit-test-delete")
				}
				echoed = append(echoed, got)
				actions = append(actions, tc.action+".delete")
			}

			evs := events(t, s, tc.resourceID)
			// The first event is the seed's create, by the bootstrap token.
			if len(evs) != 1+len(echoed) {
				t.Fatalf("got %d events; want the create and %d writes", len(evs), len(echoed))
			}
			if e := evs[0]; e.Action != tc.action+".create" || e.OldDigest != "" || e.NewDigest == "" || e.Actor != "token:"+s.OperatorTokenID {
				t.Fatalf("create event = %v; want action %s.create by token:%s with only a new digest", e, tc.action, s.OperatorTokenID)
			}
			for i, e := range evs[1:] {
				prev := evs[i]
				if e.Action != actions[i] {
					t.Errorf("event %d: got action %q; want %q", i+1, e.Action, actions[i])
				}
				if want := "token:" + operator.Id; e.Actor != want {
					t.Errorf("event %d: got actor %q; want %q", i+1, e.Actor, want)
				}
				if e.RequestId != echoed[i] {
					t.Errorf("event %d: got request_id %q; want %q, as echoed in X-Request-Id", i+1, e.RequestId, echoed[i])
				}
				if e.ResourceType != tc.resource || e.ResourceId != tc.resourceID || e.TenantId != acme.Tenant.Id {
					t.Errorf("event %d: got resource %s %s of tenant %s; want %s %s of %s", i+1,
						e.ResourceType, e.ResourceId, e.TenantId, tc.resource, tc.resourceID, acme.Tenant.Id)
				}
				if e.OldDigest != prev.NewDigest {
					t.Errorf("event %d: got old_digest %q; want the previous new_digest %q", i+1, e.OldDigest, prev.NewDigest)
				}
				if !strings.HasPrefix(e.OldDigest, "sha256:") {
					t.Errorf("event %d: got old_digest %q; want sha256:<hex>", i+1, e.OldDigest)
				}
				isDelete := strings.HasSuffix(e.Action, ".delete")
				if isDelete != (e.NewDigest == "") {
					t.Errorf("event %d (%s): got new_digest %q; want empty exactly for a delete", i+1, e.Action, e.NewDigest)
				}
				if !isDelete && e.NewDigest == e.OldDigest {
					t.Errorf("event %d: digest %q unchanged by an update that changed the object", i+1, e.NewDigest)
				}
				if e.Time == nil || e.Time.AsTime().Before(prev.Time.AsTime()) {
					t.Errorf("event %d: time %v before the previous event's %v", i+1, e.Time, prev.Time)
				}
			}
		})
	}
}
