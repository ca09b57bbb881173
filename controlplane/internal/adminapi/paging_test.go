package adminapi_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"connectrpc.com/connect"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// TestPaging lists seven data planes three at a time, following
// next_page_token until it is empty, and sees each exactly once, with
// filters kept across pages.
func TestPaging(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	s.SeedTenant(t, "other") // its data plane must not show up
	op := s.Operator()
	// The seeded data plane and six more: seven in all.
	want := []string{acme.DataPlane.Id}
	var even []string
	for i := range 6 {
		parity := map[bool]string{true: "even", false: "odd"}[i%2 == 0]
		resp, err := op.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
			TenantId: acme.Tenant.Id, Name: fmt.Sprintf("dp-%d", i), Region: "us-west-2", Cloud: adminv1.Cloud_CLOUD_AWS,
			Labels: map[string]string{"parity": parity}}}))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, resp.Msg.DataPlane.Id)
		if parity == "even" {
			even = append(even, resp.Msg.DataPlane.Id)
		}
	}
	slices.Sort(want)
	slices.Sort(even)

	for _, tc := range []struct {
		name      string
		proto     admintest.Protocol
		secret    string
		req       *adminv1.ListDataPlanesRequest
		want      []string
		wantPages []int
	}{
		{"tenant_id filter", admintest.Connect, s.OperatorToken, &adminv1.ListDataPlanesRequest{TenantId: acme.Tenant.Id}, want, []int{3, 3, 1}},
		{"tenant_id filter over gRPC", admintest.GRPC, s.OperatorToken, &adminv1.ListDataPlanesRequest{TenantId: acme.Tenant.Id}, want, []int{3, 3, 1}},
		{"tenant-scoped token", admintest.Connect, acme.Admin.Secret, &adminv1.ListDataPlanesRequest{}, want, []int{3, 3, 1}},
		{"label selector", admintest.GRPC, acme.Admin.Secret, &adminv1.ListDataPlanesRequest{LabelSelector: "parity=even"}, even, []int{3}},
		{"set selector", admintest.Connect, s.OperatorToken, &adminv1.ListDataPlanesRequest{LabelSelector: "parity in (even,odd)"}, without(want, acme.DataPlane.Id), []int{3, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Clients(tc.proto, tc.secret)
			got, pages := pageAllSize(t, c, dataPlaneLister("ListDataPlanes", tc.req), 3)
			var ids []string
			for _, o := range got {
				ids = append(ids, o.id)
			}
			// Each once, in ID order: the order pages are cut in.
			if !slices.Equal(ids, tc.want) {
				t.Fatalf("got %v; want %v", ids, tc.want)
			}
			if !slices.Equal(pages, tc.wantPages) {
				t.Fatalf("got pages of %v; want %v", pages, tc.wantPages)
			}
		})
	}
}

func without(s []string, x string) []string {
	return slices.DeleteFunc(slices.Clone(s), func(v string) bool { return v == x })
}

// TestPagingEveryList pages every List call three at a time and gets what
// one big page gets.
func TestPagingEveryList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	for i := range 4 {
		f := s.SeedTenant(t, fmt.Sprintf("t%d", i))
		s.CreateToken(t, f.Tenant.Id, adminv1.Role_ROLE_VIEWER)
		for j := range 3 {
			c, err := s.Operator().Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: f.DataPlane.Id, Name: fmt.Sprintf("extra-%d", j)}}))
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Operator().Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
				Scope: clusterScope(c.Msg.Cluster.Id), Kind: "cairn.dev/extra", Name: "x",
				Content: &adminv1.ConfigDocument_Raw{Raw: rawContent("x", "text/plain")}}}))
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	op := s.Clients(admintest.GRPC, s.OperatorToken)
	for _, l := range []lister{
		tenantLister("ListTenants", &adminv1.ListTenantsRequest{}),
		dataPlaneLister("ListDataPlanes", &adminv1.ListDataPlanesRequest{}),
		clusterLister("ListClusters", &adminv1.ListClustersRequest{}),
		configLister("ListConfigDocuments", &adminv1.ListConfigDocumentsRequest{}),
		auditLister("ListAuditEvents", &adminv1.ListAuditEventsRequest{}),
		tokenLister("ListTokens", &adminv1.ListTokensRequest{}),
	} {
		t.Run(l.name, func(t *testing.T) {
			all, pages := pageAllSize(t, op, l, 1000)
			if len(pages) != 1 {
				t.Fatalf("got %d pages at size 1000; want 1", len(pages))
			}
			if len(all) < 4 {
				t.Fatalf("got %d objects; want at least 4 to page through", len(all))
			}
			got, pages := pageAllSize(t, op, l, 3)
			if !slices.Equal(got, all) {
				t.Fatalf("paged by 3: got %v; want %v", got, all)
			}
			for i, n := range pages {
				if n > 3 || (n < 3 && i != len(pages)-1) {
					t.Fatalf("got pages of %v; want 3 each but the last", pages)
				}
			}
		})
	}
}

// TestPageSizeClamped: a page_size above 1000 is not an error; it is
// served as 1000.
func TestPageSizeClamped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	op := s.Clients(admintest.Connect, s.OperatorToken)
	// 1001 audit events, one per tenant created, so that a page of
	// 1000 is short of everything.
	const n = 1001
	for i := range n {
		_, err := op.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: fmt.Sprintf("t%04d", i)}}))
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []int32{1001, 5000, 1 << 30} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			resp, err := op.Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{PageSize: size}))
			if err != nil {
				t.Fatalf("page_size %d: got %v; want no error", size, err)
			}
			if got := len(resp.Msg.Tenants); got != 1000 {
				t.Fatalf("page_size %d: got %d tenants; want 1000", size, got)
			}
			if resp.Msg.NextPageToken == "" {
				t.Fatalf("page_size %d: got no next_page_token; want one for the last tenant", size)
			}
			rest, err := op.Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{PageSize: size, PageToken: resp.Msg.NextPageToken}))
			if err != nil {
				t.Fatal(err)
			}
			if len(rest.Msg.Tenants) != 1 || rest.Msg.NextPageToken != "" {
				t.Fatalf("second page: got %d tenants, next %q; want 1 and none", len(rest.Msg.Tenants), rest.Msg.NextPageToken)
			}
		})
	}
	t.Run("default 100", func(t *testing.T) {
		resp, err := op.Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if got := len(resp.Msg.Tenants); got != 100 {
			t.Fatalf("page_size 0: got %d tenants; want the default 100", got)
		}
	})
}
