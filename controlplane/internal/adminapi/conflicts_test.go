package adminapi_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// TestAlreadyExists: a second object with the same unique name is refused
// with AlreadyExists and not written; the same name elsewhere is fine.
func TestAlreadyExists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	other := s.SeedTenant(t, "other")
	c := s.Clients(admintest.GRPC, s.OperatorToken)
	dataPlane := func(tenantID, name string) func() error {
		return func() error {
			_, err := c.DataPlanes.CreateDataPlane(ctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
				TenantId: tenantID, Name: name, Region: "eu-west-1", Cloud: adminv1.Cloud_CLOUD_GCP}}))
			return err
		}
	}
	cluster := func(dpID, name string) func() error {
		return func() error {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: dpID, Name: name}}))
			return err
		}
	}
	document := func(scope *adminv1.ConfigScope, kind, name string) func() error {
		return func() error {
			_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
				Scope: scope, Kind: kind, Name: name, Content: &adminv1.ConfigDocument_Raw{Raw: rawContent("{}", "application/json")}}}))
			return err
		}
	}
	for _, tc := range []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"tenant", func() error {
			_, err := c.Tenants.CreateTenant(ctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "acme"}}))
			return err
		}, connect.CodeAlreadyExists},
		{"data plane", dataPlane(acme.Tenant.Id, acme.DataPlane.Name), connect.CodeAlreadyExists},
		{"cluster", cluster(acme.DataPlane.Id, acme.Cluster.Name), connect.CodeAlreadyExists},
		{"data plane document", document(dpScope(acme.DataPlane.Id), acme.DataPlaneDoc.Kind, acme.DataPlaneDoc.Name), connect.CodeAlreadyExists},
		{"cluster document", document(clusterScope(acme.Cluster.Id), acme.ClusterDoc.Kind, acme.ClusterDoc.Name), connect.CodeAlreadyExists},
		// Names are unique per parent only.
		{"data plane name of another tenant", dataPlane(other.Tenant.Id, acme.DataPlane.Name), ok},
		{"cluster name in another data plane", cluster(other.DataPlane.Id, acme.Cluster.Name), ok},
		{"document key in another scope", document(clusterScope(acme.Cluster.Id), acme.DataPlaneDoc.Kind, acme.DataPlaneDoc.Name), ok},
		{"document name of another kind", document(dpScope(acme.DataPlane.Id), "cairn.dev/other", acme.DataPlaneDoc.Name), ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := auditIDs(t, s)
			wantCode(t, tc.call(), tc.want)
			if tc.want != ok {
				wantNoNewAudit(t, s, before)
			}
		})
	}
}

// versioned is one kind of object as TestStaleEtag handles it.
type versioned struct {
	name string
	// get returns the object.
	get    func(ctx context.Context, c admintest.Clients) (proto.Message, error)
	update func(ctx context.Context, c admintest.Clients, etag string) error
	delete func(ctx context.Context, c admintest.Clients, etag string) error
}

