package fanout_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
	"github.com/cairnhq/cairn/internal/storetest"
)

var actor = store.Actor{ID: "test"}

type fixture struct {
	st   *store.Store
	keys *signer.Signer
	env  *fanout.Envelopes
	dp   store.DataPlane
	ver  *sign.Verifier
	now  time.Time
	mu   sync.Mutex
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func setup(t *testing.T, url string, chunkBytes int) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	keys, err := signer.Open(signer.Config{Dir: filepath.Join(t.TempDir(), "signing")})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st, keys: keys, now: time.Now()}
	f.env, err = fanout.NewEnvelopes(fanout.Config{Store: st, Signer: keys, Now: f.clock, ChunkBytes: chunkBytes, UpdateTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := st.CreateTenant(ctx, actor, store.Tenant{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if f.dp, err = st.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tn.ID, Name: "dp", Region: "r"}); err != nil {
		t.Fatal(err)
	}
	f.ver = sign.NewVerifier(keys.RootPublicKey())
	ks, v := f.env.KeySet()
	if err := f.ver.UpdateKeySet(toSign(ks), time.Now()); err != nil {
		t.Fatalf("key set: %v", err)
	}
	if v != f.ver.KeySet().Version {
		t.Fatalf("KeySet says version %d; the envelope holds %d", v, f.ver.KeySet().Version)
	}
	if again, _ := f.env.KeySet(); again != ks {
		t.Fatal("KeySet built the same version twice")
	}
	return f
}

func toSign(e *agentv1.SignedEnvelope) sign.Envelope {
	out := sign.Envelope{PayloadType: e.PayloadType, Payload: e.Payload}
	for _, s := range e.Signatures {
		out.Signatures = append(out.Signatures, sign.Signature{KeyID: s.KeyId, Sig: s.Sig})
	}
	return out
}

func (f *fixture) open(t *testing.T, e *agentv1.SignedEnvelope, typ string, m proto.Message) {
	t.Helper()
	payload, _, err := f.ver.Verify(toSign(e), typ, time.Now())
	if err != nil {
		t.Fatalf("verify %s: %v", typ, err)
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) put(t *testing.T, name, content string) store.ConfigDocument {
	t.Helper()
	d, err := f.st.CreateConfigDocument(context.Background(), actor, "", store.ConfigDocument{
		ScopeType: store.ScopeDataPlane, ScopeID: f.dp.ID, Kind: "k", Name: name, Content: []byte(content), MediaType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDeltaSignedOnceAndShared(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			f := setup(t, b.URL(t), 0)
			ctx := context.Background()
			d := f.put(t, "a", "hello")
			var wg sync.WaitGroup
			got := make([]*agentv1.SignedEnvelope, 16)
			for i := range got {
				wg.Add(1)
				go func() {
					defer wg.Done()
					e, err := f.env.Delta(ctx, f.dp.ID, 1)
					if err != nil {
						t.Error(err)
					}
					got[i] = e
				}()
			}
			wg.Wait()
			for i := range got {
				if got[i] != got[0] {
					t.Fatalf("call %d got another envelope; want the one signed once and shared", i)
				}
			}
			var p agentv1.DeltaPayload
			f.open(t, got[0], fanout.DeltaType, &p)
			op := p.Operations[0]
			if p.DataPlaneId != f.dp.ID || p.FromRevision != 0 || p.ToRevision != 1 || p.PrevStateHash != configstate.EmptyHash ||
				op.Kind != agentv1.Operation_KIND_PUT || op.Document.Id != d.ID || string(op.Document.Content) != "hello" {
				t.Fatalf("delta payload %v", &p)
			}
			want := configstate.Hash([]configstate.Entry{{Key: configstate.Key(d.ScopeType, d.ScopeID, d.Kind, d.Name), Version: 1, MediaType: "text/plain", Content: []byte("hello")}})
			if p.StateHash != want {
				t.Fatalf("state hash %s; want %s (what an agent computes)", p.StateHash, want)
			}
			// Past half its validity the envelope is signed afresh.
			f.advance(31 * time.Minute)
			again, err := f.env.Delta(ctx, f.dp.ID, 1)
			if err != nil {
				t.Fatal(err)
			}
			if again == got[0] {
				t.Fatal("envelope not re-signed after half its validity")
			}
			// A revision that does not exist yet is an error, not an empty delta.
			if _, err := f.env.Delta(ctx, f.dp.ID, 2); err == nil {
				t.Fatal("delta for a future revision succeeded")
			}
		})
	}
}

func TestDeltaCompacted(t *testing.T) {
	f := setup(t, storetest.SQLiteURL(t), 0)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		f.put(t, n, n)
	}
	if _, err := f.st.CompactRevisions(ctx, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := f.env.Delta(ctx, f.dp.ID, 1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("got %v; want ErrCompacted", err)
	}
	if _, err := f.env.Delta(ctx, f.dp.ID, 3); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshot(t *testing.T) {
	f := setup(t, storetest.SQLiteURL(t), 10)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		f.put(t, n, "0123456789"[:6]) // 6 bytes: at most one per 10-byte chunk
	}
	envs, head, err := f.env.Snapshot(ctx, f.dp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if head.Revision != 5 || len(envs) != 1+5+1 {
		t.Fatalf("head %d, %d envelopes; want revision 5 and reset + 5 chunks + end", head.Revision, len(envs))
	}
	var reset agentv1.ResetPayload
	f.open(t, envs[0], fanout.ResetType, &reset)
	var entries []configstate.Entry
	for i, e := range envs[1 : len(envs)-1] {
		var c agentv1.SnapshotChunkPayload
		f.open(t, e, fanout.SnapshotChunkType, &c)
		if c.Index != int32(i) || c.SnapshotId != reset.SnapshotId {
			t.Fatalf("chunk %d: index %d, snapshot %s; want %d, %s", i, c.Index, c.SnapshotId, i, reset.SnapshotId)
		}
		for _, d := range c.Documents {
			entries = append(entries, configstate.Entry{Key: configstate.Key(d.ScopeType, d.ScopeId, d.Kind, d.Name), Version: d.Version, MediaType: d.MediaType, Content: d.Content})
		}
	}
	var end agentv1.SnapshotEndPayload
	f.open(t, envs[len(envs)-1], fanout.SnapshotEndType, &end)
	if end.Chunks != 5 || end.Revision != 5 || end.SnapshotId != reset.SnapshotId || end.StateHash != configstate.Hash(entries) || end.StateHash != head.StateHash {
		t.Fatalf("snapshot end %v; want 5 chunks at revision 5 whose documents hash to the state hash", &end)
	}
	again, _, err := f.env.Snapshot(ctx, f.dp.ID)
	if err != nil || again[0] != envs[0] {
		t.Fatalf("second snapshot at the same revision was signed again (%v)", err)
	}
}

func TestHeartbeat(t *testing.T) {
	f := setup(t, storetest.SQLiteURL(t), 0)
	ctx := context.Background()
	head, err := f.st.GetHead(ctx, f.dp.ID)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := f.env.Heartbeat(ctx, head)
	if err != nil {
		t.Fatal(err)
	}
	var p agentv1.HeartbeatPayload
	f.open(t, hb, fanout.HeartbeatType, &p)
	if p.Revision != 0 || p.StateHash != configstate.EmptyHash || p.ExpireTime.AsTime().Sub(p.IssueTime.AsTime()) != fanout.DefaultHeartbeatTTL {
		t.Fatalf("heartbeat %v", &p)
	}
	f.advance(fanout.DefaultHeartbeatTTL/3 + time.Second)
	if hb2, _ := f.env.Heartbeat(ctx, head); hb2 == hb {
		t.Fatal("heartbeat not renewed after a third of its validity")
	}
}
