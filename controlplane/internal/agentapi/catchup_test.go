package agentapi_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
	"github.com/cairnhq/cairn/internal/storetest"
)

// An agent whose claimed state is not the control plane's gets a snapshot
// at once, also when it claims the head's revision or one beyond it (a
// database restored from backup); until this was fixed, such an agent was
// sent nothing until the head moved past its revision.
func TestConfigStreamResumeChecksState(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	putDoc(t, e, "a")
	putDoc(t, e, "b")
	head, err := e.Store.GetHead(t.Context(), e.DP.ID)
	if err != nil || head.Revision != 2 {
		t.Fatalf("head %+v, %v; want revision 2", head, err)
	}
	// Each stream starts without a key set, so its first message is one.
	open := func(t *testing.T, hello *agentv1.Hello) *streamClient {
		t.Helper()
		c := openStreamWithin(t, 3*waitLimit, e, a, hello, sign.NewVerifier(e.Signer.RootPublicKey()))
		if _, typ := c.next(); typ != sign.KeySetPayloadType {
			t.Fatalf("first message %s; want the key set", typ)
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		hello *agentv1.Hello
	}{
		{"at the head, another state", &agentv1.Hello{AppliedRevision: 2, StateHash: configstate.EmptyHash, Epoch: "e"}},
		{"ahead of the log", &agentv1.Hello{AppliedRevision: 5, StateHash: head.StateHash, Epoch: "e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t, tc.hello)
			if _, typ := c.nextUpdate(); typ != fanout.ResetType {
				t.Fatalf("got %s; want a snapshot (reset)", typ)
			}
			for {
				m, typ := c.nextUpdate()
				if typ == fanout.SnapshotEndType {
					var end agentv1.SnapshotEndPayload
					if err := proto.Unmarshal(m.GetUpdate().Payload, &end); err != nil || end.Revision != 2 {
						t.Fatalf("snapshot end %v, %v; want revision 2", &end, err)
					}
					return
				}
			}
		})
	}

	// At the head with the head's state: nothing to send until a change,
	// which comes as a delta.
	c := open(t, &agentv1.Hello{AppliedRevision: 2, StateHash: head.StateHash, Epoch: "e"})
	putDoc(t, e, "c")
	if m, typ := c.nextUpdate(); typ != fanout.DeltaType || m.Nonce != "3" {
		t.Fatalf("current agent got %s nonce %s; want delta 3", typ, m.Nonce)
	}
}

// openStreamWithin is openStream on a stream that ends after limit, so that
// a test waiting for a message that never comes fails instead of hanging.
func openStreamWithin(t *testing.T, limit time.Duration, e *env, a *testAgent, hello *agentv1.Hello, ver *sign.Verifier) *streamClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	stream, err := agentv1.NewConfigServiceClient(e.dialMTLS(t, a.Src)).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	return &streamClient{t: t, stream: stream, ver: ver}
}

// TestCatchUpRetriesStoreErrors: a catch-up that cannot read the store
// (here a table is gone for a moment) is tried again on the same stream,
// which stays open; ending it, as the stream once did, sends every agent of
// a replica through reconnection and admission at once when the store
// blips. A retried catch-up still knows what it had found: an agent whose
// state is not the log's gets its snapshot once the store is back. SQLite
// only: renaming a table under PostgreSQL does not break the statements
// the pool has prepared.
func TestCatchUpRetriesStoreErrors(t *testing.T) {
	for _, tc := range []struct {
		name, table string
		hello       *agentv1.Hello
		want, nonce string
	}{
		{"head unreadable, agent behind", "data_plane_heads",
			&agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, fanout.DeltaType, "1"},
		// At the head's revision with another state: a snapshot, whose
		// documents cannot be read at first.
		{"documents unreadable, agent diverged", "config_documents",
			&agentv1.Hello{AppliedRevision: 1, StateHash: configstate.EmptyHash, Epoch: "e"}, fanout.ResetType, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := storetest.SQLiteURL(t)
			e := start(t, options{StoreURL: url, HeartbeatEvery: time.Hour})
			a := e.enrollAgent(t, e.DP.ID)
			putDoc(t, e, "a")
			db, err := sql.Open("sqlite", strings.TrimPrefix(url, "sqlite:"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			exec := func(q string) {
				t.Helper()
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			exec(`ALTER TABLE ` + tc.table + ` RENAME TO away`)
			c := openStreamWithin(t, 4*waitLimit, e, a, tc.hello, sign.NewVerifier(e.Signer.RootPublicKey()))
			if _, typ := c.next(); typ != sign.KeySetPayloadType {
				t.Fatalf("first message %s; want the key set", typ)
			}
			waitFor(t, "a catch-up retried", func() bool { return metrics(t, e.Server)["cairn_agent_stream_catchup_retries_total"] >= 1 })
			exec(`ALTER TABLE away RENAME TO ` + tc.table)
			if m, typ := c.nextUpdate(); typ != tc.want || m.Nonce != tc.nonce {
				t.Fatalf("after the store came back got %s nonce %q; want %s nonce %q on the same stream", typ, m.Nonce, tc.want, tc.nonce)
			}
		})
	}
}
