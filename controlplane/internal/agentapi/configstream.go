package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// DefaultHeartbeatEvery is how often an idle stream gets a signed
// heartbeat.
const DefaultHeartbeatEvery = 10 * time.Second

type configService struct {
	agentv1.UnimplementedConfigServiceServer
	s *Server
}

// streamState is one stream's position. Only the handler's goroutine
// touches it; acks arrive on their own goroutine and are passed over a
// channel, and messages leave through the stream's sendQueue.
type streamState struct {
	c       caller
	hello   *agentv1.Hello
	sent    int64 // newest revision queued to send
	nacked  int64 // newest revision refused; not resent until a newer one exists
	applied int64
	checked bool      // the agent's state was checked against the log's at its revision
	saved   time.Time // when the position was last recorded
	// snapshot is the revision of the newest snapshot sent; refusals of
	// older revisions are stale.
	snapshot int64
}

// snapshotNonce prefixes the nonce of a snapshot's end, so that the
// agent's answer tells a snapshot at revision R from the delta to R.
const snapshotNonce = "snapshot-"

// seenEvery is how often an idle stream records that its agent is still
// there (Agent.sync.last_seen_time): rarely enough that a large fleet's
// idle streams cost few writes, often enough for ListAgents not_seen_for
// of a few minutes.
const seenEvery = time.Minute

func keySetVersion(env *agentv1.SignedEnvelope) int64 {
	var ks sign.KeySet
	if json.Unmarshal(env.Payload, &ks) != nil {
		return 0
	}
	return ks.Version
}

// Stream serves one agent's config stream: hello, key set, catch-up by
// deltas or snapshot, then live deltas and heartbeats. The data plane is
// the caller's, from its certificate. New streams are admitted at a
// bounded rate (admission); messages go out through a bounded send queue,
// and a stream whose agent stops taking them is ended with Unavailable.
func (cs *configService) Stream(stream agentv1.ConfigService_StreamServer) error {
	s := cs.s
	ctx := stream.Context()
	c, ok := callerFrom(ctx)
	if !ok {
		return status.Error(codes.Internal, "no caller")
	}
	if ok, retry := s.admit.admit(); !ok {
		s.metrics.refused.Inc()
		s.log.DebugContext(ctx, "config stream refused by admission", "agent_id", c.AgentID, "retry_in", retry)
		st, err := status.New(codes.ResourceExhausted, "too many new config streams; retry later").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
		if err != nil {
			return status.Error(codes.ResourceExhausted, "too many new config streams; retry later")
		}
		return st.Err()
	}
	s.metrics.admitted.Inc()
	s.metrics.open.Inc()
	defer s.metrics.open.Dec()
	err := cs.serve(ctx, stream, c)
	if errors.Is(err, errFellBehind) {
		s.metrics.dropped.Inc()
		s.log.WarnContext(ctx, "config stream fell behind; ended", "agent_id", c.AgentID, "send_timeout", s.cfg.StreamSendTimeout)
	}
	return err
}

// serve runs an admitted stream. The handler's goroutine reads the store
// and decides what to send; a sendQueue sends it.
func (cs *configService) serve(ctx context.Context, stream agentv1.ConfigService_StreamServer, c caller) error {
	s := cs.s
	// The Hello is awaited on its own goroutine, so that revocation and
	// shutdown (which cancel ctx) end a stream that never sends one;
	// returning ends the stream, which ends that Recv.
	type received struct {
		m   *agentv1.StreamRequest
		err error
	}
	firstc := make(chan received, 1)
	go func() {
		m, err := stream.Recv()
		firstc <- received{m, err}
	}()
	var first received
	select {
	case <-ctx.Done():
		return ctx.Err()
	case first = <-firstc:
	}
	if first.err != nil {
		return first.err
	}
	hello := first.m.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a Hello")
	}
	st := &streamState{c: c, hello: hello, sent: hello.AppliedRevision, applied: hello.AppliedRevision}
	sub := s.cfg.Hub.Subscribe(c.DataPlaneID)
	defer sub.Close()

	// Returning cancels the sender; a Send it is blocked in returns once
	// gRPC ends the stream after this handler returns.
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	q := newSendQueue(s.cfg.StreamQueue, s.cfg.StreamSendTimeout, s.metrics.sent)
	go q.run(sendCtx, stream.Send)

	// Acks and Nacks arrive concurrently with sends.
	acks := make(chan *agentv1.StreamRequest, 64)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case acks <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	keySetSent := hello.KeySetVersion
	sendKeySet := func() error {
		ks := s.cfg.Envelopes.KeySet()
		v := keySetVersion(ks)
		if v <= keySetSent {
			return nil
		}
		keySetSent = v
		return q.put(ctx, &agentv1.StreamResponse{Nonce: "keyset", Msg: &agentv1.StreamResponse_KeySet{KeySet: ks}})
	}
	if err := sendKeySet(); err != nil {
		return err
	}
	if err := cs.catchUp(ctx, q, st); err != nil {
		return err
	}
	if st.saved.IsZero() {
		// Already current: nothing was sent, but the agent is seen.
		cs.save(st)
	}
	heartbeat := time.NewTicker(s.cfg.HeartbeatEvery)
	defer heartbeat.Stop()
	seen := time.NewTicker(seenEvery)
	defer seen.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-q.stalled:
			return errFellBehind
		case <-q.failed:
			return q.err
		case m := <-acks:
			cs.record(ctx, st, m)
		case <-sub.C:
			if err := cs.catchUp(ctx, q, st); err != nil {
				return err
			}
		case <-heartbeat.C:
			// Signing keys rotate: a long-lived stream learns the new key
			// set before updates signed by the new key reach it.
			if err := sendKeySet(); err != nil {
				return err
			}
			head, err := s.heads.get(ctx, c.DataPlaneID)
			if err != nil {
				return status.Error(codes.Unavailable, "store unavailable")
			}
			hb, err := s.cfg.Envelopes.Heartbeat(ctx, head)
			if err != nil {
				return status.Error(codes.Internal, "heartbeat")
			}
			if err := q.put(ctx, &agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Heartbeat{Heartbeat: hb}}); err != nil {
				return err
			}
		case <-seen.C:
			if time.Since(st.saved) >= seenEvery/2 {
				cs.save(st)
			}
		}
	}
}