func versionedObjects(f admintest.Tenant) []versioned {
	getDoc := func(id string) func(ctx context.Context, c admintest.Clients) (proto.Message, error) {
		return func(ctx context.Context, c admintest.Clients) (proto.Message, error) {
			r, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: id}))
			if err != nil {
				return nil, err
			}
			return r.Msg.Document, nil
		}
	}
	doc := func(name, id string) versioned {
		return versioned{
			name: name,
			get:  getDoc(id),
			update: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
					Id: id, Etag: etag, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent("v: "+etag, "application/yaml")}}))
				return err
			},
			delete: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.Configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: id, Etag: etag}))
				return err
			},
		}
	}
	objs := []versioned{
		doc("data plane document", f.DataPlaneDoc.Id),
		doc("cluster document", f.ClusterDoc.Id),
		{
			name: "cluster",
			get: func(ctx context.Context, c admintest.Clients) (proto.Message, error) {
				r, err := c.Clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: f.Cluster.Id}))
				if err != nil {
					return nil, err
				}
				return r.Msg.Cluster, nil
			},
			update: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.Clusters.UpdateCluster(ctx, connect.NewRequest(&adminv1.UpdateClusterRequest{
					Cluster: &adminv1.Cluster{Id: f.Cluster.Id, Etag: etag, Labels: map[string]string{"etag": etag}}, UpdateMask: mask("labels")}))
				return err
			},
			delete: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.Clusters.DeleteCluster(ctx, connect.NewRequest(&adminv1.DeleteClusterRequest{Id: f.Cluster.Id, Etag: etag}))
				return err
			},
		},
		{
			name: "data plane",
			get: func(ctx context.Context, c admintest.Clients) (proto.Message, error) {
				r, err := c.DataPlanes.GetDataPlane(ctx, connect.NewRequest(&adminv1.GetDataPlaneRequest{Id: f.DataPlane.Id}))
				if err != nil {
					return nil, err
				}
				return r.Msg.DataPlane, nil
			},
			update: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.DataPlanes.UpdateDataPlane(ctx, connect.NewRequest(&adminv1.UpdateDataPlaneRequest{
					DataPlane: &adminv1.DataPlane{Id: f.DataPlane.Id, Etag: etag, Labels: map[string]string{"etag": etag}}}))
				return err
			},
			delete: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: f.DataPlane.Id, Etag: etag}))
				return err
			},
		},
		{
			name: "tenant",
			get: func(ctx context.Context, c admintest.Clients) (proto.Message, error) {
				r, err := c.Tenants.GetTenant(ctx, connect.NewRequest(&adminv1.GetTenantRequest{Id: f.Tenant.Id}))
				if err != nil {
					return nil, err
				}
				return r.Msg.Tenant, nil
			},
			update: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.Tenants.UpdateTenant(ctx, connect.NewRequest(&adminv1.UpdateTenantRequest{
					Tenant: &adminv1.Tenant{Id: f.Tenant.Id, Etag: etag, DisplayName: "etag " + etag}, UpdateMask: mask("display_name")}))
				return err
			},
			delete: func(ctx context.Context, c admintest.Clients, etag string) error {
				_, err := c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: f.Tenant.Id, Etag: etag}))
				return err
			},
		},
	}
	return objs
}

// etagOf reads the etag field every versioned message has.
func etagOf(m proto.Message) string {
	r := m.ProtoReflect()
	return r.Get(r.Descriptor().Fields().ByName("etag")).String()
}

