package store_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/selector"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/storetest"
)

var actor = store.Actor{ID: "test:actor", RequestID: "req-1"}

// forEachBackend runs the conformance test body on every backend.
func forEachBackend(t *testing.T, body func(t *testing.T, s *store.Store)) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			s := open(t, b.URL(t))
			if got := s.Backend(); got != b.Name {
				t.Fatalf("Backend() = %q; want %q", got, b.Name)
			}
			body(t, s)
		})
	}
}

func open(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{URL: url})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v; want %v", err, want)
	}
}

func auditCount(t *testing.T, s *store.Store, resourceID string) int {
	t.Helper()
	evs, _, err := s.ListAuditEvents(context.Background(), store.AuditFilter{ResourceID: resourceID}, store.Page{Size: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func TestTenants(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		acme := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme", DisplayName: "Acme", Labels: map[string]string{"tier": "gold"}}))
		if acme.ID == "" || acme.Etag == "" || acme.CreateTime.IsZero() {
			t.Fatalf("created tenant lacks server fields: %+v", acme)
		}
		_, err := s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"})
		wantErr(t, err, store.ErrAlreadyExists)

		got := must[store.Tenant](t)(s.GetTenant(ctx, "", acme.ID))
		if got.Name != "acme" || got.Labels["tier"] != "gold" || !got.CreateTime.Equal(acme.CreateTime) || got.Etag != acme.Etag {
			t.Fatalf("got %+v; want %+v", got, acme)
		}
		// Visibility: another tenant's token sees nothing.
		other := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "other"}))
		_, err = s.GetTenant(ctx, other.ID, acme.ID)
		wantErr(t, err, store.ErrNotFound)
		_, err = s.GetTenant(ctx, "", "not-a-uuid")
		wantErr(t, err, store.ErrNotFound)
		list, _, err := s.ListTenants(ctx, store.Filter{Visible: other.ID}, store.Page{Size: 10})
		if err != nil || len(list) != 1 || list[0].ID != other.ID {
			t.Fatalf("tenant-scoped list = %+v, %v; want only %s", list, err, other.ID)
		}

		// Update with a stale etag fails and writes nothing.
		_, err = s.UpdateTenant(ctx, actor, "", acme.ID, "stale", func(t *store.Tenant) error { t.DisplayName = "x"; return nil })
		wantErr(t, err, store.ErrEtagMismatch)
		up := must[store.Tenant](t)(s.UpdateTenant(ctx, actor, "", acme.ID, acme.Etag, func(t *store.Tenant) error {
			t.DisplayName = "Acme Corp"
			t.Name = "ignored"
			return nil
		}))
		if up.DisplayName != "Acme Corp" || up.Name != "acme" || up.Etag == acme.Etag {
			t.Fatalf("updated tenant = %+v", up)
		}
		// A mutate error aborts the transaction.
		boom := errors.New("boom")
		_, err = s.UpdateTenant(ctx, actor, "", acme.ID, "", func(*store.Tenant) error { return boom })
		wantErr(t, err, boom)
		if n := auditCount(t, s, acme.ID); n != 2 {
			t.Fatalf("audit events for tenant = %d; want 2 (create, update)", n)
		}

		// Delete is blocked by data planes.
		dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: acme.ID, Name: "use1", Region: "us-east-1", Cloud: 1}))
		wantErr(t, s.DeleteTenant(ctx, actor, "", acme.ID, ""), store.ErrFailedPrecondition)
		if err := s.DeleteDataPlane(ctx, actor, "", dp.ID, ""); err != nil {
			t.Fatal(err)
		}
		wantErr(t, s.DeleteTenant(ctx, actor, "", acme.ID, "stale"), store.ErrEtagMismatch)
		if err := s.DeleteTenant(ctx, actor, "", acme.ID, up.Etag); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetTenant(ctx, "", acme.ID)
		wantErr(t, err, store.ErrNotFound)
		wantErr(t, s.DeleteTenant(ctx, actor, "", acme.ID, ""), store.ErrNotFound)
	})
}

