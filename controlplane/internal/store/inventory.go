package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cairnhq/cairn/controlplane/internal/inventory"
	"github.com/cairnhq/cairn/controlplane/internal/versions"
)

// versionSortKey is the stored sort key of a version: its
// versions.SortKey as bytes, empty for a missing or non-semver version.
func versionSortKey(v string) []byte {
	pv, err := versions.Parse(v)
	if err != nil {
		return []byte{}
	}
	return []byte(pv.SortKey())
}

// fieldColumn is the column of a field term; version fields compare their
// sort keys.
var fieldColumn = map[inventory.Field]string{
	inventory.Product:        "t.product",
	inventory.Channel:        "t.channel",
	inventory.Tenant:         "t.tenant_id",
	inventory.DataPlane:      "t.data_plane_id",
	inventory.Region:         "(SELECT d.region FROM data_planes d WHERE d.id = t.data_plane_id)",
	inventory.Name:           "t.name",
	inventory.Version:        "t.reported_version_key",
	inventory.DesiredVersion: "t.desired_version_key",
	inventory.HostVersion:    "t.host_version_key",
}

// query adds a query's field terms and labels. A negative term (!=, notin)
// also matches clusters without the value, as a selector's does for a
// missing label; an ordered comparison never matches a cluster without a
// (semver) version.
func (w *where) query(q inventory.Query) error {
	for _, t := range q.Terms {
		col, ok := fieldColumn[t.Field]
		if !ok {
			return fmt.Errorf("query: unknown field %q", t.Field)
		}
		args := make([]string, len(t.Values))
		for i, v := range t.Values {
			if t.Field.IsVersion() {
				args[i] = w.arg([]byte(t.Keys[i]))
			} else {
				args[i] = w.arg(v)
			}
		}
		switch t.Op {
		case inventory.Eq:
			w.add(col + " = " + args[0])
		case inventory.Ne:
			w.add(col + " <> " + args[0])
		case inventory.In:
			w.add(col + " IN (" + strings.Join(args, ", ") + ")")
		case inventory.NotIn:
			w.add(col + " NOT IN (" + strings.Join(args, ", ") + ")")
		case inventory.Lt, inventory.Le, inventory.Gt, inventory.Ge:
			// Only version fields are ordered (inventory.Parse).
			w.add(col + " <> " + w.arg([]byte{}) + " AND " + col + " " + string(t.Op) + " " + args[0])
		default:
			return fmt.Errorf("query: unknown operator %q", t.Op)
		}
	}
	w.selector(q.Labels)
	return nil
}

// QueryClusters returns one page of the clusters a query selects, within
// the caller's visibility and the filter's tenant and label selector.
func (s *Store) QueryClusters(ctx context.Context, f Filter, q inventory.Query, p Page) ([]Cluster, string, error) {
	var w where
	w.filter(f)
	if err := w.query(q); err != nil {
		return nil, "", err
	}
	var out []Cluster
	var next string
	err := s.b.read(ctx, func(qr querier) (err error) {
		out, next, err = list(ctx, qr, clusterCols, "FROM clusters t", &w, p, scanCluster, func(c Cluster) string { return c.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("query clusters: %w", err)
	}
	return out, next, nil
}

// repairClusterKeys fills in version sort keys that a migration could not
// compute (rows from before migration 0009).
func (s *Store) repairClusterKeys(ctx context.Context) error {
	type row3 struct{ id, reported, desired, host string }
	var rows []row3
	err := s.b.read(ctx, func(q querier) (err error) {
		rows, err = queryAll(ctx, q, func(r row) (row3, error) {
			var x row3
			return x, r.Scan(&x.id, &x.reported, &x.desired, &x.host)
		}, `SELECT id, reported_version, desired_version, host_version FROM clusters
			WHERE (reported_version <> '' AND reported_version_key = $1) OR (desired_version <> '' AND desired_version_key = $1)
			OR (host_version <> '' AND host_version_key = $1)`, []byte{})
		return err
	})
	if err != nil {
		return fmt.Errorf("repair cluster version keys: %w", err)
	}
	for _, x := range rows {
		err := s.inTx(ctx, func(q querier) error {
			_, err := q.exec(ctx, `UPDATE clusters SET reported_version_key = $2, desired_version_key = $3, host_version_key = $4 WHERE id = $1`,
				x.id, versionSortKey(x.reported), versionSortKey(x.desired), versionSortKey(x.host))
			return err
		})
		if err != nil {
			return fmt.Errorf("repair cluster version keys: %w", err)
		}
	}
	return nil
}

// VersionCount is how many clusters run or should run a version.
type VersionCount struct {
	Version string
	Count   int64
}

// VersionSummary answers "what runs where" for the clusters a query
// selects.
type VersionSummary struct {
	Total int64
	// Reported and Desired count clusters by version, most first; ""
	// counts clusters with none.
	Reported, Desired []VersionCount
	// OffDesired counts clusters whose reported version is not their
	// desired one (including clusters that reported none).
	OffDesired int64
	// OnBlocked counts clusters reporting a version their product's
	// catalog blocks.
	OnBlocked int64
}

// SummarizeVersions counts the clusters a query selects by version.
func (s *Store) SummarizeVersions(ctx context.Context, f Filter, q inventory.Query) (VersionSummary, error) {
	var w where
	w.filter(f)
	if err := w.query(q); err != nil {
		return VersionSummary{}, err
	}
	var out VersionSummary
	scanCount := func(r row) (VersionCount, error) {
		var c VersionCount
		return c, r.Scan(&c.Version, &c.Count)
	}
	err := s.b.read(ctx, func(qr querier) error {
		var err error
		from := ` FROM clusters t` + w.String()
		if out.Reported, err = queryAll(ctx, qr, scanCount, `SELECT t.reported_version, count(*)`+from+
			` GROUP BY t.reported_version ORDER BY count(*) DESC, t.reported_version`, w.args...); err != nil {
			return err
		}
		if out.Desired, err = queryAll(ctx, qr, scanCount, `SELECT t.desired_version, count(*)`+from+
			` GROUP BY t.desired_version ORDER BY count(*) DESC, t.desired_version`, w.args...); err != nil {
			return err
		}
		if err := qr.queryRow(ctx, `SELECT count(*)`+from, w.args...).Scan(&out.Total); err != nil {
			return err
		}
		off := w
		off.conds = append(slices.Clone(w.conds), "t.reported_version <> t.desired_version")
		if err := qr.queryRow(ctx, `SELECT count(*) FROM clusters t`+off.String(), off.args...).Scan(&out.OffDesired); err != nil {
			return err
		}
		blocked := w
		blocked.conds = append(slices.Clone(w.conds), "EXISTS (SELECT 1 FROM releases r WHERE r.product = t.product AND r.version = t.reported_version AND r.state = "+
			fmt.Sprint(ReleaseBlocked)+")")
		return qr.queryRow(ctx, `SELECT count(*) FROM clusters t`+blocked.String(), blocked.args...).Scan(&out.OnBlocked)
	})
	if err != nil {
		return VersionSummary{}, fmt.Errorf("summarize versions: %w", err)
	}
	return out, nil
}
