package agentapi_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// wantUpdate reads the next update and fails unless it has the
// payload type and nonce wanted.
func wantUpdate(t *testing.T, c *streamClient, wantType, wantNonce, why string) {
	t.Helper()
	m, typ := c.nextUpdate()
	if typ != wantType || m.Nonce != wantNonce {
		t.Fatalf("got %s nonce %q; want %s nonce %q: %s", typ, m.Nonce, wantType, wantNonce, why)
	}
}

// readSnapshot reads a whole snapshot and returns its end's nonce.
func readSnapshot(t *testing.T, c *streamClient) string {
	t.Helper()
	if _, typ := c.nextUpdate(); typ != fanout.ResetType {
		t.Fatalf("got %s; want a snapshot (reset)", typ)
	}
	for {
		m, typ := c.nextUpdate()
		if typ == fanout.SnapshotEndType {
			return m.Nonce
		}
	}
}

func nack(rev int64, nonce string, reason agentv1.NackReason) *agentv1.StreamRequest {
	return &agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Nack{Nack: &agentv1.Nack{Revision: rev, Nonce: nonce, Reason: reason, Detail: "review"}}}
}

func ack(rev int64, nonce string) *agentv1.StreamRequest {
	return &agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Ack{Ack: &agentv1.Ack{Revision: rev, Nonce: nonce}}}
}

// An agent refuses a delta whose signature does not verify (bad or
// missing signature, unknown or expired key, malformed payload) before it
// may trust the payload, so its Nack carries revision 0 and only the nonce
// says which update it refused (configsync.handleDelta: refuse(nonce, 0,
// ...)). The control plane wrote that nonce itself (the revision), but
// record() looks only at Nack.Revision: st.nacked stays 0 and the store
// records last_nack_revision 0. So (1) ListAgents with_nack
// (last_nack_revision > last_applied_revision) never lists an agent that
// refuses signatures, the refusals that matter most; and (2) the next
// revision goes out as a delta the agent cannot apply (a gap, NACKed
// again), and only the revision after that brings the snapshot.
func TestNackWithoutRevisionUsesNonce(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	putDoc(t, e, "a")
	c := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, ver)
	c.next() // key set
	wantUpdate(t, c, fanout.DeltaType, "1", "revision 1 as a delta")

	c.send(nack(0, "1", agentv1.NackReason_NACK_REASON_BAD_SIGNATURE))
	waitFor(t, "the nack recorded", func() bool {
		s, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
		return err == nil && s.LastNackReason == "NACK_REASON_BAD_SIGNATURE"
	})
	s, _ := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
	t.Logf("agent sync after the nack: %+v", s)
	listed, _, err := e.Store.ListAgents(context.Background(), store.Filter{}, store.AgentFilter{WithNack: true}, store.Page{Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 {
		t.Errorf("ListAgents with_nack lists %d agents after the agent refused revision 1 (nonce \"1\"); want 1", len(listed))
	}

	// Revision 2 supersedes the refused one: the agent, still at 0,
	// needs a snapshot; delta 2 (from revision 1) is useless to it.
	putDoc(t, e, "b")
	if m, typ := c.nextUpdate(); typ != fanout.ResetType {
		t.Errorf("after the agent refused revision 1 and revision 2 exists, got %s nonce %q; want a snapshot (reset)", typ, m.Nonce)
	}
}

// A Nack the handler takes up after it has already superseded the refused
// revision with a snapshot re-arms st.nacked, and nothing clears it when
// the agent then acknowledges the snapshot: the next change goes out as a
// whole snapshot instead of one delta.
//
// The order is an ordinary race: the agent refuses delta 1 and then delta 2
// (a gap) straight away, but the handler's select may take the hub's
// notice of revision 3 (catchUp: snapshot, nacked = 0) before the second
// Nack waiting in the acks channel. The test sends the second Nack after
// reading the snapshot to get that order every time.
func TestStaleNackAfterSnapshot(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	putDoc(t, e, "a")
	putDoc(t, e, "b")
	c := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, ver)
	c.next() // key set
	wantUpdate(t, c, fanout.DeltaType, "1", "catch-up")
	wantUpdate(t, c, fanout.DeltaType, "2", "catch-up")
	sync := func(what string, cond func(store.AgentSync) bool) {
		t.Helper()
		waitFor(t, what, func() bool {
			s, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
			return err == nil && cond(s)
		})
	}

	// The agent cannot apply revision 1 (say, a full disk), and so refuses
	// delta 2 too (a gap). Revision 3 appears meanwhile. The control plane
	// answers with a snapshot — at 2 or at 3, depending on when it reads
	// the refusals — and the refusal of delta 2 may reach it after that
	// snapshot went out.
	c.send(nack(1, "1", agentv1.NackReason_NACK_REASON_APPLY_FAILED))
	c.send(nack(2, "2", agentv1.NackReason_NACK_REASON_STALE))
	putDoc(t, e, "c")
	end := readSnapshot(t, c)
	rev, err := strconv.ParseInt(strings.TrimPrefix(end, "snapshot-"), 10, 64)
	if err != nil || (rev != 2 && rev != 3) {
		t.Fatalf("snapshot end nonce %q; want snapshot-2 or snapshot-3", end)
	}
	c.send(ack(rev, end))
	sync("snapshot acknowledged", func(s store.AgentSync) bool { return s.LastAppliedRevision == rev })

	// The agent is current: the next revisions are deltas, with no second
	// snapshot re-armed by the stale refusal.
	putDoc(t, e, "d")
	for {
		m, typ := c.nextUpdate()
		if typ != fanout.DeltaType {
			t.Fatalf("got %s nonce %q after the snapshot was acknowledged; want only deltas", typ, m.Nonce)
		}
		if m.Nonce == "4" {
			break
		}
	}
}

