package store_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/configstate"
	"github.com/cairnhq/cairn/internal/storetest"
)

// checkLog reads a data plane's whole log and checks it is gapless from
// 1, that each entry's previous state hash is the one before's state
// hash, and that the head and a snapshot agree with the last entry.
func checkLog(t *testing.T, s *store.Store, dataPlaneID string) []store.Revision {
	t.Helper()
	ctx := context.Background()
	revs, err := s.RevisionsAfter(ctx, dataPlaneID, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	prev := configstate.EmptyHash
	for i, r := range revs {
		if r.Revision != int64(i+1) {
			t.Fatalf("entry %d has revision %d; want %d (gapless)", i, r.Revision, i+1)
		}
		if r.PrevStateHash != prev {
			t.Fatalf("revision %d: prev state hash %s; want %s", r.Revision, r.PrevStateHash, prev)
		}
		prev = r.StateHash
	}
	h, err := s.GetHead(ctx, dataPlaneID)
	if err != nil {
		t.Fatal(err)
	}
	if h.Revision != int64(len(revs)) || h.StateHash != prev {
		t.Fatalf("head %d/%s; want %d/%s", h.Revision, h.StateHash, len(revs), prev)
	}
	snap, err := s.GetSnapshot(ctx, dataPlaneID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Head.Revision != h.Revision {
		t.Fatalf("snapshot at %d; head at %d", snap.Head.Revision, h.Revision)
	}
	return revs
}

func TestRevisionLog(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		tn := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"}))
		other := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "other", Region: "r"}))
		h := must[store.Head](t)(s.GetHead(ctx, dp.ID))
		if h.Revision != 0 || h.StateHash != configstate.EmptyHash {
			t.Fatalf("new data plane head %+v; want revision 0 with the empty state", h)
		}
		c := must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: dp.ID, Name: "c1"}))
		doc := func(scopeType, scopeID, name string) store.ConfigDocument {
			return must[store.ConfigDocument](t)(s.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{
				ScopeType: scopeType, ScopeID: scopeID, Kind: "k", Name: name, Content: []byte(name), MediaType: "text/plain"}))
		}
		a := doc(store.ScopeDataPlane, dp.ID, "a")
		doc(store.ScopeCluster, c.ID, "b")
		doc(store.ScopeDataPlane, other.ID, "x") // another data plane's log
		must[store.ConfigDocument](t)(s.UpdateConfigDocument(ctx, actor, "", a.ID, "", store.ConfigContent{Content: []byte("a2"), MediaType: "text/plain"}))
		// A refused write appends nothing.
		_, err := s.UpdateConfigDocument(ctx, actor, "", a.ID, "stale", store.ConfigContent{Content: []byte("a3"), MediaType: "text/plain"})
		wantErr(t, err, store.ErrEtagMismatch)
		if err := s.DeleteCluster(ctx, actor, "", c.ID, ""); err != nil { // cascades to "b"
			t.Fatal(err)
		}
		if err := s.DeleteConfigDocument(ctx, actor, "", a.ID, ""); err != nil {
			t.Fatal(err)
		}
		revs := checkLog(t, s, dp.ID)
		var ops []string
		for _, r := range revs {
			ops = append(ops, r.Op+":"+r.Name)
		}
		want := []string{"put:a", "put:b", "put:a", "delete:b", "delete:a"}
		if len(ops) != len(want) {
			t.Fatalf("log %v; want %v", ops, want)
		}
		for i := range want {
			if ops[i] != want[i] {
				t.Fatalf("log %v; want %v", ops, want)
			}
		}
		if string(revs[2].Content) != "a2" || revs[2].Version != 2 || revs[4].Version != 2 || len(revs[4].Content) != 0 {
			t.Fatalf("entries carry the wrong content or versions: %+v", revs)
		}
		if revs[4].StateHash != configstate.EmptyHash {
			t.Fatal("after deleting everything the state hash is not the empty state's")
		}
		checkLog(t, s, other.ID)
		// The log reads from any point.
		tail := must[[]store.Revision](t)(s.RevisionsAfter(ctx, dp.ID, 3, 10))
		if len(tail) != 2 || tail[0].Revision != 4 {
			t.Fatalf("after 3: %d entries from %d; want 2 from 4", len(tail), tail[0].Revision)
		}
	})
}