// TestStaleEtag: for each kind of object, an update or delete with an etag
// that an earlier write made stale fails with FailedPrecondition and writes
// nothing; with the current etag both work. Objects go in dependency order,
// so each delete finds its object empty.
func TestStaleEtag(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	for i, o := range versionedObjects(acme) {
		p := admintest.Protocols[i%len(admintest.Protocols)]
		c := s.Clients(p, s.OperatorToken)
		t.Run(o.name, func(t *testing.T) {
			orig, err := o.get(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			stale := etagOf(orig)
			if err := o.update(ctx, c, stale); err != nil {
				t.Fatalf("update with the current etag: got %v; want success", err)
			}
			cur, err := o.get(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if etagOf(cur) == stale {
				t.Fatalf("etag %q did not change on update", stale)
			}

			before := auditIDs(t, s)
			wantCode(t, o.update(ctx, c, stale), connect.CodeFailedPrecondition)
			wantCode(t, o.delete(ctx, c, stale), connect.CodeFailedPrecondition)
			wantCode(t, o.update(ctx, c, "not-an-etag-at-all"), connect.CodeFailedPrecondition)
			wantNoNewAudit(t, s, before)
			after, err := o.get(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(cur, after, protocmp.Transform()); d != "" {
				t.Fatalf("refused writes changed the %s (-want +got):\n%s", o.name, d)
			}

			if err := o.delete(ctx, c, etagOf(cur)); err != nil {
				t.Fatalf("delete with the current etag: got %v; want success", err)
			}
			_, err = o.get(ctx, c)
			wantCode(t, err, connect.CodeNotFound)
		})
	}
}

// TestDeleteNonEmpty: a tenant with data planes and a data plane with
// clusters cannot be deleted (FailedPrecondition, nothing written); once
// emptied they can, taking their config documents and tokens with them.
func TestDeleteNonEmpty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	c := s.Clients(admintest.Connect, s.OperatorToken)
	before := auditIDs(t, s)
	_, err := c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: acme.Tenant.Id}))
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: acme.Tenant.Id, Etag: acme.Tenant.Etag}))
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: acme.DataPlane.Id}))
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: acme.DataPlane.Id, Etag: acme.DataPlane.Etag}))
	wantCode(t, err, connect.CodeFailedPrecondition)
	wantNoNewAudit(t, s, before)
	for _, id := range []string{acme.DataPlaneDoc.Id, acme.ClusterDoc.Id} {
		if _, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: id})); err != nil {
			t.Fatalf("document %s after refused deletes: %v", id, err)
		}
	}

	// The cluster goes with its document; then the data plane with its
	// document; then the tenant with its token.
	if _, err := c.Clusters.DeleteCluster(ctx, connect.NewRequest(&adminv1.DeleteClusterRequest{Id: acme.Cluster.Id})); err != nil {
		t.Fatalf("DeleteCluster: %v", err)
	}
	_, err = c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: acme.ClusterDoc.Id}))
	wantCode(t, err, connect.CodeNotFound)
	if _, err := c.DataPlanes.DeleteDataPlane(ctx, connect.NewRequest(&adminv1.DeleteDataPlaneRequest{Id: acme.DataPlane.Id})); err != nil {
		t.Fatalf("DeleteDataPlane: %v", err)
	}
	_, err = c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: acme.DataPlaneDoc.Id}))
	wantCode(t, err, connect.CodeNotFound)
	if _, err := c.Tenants.DeleteTenant(ctx, connect.NewRequest(&adminv1.DeleteTenantRequest{Id: acme.Tenant.Id})); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	_, err = s.Clients(admintest.Connect, acme.Admin.Secret).Tenants.ListTenants(ctx, connect.NewRequest(&adminv1.ListTenantsRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated)

	// Every cascaded document deletion is in the audit log.
	var deleted []string
	for _, e := range s.AuditEvents(t) {
		if e.Action == "config.delete" {
			deleted = append(deleted, e.ResourceId)
		}
	}
	if len(deleted) != 2 {
		t.Fatalf("got config.delete events for %v; want one for each of the tenant's 2 documents", deleted)
	}
}

// TestNotFound: every call naming an object that does not exist answers
// NotFound (lists answer empty), over both protocols, writing nothing.
func TestNotFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	before := auditIDs(t, s)
	for _, p := range admintest.Protocols {
		c := s.Clients(p, s.OperatorToken)
		for _, r := range rpcs(unknownTarget(acme.Tenant.Name)) {
			t.Run(p.String()+"/"+r.name, func(t *testing.T) {
				wantCode(t, r.call(ctx, c), unknownTargetWant[r.name])
			})
		}
		t.Run(p.String()+"/ConfigService/GetConfigDocument by unknown key", func(t *testing.T) {
			for _, key := range []*adminv1.ConfigKey{
				{Scope: dpScope(acme.DataPlane.Id), Kind: acme.DataPlaneDoc.Kind, Name: "nope"},
				{Scope: dpScope(acme.DataPlane.Id), Kind: "cairn.dev/nope", Name: acme.DataPlaneDoc.Name},
				{Scope: dpScope(unknownID()), Kind: acme.DataPlaneDoc.Kind, Name: acme.DataPlaneDoc.Name},
				{Scope: clusterScope(unknownID()), Kind: acme.ClusterDoc.Kind, Name: acme.ClusterDoc.Name},
			} {
				_, err := c.Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Key: key}))
				wantCode(t, err, connect.CodeNotFound)
			}
		})
		t.Run(p.String()+"/ClusterService/CreateCluster in unknown data plane", func(t *testing.T) {
			_, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: unknownID(), Name: "x"}}))
			wantCode(t, err, connect.CodeNotFound)
		})
		t.Run(p.String()+"/ConfigService/CreateConfigDocument in unknown cluster", func(t *testing.T) {
			_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
				Scope: clusterScope(unknownID()), Kind: "k", Name: "n", Content: &adminv1.ConfigDocument_Raw{Raw: rawContent("x", "text/plain")}}}))
			wantCode(t, err, connect.CodeNotFound)
		})
	}
	wantNoNewAudit(t, s, before)
}