func TestDataPlanesAndClusters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		acme := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		other := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "other"}))

		// A data plane of an invisible or missing tenant is refused and
		// leaves no audit event.
		_, err := s.CreateDataPlane(ctx, actor, other.ID, store.DataPlane{TenantID: acme.ID, Name: "x", Region: "r"})
		wantErr(t, err, store.ErrNotFound)
		_, err = s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: "7f1f3cc4-3a8d-4a6a-9f57-000000000000", Name: "x", Region: "r"})
		wantErr(t, err, store.ErrNotFound)

		dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, acme.ID, store.DataPlane{TenantID: acme.ID, Name: "use1", Region: "us-east-1", Cloud: 1, Labels: map[string]string{"env": "prod"}}))
		_, err = s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: acme.ID, Name: "use1", Region: "eu"})
		wantErr(t, err, store.ErrAlreadyExists)
		_, err = s.GetDataPlane(ctx, other.ID, dp.ID)
		wantErr(t, err, store.ErrNotFound)

		c := must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{
			DataPlaneID: dp.ID, Name: "db1", DesiredVersion: "1.2.0", HostVersion: "3.5.0",
			Properties: map[string]any{"plan": "enterprise", "nodes": float64(5)},
		}))
		if c.TenantID != acme.ID {
			t.Fatalf("cluster tenant = %q; want %q", c.TenantID, acme.ID)
		}
		_, err = s.CreateCluster(ctx, actor, other.ID, store.Cluster{DataPlaneID: dp.ID, Name: "db2"})
		wantErr(t, err, store.ErrNotFound)
		got := must[store.Cluster](t)(s.GetCluster(ctx, acme.ID, c.ID))
		if got.Properties["plan"] != "enterprise" || got.Properties["nodes"] != float64(5) || got.HostVersion != "3.5.0" {
			t.Fatalf("got cluster %+v", got)
		}
		up := must[store.Cluster](t)(s.UpdateCluster(ctx, actor, "", c.ID, c.Etag, func(c *store.Cluster) error {
			c.DesiredVersion = "1.3.0"
			c.ReportedVersion = "ignored"
			c.Properties["nodes"] = float64(7)
			return nil
		}))
		if up.DesiredVersion != "1.3.0" || up.ReportedVersion != "" || up.Properties["nodes"] != float64(7) {
			t.Fatalf("updated cluster %+v", up)
		}
		if got.Properties["nodes"] != float64(5) {
			t.Fatal("update changed the caller's copy of properties")
		}

		// Cluster-scoped config goes with its cluster; the data plane waits
		// for its clusters.
		doc := must[store.ConfigDocument](t)(s.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{
			ScopeType: store.ScopeCluster, ScopeID: c.ID, Kind: "k", Name: "n", Content: []byte("x"), MediaType: "text/plain"}))
		if doc.DataPlaneID != dp.ID {
			t.Fatalf("cluster-scoped doc data plane = %q; want %q", doc.DataPlaneID, dp.ID)
		}
		wantErr(t, s.DeleteDataPlane(ctx, actor, "", dp.ID, ""), store.ErrFailedPrecondition)
		wantErr(t, s.DeleteCluster(ctx, actor, other.ID, c.ID, ""), store.ErrNotFound)
		if err := s.DeleteCluster(ctx, actor, acme.ID, c.ID, up.Etag); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetConfigDocument(ctx, "", doc.ID)
		wantErr(t, err, store.ErrNotFound)
		if n := auditCount(t, s, doc.ID); n != 2 {
			t.Fatalf("audit events for doc deleted with its cluster = %d; want 2", n)
		}
		dpUp := must[store.DataPlane](t)(s.UpdateDataPlane(ctx, actor, "", dp.ID, "", func(d *store.DataPlane) error {
			d.Labels["env"] = "staging"
			d.Region = "ignored"
			return nil
		}))
		if dpUp.Labels["env"] != "staging" || dpUp.Region != "us-east-1" {
			t.Fatalf("updated data plane %+v", dpUp)
		}
		if err := s.DeleteDataPlane(ctx, actor, "", dp.ID, dpUp.Etag); err != nil {
			t.Fatal(err)
		}
	})
}

