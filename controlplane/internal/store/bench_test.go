package store_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cairnhq/cairn/controlplane/internal/selector"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/storetest"
)

// BenchmarkUpdateConfigDocument measures one audited config write (read,
// conditional update, label index, audit event, commit) per iteration.
func BenchmarkUpdateConfigDocument(b *testing.B) {
	for _, be := range storetest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			s, err := store.Open(context.Background(), store.Config{URL: be.URL(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			tn, _ := s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"})
			dp, _ := s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"})
			doc, err := s.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{ScopeType: store.ScopeDataPlane, ScopeID: dp.ID,
				Kind: "k", Name: "n", Content: []byte(`{"a":1}`), MediaType: "application/json", Labels: map[string]string{"team": "x"}})
			if err != nil {
				b.Fatal(err)
			}
			content := store.ConfigContent{Content: []byte(`{"a":2}`), MediaType: "application/json", Labels: map[string]string{"team": "x"}}
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.UpdateConfigDocument(ctx, actor, "", doc.ID, "", content); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkListClustersSelector measures one page of 100 clusters chosen
// by a two-term label selector out of 5,000.
func BenchmarkListClustersSelector(b *testing.B) {
	for _, be := range storetest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			url := be.URL(b)
			s, err := store.Open(context.Background(), store.Config{URL: url})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			tn, _ := s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"})
			dp, _ := s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"})
			envs := []string{"prod", "staging", "dev"}
			for i := range 5000 {
				if _, err := s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: dp.ID, Name: "c" + strconv.Itoa(i),
					Labels: map[string]string{"env": envs[i%3], "tier": []string{"gold", "silver"}[i%2]}}); err != nil {
					b.Fatal(err)
				}
			}
			// Measure the steady state: PostgreSQL plans the selector's
			// EXISTS joins badly until autovacuum has gathered statistics
			// (BENCHMARKS.md has the figure without this step).
			if be.Name != "sqlite" && os.Getenv("CAIRN_BENCH_NO_ANALYZE") == "" {
				conn, err := pgx.Connect(ctx, strings.Replace(url, "cockroachdb://", "postgresql://", 1))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
					b.Fatal(err)
				}
				conn.Close(ctx)
			}
			sel, _ := selector.Parse("env=prod,tier in (gold)")
			b.ResetTimer()
			for b.Loop() {
				got, _, err := s.ListClusters(ctx, store.Filter{TenantID: tn.ID, Selector: sel}, "", store.Page{Size: 100})
				if err != nil || len(got) != 100 {
					b.Fatalf("got %d clusters, %v", len(got), err)
				}
			}
		})
	}
}

// BenchmarkIngestReportsMany measures one group of 200 agents' report
// batches in one IngestReportsMany call, as the agent API groups
// concurrent Report calls: "statuses", each agent's status (the progress
// a config change causes); "metrics", each agent's metrics batch of 11
// points (every 30 s from every agent).
func BenchmarkIngestReportsMany(b *testing.B) {
	const agents = 200
	// Eleven points a batch, as cairn-agent's own sample sends.
	names := make([]string, 11)
	for i := range names {
		names[i] = "cairn_agent_metric_" + strconv.Itoa(i)
	}
	for _, be := range storetest.Backends() {
		for _, shape := range []struct {
			name  string
			items func(seq int64) []store.Report
		}{
			{"statuses", func(seq int64) []store.Report { return []store.Report{statusReport(seq, seq)} }},
			{"metrics", func(seq int64) []store.Report { return []store.Report{metricsReport(seq, names...)} }},
		} {
			b.Run(be.Name+"/"+shape.name, func(b *testing.B) {
				ctx := context.Background()
				s := must[*store.Store](b)(store.Open(ctx, store.Config{URL: be.URL(b)}))
				b.Cleanup(s.Close)
				f := newEnrollFixture(b, s)
				group := make([]store.Reports, agents)
				for i := range group {
					ag := f.agent(b)
					group[i] = store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q"}
				}
				seq := int64(0)
				for b.Loop() {
					seq++
					for i := range group {
						group[i].Items = shape.items(seq)
					}
					if _, err := s.IngestReportsMany(ctx, group); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkIngestReports measures storing one agent's report batch: a
// status and a metrics batch of 20 points, with the queue's sequence
// number, in one transaction. Agents rotate over 100, as a fleet's
// reports interleave.
func BenchmarkIngestReports(b *testing.B) {
	for _, be := range storetest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			s, err := store.Open(context.Background(), store.Config{URL: be.URL(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			f := newEnrollFixture(b, s)
			var agents []string
			for range 100 {
				agents = append(agents, f.agent(b).ID)
			}
			seq := make([]int64, len(agents))
			names := make([]string, 20)
			for i := range names {
				names[i] = "metric_" + strconv.Itoa(i)
			}
			b.ResetTimer()
			i := 0
			for b.Loop() {
				a := i % len(agents)
				i++
				seq[a] += 2
				items := []store.Report{statusReport(seq[a]-1, seq[a]), metricsReport(seq[a], names...)}
				if _, err := s.IngestReports(ctx, store.Reports{AgentID: agents[a], DataPlaneID: f.dp.ID, QueueID: "q", Items: items}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