// An agent at revision R where the log was compacted through exactly R
// (--history-revisions reached, or --history-max-age on a quiet data
// plane, which keeps only the newest entry) gets a snapshot, although the
// log holds every delta it needs (R+1 .. head). catchUp checks the agent's
// state hash with RevisionsAfter(R-1), which needs entry R itself; the
// state at R is also revision R+1's prev_state_hash. The documented rule
// is "the deltas since the agent's revision, or a snapshot when the log no
// longer reaches back".
func TestCompactionBoundaryGetsDeltas(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ctx := context.Background()
	putDoc(t, e, "a")
	putDoc(t, e, "b")
	putDoc(t, e, "c")
	revs, err := e.Store.RevisionsAfter(ctx, e.DP.ID, 1, 1)
	if err != nil || len(revs) != 1 || revs[0].Revision != 2 {
		t.Fatalf("revision 2: %v, %v", revs, err)
	}
	at2 := revs[0].StateHash
	// Keep one entry: revision 3 stays, 1 and 2 go.
	if _, err := e.Store.CompactRevisions(ctx, 1, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if after, err := e.Store.RevisionsAfter(ctx, e.DP.ID, 2, 10); err != nil || len(after) != 1 || after[0].Revision != 3 || after[0].PrevStateHash != at2 {
		t.Fatalf("the log after 2: %v, %v; want revision 3 from revision 2's state", after, err)
	}

	c := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{AppliedRevision: 2, StateHash: at2, Epoch: "e"}, sign.NewVerifier(e.Signer.RootPublicKey()))
	c.next() // key set
	wantUpdate(t, c, fanout.DeltaType, "3", "the log holds revision 3, the only one the agent at 2 lacks")
}

// The admin API promises (ListAgentsRequest.not_seen_for) that "an open
// stream refreshes the agent's last-seen time once a minute", but the
// refresh runs only on a heartbeat tick: with --heartbeat-interval above a
// minute (allowed up to 10m) an idle, connected agent's last_seen ages to
// the heartbeat interval, and not_seen_for of a few minutes lists agents
// that are connected. (Even at the 10s default the refresh comes up to a
// heartbeat late.) This test waits up to three minutes.
func TestIdleStreamRefreshesLastSeenEveryMinute(t *testing.T) {
	e := start(t, options{HeartbeatEvery: 10 * time.Minute})
	a := e.enrollAgent(t, e.DP.ID)
	c := openStream(t, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, sign.NewVerifier(e.Signer.RootPublicKey()))
	c.next() // key set
	var first time.Time
	waitFor(t, "the current agent recorded as seen", func() bool {
		s, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
		first = s.LastSeen
		return err == nil
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		s, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
		if err == nil && s.LastSeen.After(first) {
			t.Logf("last_seen refreshed after %v", s.LastSeen.Sub(first))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("last_seen still %v three minutes later on an open stream; want it refreshed once a minute", first)
		}
		time.Sleep(time.Second)
	}
}

// TestBadHelloRefused: a Hello whose texts the store could not take, or
// whose revision is negative, ends the stream with InvalidArgument naming
// the field, and records no position.
func TestBadHelloRefused(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	for _, tc := range []struct {
		name  string
		hello *agentv1.Hello
		field string
	}{
		{"NUL in epoch", &agentv1.Hello{Epoch: "e\x00", StateHash: configstate.EmptyHash}, "hello.epoch"},
		{"long epoch", &agentv1.Hello{Epoch: strings.Repeat("e", 129), StateHash: configstate.EmptyHash}, "hello.epoch"},
		{"control character in state hash", &agentv1.Hello{Epoch: "e", StateHash: "h\x01"}, "hello.state_hash"},
		{"negative revision", &agentv1.Hello{Epoch: "e", StateHash: configstate.EmptyHash, AppliedRevision: -1}, "hello.applied_revision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.enrollAgent(t, e.DP.ID)
			stream, err := agentv1.NewConfigServiceClient(e.dialMTLS(t, a.Src)).Stream(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			_ = stream.Send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Hello{Hello: tc.hello}})
			_, err = stream.Recv()
			wantCode(t, err, codes.InvalidArgument)
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("refusal %v does not name %s", err, tc.field)
			}
			if _, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("position after a refused Hello: %v; want ErrNotFound", err)
			}
		})
	}
}