func TestConfigDocuments(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		acme := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: acme.ID, Name: "use1", Region: "r"}))
		in := store.ConfigDocument{ScopeType: store.ScopeDataPlane, ScopeID: dp.ID, Kind: "cairn.dev/ingress", Name: "main",
			Content: []byte(`{"port":443}`), MediaType: "application/json", Structured: true, Labels: map[string]string{"team": "net"}}
		doc := must[store.ConfigDocument](t)(s.CreateConfigDocument(ctx, actor, "", in))
		if doc.Version != 1 || doc.TenantID != acme.ID || doc.DataPlaneID != dp.ID {
			t.Fatalf("created %+v", doc)
		}
		_, err := s.CreateConfigDocument(ctx, actor, "", in)
		wantErr(t, err, store.ErrAlreadyExists)
		_, err = s.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{ScopeType: store.ScopeCluster, ScopeID: dp.ID, Kind: "k", Name: "n", Content: []byte{}})
		wantErr(t, err, store.ErrNotFound)

		byKey := must[store.ConfigDocument](t)(s.GetConfigDocumentByKey(ctx, acme.ID, store.ScopeDataPlane, dp.ID, "cairn.dev/ingress", "main"))
		if byKey.ID != doc.ID || string(byKey.Content) != `{"port":443}` || !byKey.Structured {
			t.Fatalf("by key %+v", byKey)
		}
		_, err = s.GetConfigDocumentByKey(ctx, "", store.ScopeDataPlane, dp.ID, "cairn.dev/ingress", "nope")
		wantErr(t, err, store.ErrNotFound)
		// The scope type is part of the key.
		_, err = s.GetConfigDocumentByKey(ctx, "", store.ScopeCluster, dp.ID, "cairn.dev/ingress", "main")
		wantErr(t, err, store.ErrNotFound)

		_, err = s.UpdateConfigDocument(ctx, actor, "", doc.ID, "stale", store.ConfigContent{Content: []byte("x"), MediaType: "text/plain"})
		wantErr(t, err, store.ErrEtagMismatch)
		v2 := must[store.ConfigDocument](t)(s.UpdateConfigDocument(ctx, actor, "", doc.ID, doc.Etag, store.ConfigContent{Content: []byte("port: 80"), MediaType: "application/yaml"}))
		if v2.Version != 2 || v2.Etag == doc.Etag || v2.Structured || len(v2.Labels) != 0 {
			t.Fatalf("v2 = %+v", v2)
		}
		list, _, err := s.ListConfigDocuments(ctx, store.Filter{}, store.ConfigFilter{ScopeType: store.ScopeDataPlane, ScopeID: dp.ID, Kind: "cairn.dev/ingress"}, store.Page{Size: 10})
		if err != nil || len(list) != 1 || list[0].Version != 2 {
			t.Fatalf("list = %+v, %v", list, err)
		}
		wantErr(t, s.DeleteConfigDocument(ctx, actor, "", doc.ID, doc.Etag), store.ErrEtagMismatch)
		if err := s.DeleteConfigDocument(ctx, actor, "", doc.ID, v2.Etag); err != nil {
			t.Fatal(err)
		}
		evs, _, err := s.ListAuditEvents(ctx, store.AuditFilter{ResourceID: doc.ID}, store.Page{Size: 10})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range evs {
			actions = append(actions, e.Action)
		}
		if fmt.Sprint(actions) != "[config.delete config.update config.create]" {
			t.Fatalf("audit actions newest first = %v", actions)
		}
		if evs[0].NewDigest != "" || evs[0].OldDigest == "" || evs[2].OldDigest != "" || evs[1].OldDigest != evs[2].NewDigest {
			t.Fatalf("digests do not chain: %+v", evs)
		}
		if evs[0].RequestID != "req-1" || evs[0].Actor != "test:actor" || evs[0].TenantID != acme.ID {
			t.Fatalf("audit event fields: %+v", evs[0])
		}
	})
}