// catchUp sends what the agent lacks: deltas from its position, or a
// snapshot when the log does not reach back, the agent's state is not on
// the log (also when it claims the head's revision, or one beyond it, as
// after a database restore), or it refused an update that a newer
// revision now supersedes.
func (cs *configService) catchUp(ctx context.Context, q *sendQueue, st *streamState) error {
	s := cs.s
	dp := st.c.DataPlaneID
	head, err := s.heads.get(ctx, dp)
	if err != nil {
		return status.Error(codes.Unavailable, "store unavailable")
	}
	if st.nacked > 0 && head.Revision <= st.nacked {
		return nil
	}
	snapshot := st.nacked > 0 || st.sent > head.Revision
	if !snapshot && !st.checked {
		// First catch-up: the agent's state must be the log's at its
		// revision, which at the head is the head's.
		st.checked = true
		want := head.StateHash
		if st.sent < head.Revision {
			// The next revision's prev_state_hash is the state at the
			// agent's revision; it is on the log whenever the deltas the
			// agent needs are, even when the agent's own revision was
			// just compacted away.
			revs, err := slotted(ctx, s.slots, func() ([]store.Revision, error) { return s.cfg.Store.RevisionsAfter(ctx, dp, st.sent, 1) })
			if err != nil || len(revs) == 0 {
				snapshot = true
			} else {
				want = revs[0].PrevStateHash
			}
		}
		snapshot = snapshot || st.hello.StateHash != want
	}
	if !snapshot && head.Revision <= st.sent {
		return nil
	}
	if !snapshot {
		for rev := st.sent + 1; rev <= head.Revision; rev++ {
			env, err := s.cfg.Envelopes.Delta(ctx, dp, rev)
			if errors.Is(err, store.ErrCompacted) {
				snapshot = true
				break
			}
			if err != nil {
				return status.Error(codes.Unavailable, "delta unavailable")
			}
			if err := q.put(ctx, &agentv1.StreamResponse{Nonce: fmt.Sprint(rev), Msg: &agentv1.StreamResponse_Update{Update: env}}); err != nil {
				return err
			}
			st.sent = rev
		}
	}
	if snapshot {
		envs, snapHead, err := s.cfg.Envelopes.Snapshot(ctx, dp)
		if err != nil {
			return status.Error(codes.Unavailable, "snapshot unavailable")
		}
		for i, env := range envs {
			nonce := ""
			if i == len(envs)-1 {
				nonce = snapshotNonce + fmt.Sprint(snapHead.Revision)
			}
			if err := q.put(ctx, &agentv1.StreamResponse{Nonce: nonce, Msg: &agentv1.StreamResponse_Update{Update: env}}); err != nil {
				return err
			}
		}
		st.sent, st.nacked, st.snapshot = snapHead.Revision, 0, snapHead.Revision
	}
	cs.save(st)
	return nil
}

// record notes an Ack or Nack.
func (cs *configService) record(ctx context.Context, st *streamState, m *agentv1.StreamRequest) {
	switch msg := m.Msg.(type) {
	case *agentv1.StreamRequest_Ack:
		if msg.Ack.Revision >= st.nacked {
			st.nacked = 0
		}
		if msg.Ack.Revision > st.applied {
			st.applied = msg.Ack.Revision
			cs.save(st)
		}
	case *agentv1.StreamRequest_Nack:
		n := msg.Nack
		rev := n.Revision
		isSnapshot := strings.HasPrefix(n.Nonce, snapshotNonce)
		if rev == 0 {
			// Refused before the agent could read a revision (a bad
			// signature): the nonce this server issued names it.
			rev, _ = strconv.ParseInt(strings.TrimPrefix(n.Nonce, snapshotNonce), 10, 64)
		}
		cs.s.log.WarnContext(ctx, "agent refused an update", "agent_id", st.c.AgentID, "revision", rev,
			"reason", n.Reason.String(), "detail", n.Detail)
		if rev > 0 && (rev <= st.applied || (!isSnapshot && rev <= st.snapshot)) {
			// Already applied, or superseded by a snapshot sent since: a
			// late answer to an update that no longer matters.
			return
		}
		// A refused key set (revision 0) is recorded but resends nothing.
		if rev > st.nacked {
			st.nacked = rev
		}
		detail := n.Detail
		if len(detail) > 1024 {
			detail = detail[:1024]
		}
		if err := cs.s.slots.run(ctx, func() error {
			return cs.s.cfg.Store.RecordNack(ctx, st.c.AgentID, st.c.DataPlaneID, rev, n.Reason.String(), detail)
		}); err != nil {
			cs.s.log.WarnContext(ctx, "record nack", "agent_id", st.c.AgentID, "error", err)
		}
	}
}

// save records the stream's position: it hands it to the server's
// positions writer and does not wait for the database.
func (cs *configService) save(st *streamState) {
	cs.s.positions.put(store.AgentSync{AgentID: st.c.AgentID, DataPlaneID: st.c.DataPlaneID, Epoch: st.hello.Epoch,
		LastSentRevision: st.sent, LastAppliedRevision: st.applied})
	st.saved = time.Now()
}
