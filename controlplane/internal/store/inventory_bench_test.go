package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cairnhq/cairn/controlplane/internal/inventory"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/versions"
	"github.com/cairnhq/cairn/internal/storetest"
)

// BenchmarkQueryClusters100k measures inventory queries over 100,000
// clusters on PostgreSQL (20 data planes in 4 regions, 30 versions, an
// env label): the first page of 100 and a whole narrow result. The fleet
// is loaded with set-based SQL (the store's API would take minutes), then
// ANALYZEd.
func BenchmarkQueryClusters100k(b *testing.B) {
	url := storetest.PostgresURL(b)
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn, err := s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"})
	if err != nil {
		b.Fatal(err)
	}
	var dps []string
	regions := []string{"eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"}
	for i := range 20 {
		dp, err := s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: fmt.Sprintf("dp%d", i), Region: regions[i%4]})
		if err != nil {
			b.Fatal(err)
		}
		dps = append(dps, dp.ID)
	}
	var vs []string
	var keys [][]byte
	for minor := range 10 {
		for patch := range 3 {
			v := fmt.Sprintf("1.%d.%d", minor, patch)
			vs = append(vs, v)
			keys = append(keys, []byte(versions.MustParse(v).SortKey()))
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO clusters (id, tenant_id, data_plane_id, name, labels, properties, desired_version,
		reported_version, host_version, product, channel, etag, create_time, update_time,
		desired_version_key, reported_version_key, host_version_key)
		SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + i % 20], 'c' || i, '{"env":"' || (ARRAY['prod','staging','dev'])[1 + i % 3] || '"}', '{}',
			($3::text[])[1 + i % 30], ($3::text[])[1 + (i / 7) % 30], '3.4.0', 'kafka', 'stable', 'e', now(), now(),
			($4::bytea[])[1 + i % 30], ($4::bytea[])[1 + (i / 7) % 30], ''::bytea
		FROM generate_series(1, 100000) AS i`, tn.ID, dps, vs, keys); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO labels (object_id, key, value) SELECT id, 'env', labels::json->>'env' FROM clusters`); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, query string
		size        int
	}{
		{"version range, first page", "product=kafka,version>=1.2.0,version<1.3.0", 100},
		{"version range and label, first page", "version>=1.2.0,version<1.3.0,env=prod", 100},
		{"region and desired version, first page", "region=eu-west-1,desired_version in (1.4.0,1.5.0)", 100},
		{"one exact version, a page of 1000", "version=1.7.2", 1000},
	} {
		q, err := inventory.Parse(bc.query)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			n := 0
			for b.Loop() {
				got, _, err := s.QueryClusters(ctx, store.Filter{}, q, store.Page{Size: bc.size})
				if err != nil {
					b.Fatal(err)
				}
				n = len(got)
			}
			b.ReportMetric(float64(n), "clusters")
		})
	}
}