func TestListSelectorsAndPages(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		a := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "a"}))
		b := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "b"}))
		envs := []string{"prod", "staging", "dev"}
		want := map[string][]string{}
		for i := range 25 {
			tenant := a
			if i%5 == 0 {
				tenant = b
			}
			labels := map[string]string{"env": envs[i%3]}
			if i%2 == 0 {
				labels["tier"] = "gold"
			}
			dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tenant.ID, Name: "dp" + strconv.Itoa(i), Region: "r", Labels: labels}))
			key := tenant.Name + "/" + labels["env"] + "/" + labels["tier"]
			want[key] = append(want[key], dp.ID)
		}
		count := func(visible, tenant, sel string) []string {
			t.Helper()
			parsed, err := selector.Parse(sel)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			p := store.Page{Size: 4}
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatal("pagination does not end")
				}
				got, next, err := s.ListDataPlanes(ctx, store.Filter{Visible: visible, TenantID: tenant, Selector: parsed}, p)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) > 4 {
					t.Fatalf("page of %d; want at most 4", len(got))
				}
				for _, d := range got {
					ids = append(ids, d.ID)
				}
				if next == "" {
					break
				}
				p.After = next
			}
			return ids
		}
		expect := func(match func(tenant, env, tier string) bool) int {
			n := 0
			for k, ids := range want {
				parts := strings.Split(k, "/")
				if match(parts[0], parts[1], parts[2]) {
					n += len(ids)
				}
			}
			return n
		}
		for _, tc := range []struct {
			name, visible, tenant, sel string
			match                      func(tn, env, tier string) bool
		}{
			{"all", "", "", "", func(string, string, string) bool { return true }},
			{"eq", "", "", "env=prod", func(_, env, _ string) bool { return env == "prod" }},
			{"neq includes absent", "", "", "tier!=gold", func(_, _, tier string) bool { return tier != "gold" }},
			{"in", "", "", "env in (prod,dev)", func(_, env, _ string) bool { return env != "staging" }},
			{"notin", "", "", "env notin (prod)", func(_, env, _ string) bool { return env != "prod" }},
			{"exists and", "", "", "tier,env=dev", func(_, env, tier string) bool { return tier == "gold" && env == "dev" }},
			{"not exists", "", "", "!tier", func(_, _, tier string) bool { return tier == "" }},
			{"tenant filter", "", b.ID, "", func(tn, _, _ string) bool { return tn == "b" }},
			{"visible", a.ID, "", "env=prod", func(tn, env, _ string) bool { return tn == "a" && env == "prod" }},
			{"visible other tenant filter", a.ID, b.ID, "", func(string, string, string) bool { return false }},
		} {
			got := count(tc.visible, tc.tenant, tc.sel)
			if n := expect(tc.match); len(got) != n {
				t.Errorf("%s: got %d data planes; want %d", tc.name, len(got), n)
			}
			seen := map[string]bool{}
			for _, id := range got {
				if seen[id] {
					t.Errorf("%s: %s listed twice across pages", tc.name, id)
				}
				seen[id] = true
			}
		}
	})
}

func TestTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		acme := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		other := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "other"}))
		exp := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
		tok := must[store.APIToken](t)(s.CreateToken(ctx, actor, "", store.APIToken{ID: "3f1f3cc4-3a8d-4a6a-9f57-000000000001", TenantID: acme.ID, Role: 2, ExpireTime: &exp}, []byte("hash")))
		_, err := s.CreateToken(ctx, actor, other.ID, store.APIToken{ID: "3f1f3cc4-3a8d-4a6a-9f57-000000000002", TenantID: acme.ID, Role: 1}, []byte("h"))
		wantErr(t, err, store.ErrNotFound)
		op := must[store.APIToken](t)(s.CreateToken(ctx, actor, "", store.APIToken{ID: "3f1f3cc4-3a8d-4a6a-9f57-000000000003", Role: 3}, []byte("h3")))
		got, hash, err := s.LookupToken(ctx, tok.ID)
		if err != nil || string(hash) != "hash" || got.ExpireTime == nil || !got.ExpireTime.Equal(exp) || got.RevokeTime != nil {
			t.Fatalf("lookup = %+v %q %v", got, hash, err)
		}
		_, err = s.GetToken(ctx, other.ID, tok.ID)
		wantErr(t, err, store.ErrNotFound)
		_, err = s.GetToken(ctx, acme.ID, op.ID)
		wantErr(t, err, store.ErrNotFound)
		list, _, err := s.ListTokens(ctx, store.Filter{Visible: acme.ID}, store.Page{Size: 10})
		if err != nil || len(list) != 1 || list[0].ID != tok.ID {
			t.Fatalf("tenant list = %+v %v", list, err)
		}
		rev := must[store.APIToken](t)(s.RevokeToken(ctx, actor, acme.ID, tok.ID))
		if rev.RevokeTime == nil {
			t.Fatal("revoked token has no revoke time")
		}
		got, _, _ = s.LookupToken(ctx, tok.ID)
		if got.RevokeTime == nil || !got.RevokeTime.Equal(*rev.RevokeTime) {
			t.Fatalf("after revoke, lookup = %+v", got)
		}
		// Deleting the tenant deletes its tokens.
		if err := s.DeleteTenant(ctx, actor, "", acme.ID, ""); err != nil {
			t.Fatal(err)
		}
		_, _, err = s.LookupToken(ctx, tok.ID)
		wantErr(t, err, store.ErrNotFound)
	})
}

