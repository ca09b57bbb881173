package agentapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// reviewWantUpdate reads the next update and fails unless it has the
// payload type and nonce wanted.
func reviewWantUpdate(t *testing.T, c *streamClient, wantType, wantNonce, why string) {
	t.Helper()
	m, typ := c.nextUpdate()
	if typ != wantType || m.Nonce != wantNonce {
		t.Fatalf("got %s nonce %q; want %s nonce %q: %s", typ, m.Nonce, wantType, wantNonce, why)
	}
}

// reviewReadSnapshot reads a whole snapshot and returns its end's nonce.
func reviewReadSnapshot(t *testing.T, c *streamClient) string {
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
func TestReviewNackWithoutRevisionUsesNonce(t *testing.T) {
	t.Skip("BUG: a Nack with revision 0 (signature refusals) is matched by revision only, not by the nonce the server issued: with_nack misses the agent and the next revision is sent as an unusable delta instead of a snapshot")
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	putDoc(t, e, "a")
	c := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, ver)
	c.next() // key set
	reviewWantUpdate(t, c, fanout.DeltaType, "1", "revision 1 as a delta")

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
func TestReviewStaleNackAfterSnapshot(t *testing.T) {
	t.Skip("BUG: a Nack for a revision the stream already superseded by a snapshot (or below the agent's acked revision) sets st.nacked again; the next change is sent as a full snapshot instead of a delta")
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	putDoc(t, e, "a")
	putDoc(t, e, "b")
	c := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, ver)
	c.next() // key set
	reviewWantUpdate(t, c, fanout.DeltaType, "1", "catch-up")
	reviewWantUpdate(t, c, fanout.DeltaType, "2", "catch-up")
	sync := func(what string, cond func(store.AgentSync) bool) {
		t.Helper()
		waitFor(t, what, func() bool {
			s, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
			return err == nil && cond(s)
		})
	}

	// The agent cannot apply revision 1 (say, a full disk).
	c.send(nack(1, "1", agentv1.NackReason_NACK_REASON_APPLY_FAILED))
	sync("nack 1 recorded", func(s store.AgentSync) bool { return s.LastNackRevision == 1 })
	// Revision 3 supersedes it: a snapshot, as documented.
	putDoc(t, e, "c")
	if nonce := reviewReadSnapshot(t, c); nonce != "3" {
		t.Fatalf("snapshot end nonce %q; want 3", nonce)
	}
	// The agent's refusal of delta 2 (a gap after refusing 1) is taken up
	// now; then the agent applies the snapshot.
	c.send(nack(2, "2", agentv1.NackReason_NACK_REASON_STALE))
	sync("nack 2 recorded", func(s store.AgentSync) bool { return s.LastNackRevision == 2 })
	c.send(ack(3, "3"))
	sync("snapshot acknowledged", func(s store.AgentSync) bool { return s.LastAppliedRevision == 3 })

	// The agent is current at 3: revision 4 is one delta.
	putDoc(t, e, "d")
	reviewWantUpdate(t, c, fanout.DeltaType, "4", "the agent acknowledged revision 3, so revision 4 needs no snapshot")
}

// An agent at revision R where the log was compacted through exactly R
// (--history-revisions reached, or --history-max-age on a quiet data
// plane, which keeps only the newest entry) gets a snapshot, although the
// log holds every delta it needs (R+1 .. head). catchUp checks the agent's
// state hash with RevisionsAfter(R-1), which needs entry R itself; the
// state at R is also revision R+1's prev_state_hash. The documented rule
// is "the deltas since the agent's revision, or a snapshot when the log no
// longer reaches back".
func TestReviewCompactionBoundaryGetsDeltas(t *testing.T) {
	t.Skip("BUG: an agent exactly at the compaction boundary (revision == compacted_through) gets a snapshot although every delta after its revision is in the log")
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
	reviewWantUpdate(t, c, fanout.DeltaType, "3", "the log holds revision 3, the only one the agent at 2 lacks")
}

// The admin API promises (ListAgentsRequest.not_seen_for) that "an open
// stream refreshes the agent's last-seen time once a minute", but the
// refresh runs only on a heartbeat tick: with --heartbeat-interval above a
// minute (allowed up to 10m) an idle, connected agent's last_seen ages to
// the heartbeat interval, and not_seen_for of a few minutes lists agents
// that are connected. (Even at the 10s default the refresh comes up to a
// heartbeat late.) This test waits up to three minutes.
func TestReviewIdleStreamRefreshesLastSeenEveryMinute(t *testing.T) {
	t.Skip("BUG: last_seen of an idle stream is refreshed only on heartbeat ticks, so with --heartbeat-interval > 1m it is refreshed every heartbeat interval, not once a minute as not_seen_for documents (test takes ~3 minutes)")
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