func TestCompactRevisions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		tn := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"}))
		d := must[store.ConfigDocument](t)(s.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{
			ScopeType: store.ScopeDataPlane, ScopeID: dp.ID, Kind: "k", Name: "n", Content: []byte("0"), MediaType: "text/plain"}))
		for i := range 9 {
			must[store.ConfigDocument](t)(s.UpdateConfigDocument(ctx, actor, "", d.ID, "", store.ConfigContent{Content: []byte{byte('1' + i)}, MediaType: "text/plain"}))
		}
		n := must[int64](t)(s.CompactRevisions(ctx, 3, 24*time.Hour))
		if n != 7 {
			t.Fatalf("dropped %d entries; want 7 (keep the newest 3 of 10)", n)
		}
		_, err := s.RevisionsAfter(ctx, dp.ID, 5, 10)
		wantErr(t, err, store.ErrCompacted)
		tail := must[[]store.Revision](t)(s.RevisionsAfter(ctx, dp.ID, 7, 10))
		if len(tail) != 3 || tail[0].Revision != 8 {
			t.Fatalf("after 7: %d entries; want 8..10", len(tail))
		}
		// Age: everything older than now, but the newest entry stays.
		n = must[int64](t)(s.CompactRevisions(ctx, 1000, -time.Second))
		if n != 2 {
			t.Fatalf("dropped %d by age; want 2 (never the newest)", n)
		}
		h := must[store.Head](t)(s.GetHead(ctx, dp.ID))
		if h.CompactedThrough != 9 || h.Revision != 10 {
			t.Fatalf("head %+v; want revision 10 compacted through 9", h)
		}
		// Writes continue the numbering.
		must[store.ConfigDocument](t)(s.UpdateConfigDocument(ctx, actor, "", d.ID, "", store.ConfigContent{Content: []byte("z"), MediaType: "text/plain"}))
		tail = must[[]store.Revision](t)(s.RevisionsAfter(ctx, dp.ID, 9, 10))
		if len(tail) != 2 || tail[1].Revision != 11 || tail[1].PrevStateHash != tail[0].StateHash {
			t.Fatalf("log after compaction %+v", tail)
		}
	})
}

// TestRepairHeads: heads that the revisions migration left without a
// state hash get one when the store opens.
func TestRepairHeads(t *testing.T) {
	url := storetest.SQLiteURL(t)
	s := open(t, url)
	ctx := context.Background()
	tn := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
	dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"}))
	must[store.ConfigDocument](t)(s.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{
		ScopeType: store.ScopeDataPlane, ScopeID: dp.ID, Kind: "k", Name: "n", Content: []byte("x"), MediaType: "text/plain"}))
	want := must[store.Head](t)(s.GetHead(ctx, dp.ID)).StateHash
	s.Close()
	db, err := sql.Open("sqlite", url[len("sqlite:"):])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE data_plane_heads SET state_hash = ''`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s2 := open(t, url)
	if got := must[store.Head](t)(s2.GetHead(ctx, dp.ID)).StateHash; got != want {
		t.Fatalf("repaired state hash %q; want %q", got, want)
	}
	if _, err := s2.GetSnapshot(ctx, dp.ID); errors.Is(err, store.ErrNotFound) || err != nil {
		t.Fatalf("snapshot after repair: %v", err)
	}
}

// OnRevisions reports a data plane once per committed transaction that
// appended to its log, and never for one that failed.
func TestOnRevisionsAfterCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		var got []string
		s.OnRevisions(func(dp string) { got = append(got, dp) })
		acme := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		dp := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: acme.ID, Name: "use1", Region: "r"}))
		if len(got) != 0 {
			t.Fatalf("notified %v for writes without revisions", got)
		}
		in := store.ConfigDocument{ScopeType: store.ScopeDataPlane, ScopeID: dp.ID, Kind: "cairn.dev/x", Name: "a",
			Content: []byte("1"), MediaType: "text/plain"}
		doc := must[store.ConfigDocument](t)(s.CreateConfigDocument(ctx, actor, "", in))
		if len(got) != 1 || got[0] != dp.ID {
			t.Fatalf("after a create: notified %v; want [%s]", got, dp.ID)
		}
		if _, err := s.CreateConfigDocument(ctx, actor, "", in); err == nil {
			t.Fatal("duplicate created")
		}
		if _, err := s.UpdateConfigDocument(ctx, actor, "", doc.ID, "stale-etag", store.ConfigContent{Content: []byte("2"), MediaType: "text/plain"}); err == nil {
			t.Fatal("update with a stale etag succeeded")
		}
		if len(got) != 1 {
			t.Fatalf("notified %v after failed writes; want nothing new", got)
		}
	})
}