func TestAuditPagination(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		tn := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		for i := range 12 {
			must[store.Tenant](t)(s.UpdateTenant(ctx, actor, "", tn.ID, "", func(t *store.Tenant) error { t.DisplayName = strconv.Itoa(i); return nil }))
		}
		var all []store.AuditEvent
		p := store.Page{Size: 5}
		for {
			evs, next, err := s.ListAuditEvents(ctx, store.AuditFilter{TenantID: tn.ID}, p)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, evs...)
			if next == "" {
				break
			}
			p.After = next
		}
		if len(all) != 13 {
			t.Fatalf("got %d events; want 13", len(all))
		}
		if !sort.SliceIsSorted(all, func(i, j int) bool { return all[i].Time.After(all[j].Time) }) || all[12].Action != "tenant.create" {
			t.Fatalf("events not newest first: last is %s", all[12].Action)
		}
		_, _, err := s.ListAuditEvents(ctx, store.AuditFilter{}, store.Page{Size: 5, After: "garbage"})
		if err == nil {
			t.Fatal("bad cursor accepted")
		}
	})
}

// TestConcurrentWritersNoLostUpdate runs 50 writers on one config document
// at once. Unconditional writers must each get their own version; every
// successful write must appear in the audit log; the final version counts
// every write.
func TestConcurrentWritersNoLostUpdate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		tn := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"}))
		doc := must[store.ConfigDocument](t)(s.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{
			ScopeType: store.ScopeDataPlane, ScopeID: dp.ID, Kind: "k", Name: "n", Content: []byte("0"), MediaType: "text/plain"}))

		const writers = 50
		var wg sync.WaitGroup
		versions := make(chan int64, writers)
		errs := make(chan error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Half write unconditionally; half read-modify-write with the
				// etag and retry on mismatch, as a careful client does.
				if i%2 == 0 {
					d, err := s.UpdateConfigDocument(ctx, store.Actor{ID: "w" + strconv.Itoa(i)}, "", doc.ID, "", store.ConfigContent{Content: []byte(strconv.Itoa(i)), MediaType: "text/plain"})
					if err != nil {
						errs <- err
						return
					}
					versions <- d.Version
					return
				}
				for {
					cur, err := s.GetConfigDocument(ctx, "", doc.ID)
					if err != nil {
						errs <- err
						return
					}
					d, err := s.UpdateConfigDocument(ctx, store.Actor{ID: "w" + strconv.Itoa(i)}, "", doc.ID, cur.Etag, store.ConfigContent{Content: []byte(strconv.Itoa(i)), MediaType: "text/plain"})
					if errors.Is(err, store.ErrEtagMismatch) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					versions <- d.Version
					return
				}
			}()
		}
		wg.Wait()
		close(versions)
		close(errs)
		for err := range errs {
			t.Errorf("writer failed: %v", err)
		}
		seen := map[int64]bool{}
		for v := range versions {
			if seen[v] {
				t.Errorf("version %d returned to two writers: a lost update", v)
			}
			seen[v] = true
		}
		if len(seen) != writers {
			t.Fatalf("%d writers succeeded; want %d", len(seen), writers)
		}
		final := must[store.ConfigDocument](t)(s.GetConfigDocument(ctx, "", doc.ID))
		if final.Version != writers+1 {
			t.Fatalf("final version = %d; want %d", final.Version, writers+1)
		}
		if n := auditCount(t, s, doc.ID); n != writers+1 {
			t.Fatalf("audit events = %d; want %d", n, writers+1)
		}
		// Every write is in the revision log, gapless, its hashes chained.
		if revs := checkLog(t, s, dp.ID); len(revs) != writers+1 {
			t.Fatalf("revision log has %d entries; want %d", len(revs), writers+1)
		}
	})
}

// TestMigrationsConcurrentOpen opens three stores on one fresh database at
// once, as replicas starting together do, then once more.
func TestMigrationsConcurrentOpen(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			url := b.URL(t)
			var wg sync.WaitGroup
			errs := make(chan error, 3)
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := store.Open(context.Background(), store.Config{URL: url})
					if err != nil {
						errs <- err
						return
					}
					s.Close()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("concurrent Open: %v", err)
			}
			s := open(t, url)
			if _, err := s.CreateTenant(context.Background(), actor, store.Tenant{Name: "x"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestOpenRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "mysql://x", "nocolon", "sqlite:"} {
		if _, err := store.Open(context.Background(), store.Config{URL: u}); err == nil {
			t.Errorf("Open(%q) succeeded; want error", u)
		}
	}
}
