package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/metricpoint"
)

// DefaultHeartbeatEvery is how often an idle stream gets a signed
// heartbeat.
const DefaultHeartbeatEvery = 10 * time.Second

type configService struct {
	agentv1.UnimplementedConfigServiceServer
	s *Server
}

// streamState is one stream's position. Only the handler's goroutine
// touches it; acks arrive on the receiver's goroutine and are passed over
// a channel.
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

// Stream serves one agent's config stream: hello, key set, catch-up by
// deltas or snapshot, then live deltas and heartbeats. The data plane is
// the caller's, from its certificate. New streams are admitted at a
// bounded rate (admission); an agent that stops taking messages has its
// connection closed (sendWatch).
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

// serve runs an admitted stream on two goroutines: the handler's reads
// the store, decides what to send and sends it (watched by the server's
// sendWatch), and a receiver passes the agent's messages to it.
func (cs *configService) serve(ctx context.Context, stream agentv1.ConfigService_StreamServer, c caller) error {
	s := cs.s
	// The receiver also awaits the Hello, so that revocation and shutdown
	// (which cancel ctx) end a stream that never sends one; returning
	// ends the stream, which ends its Recv.
	in := make(chan *agentv1.StreamRequest, 16)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case in <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	var hello *agentv1.Hello
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-recvErr:
		return err
	case m := <-in:
		if hello = m.GetHello(); hello == nil {
			return status.Error(codes.InvalidArgument, "the first message must be a Hello")
		}
		if err := checkHello(hello); err != nil {
			return err
		}
	}
	st := &streamState{c: c, hello: hello, sent: hello.AppliedRevision, applied: hello.AppliedRevision}
	sub := s.cfg.Hub.Subscribe(c.DataPlaneID)
	defer sub.Close()
	ws, unwatch := s.sends.watch(ctx, connCloser(ctx), s.metrics.sent)
	defer unwatch()
	out := func(m *agentv1.StreamResponse) error { return ws.send(stream.Send, m) }

	keySetSent := hello.KeySetVersion
	sendKeySet := func() error {
		ks, v := s.cfg.Envelopes.KeySet()
		if v <= keySetSent {
			return nil
		}
		keySetSent = v
		return out(&agentv1.StreamResponse{Nonce: "keyset", Msg: &agentv1.StreamResponse_KeySet{KeySet: ks}})
	}
	if err := sendKeySet(); err != nil {
		return err
	}
	if err := cs.catchUp(ctx, out, st); err != nil {
		return err
	}
	if st.saved.IsZero() {
		// Already current: nothing was sent, but the agent is seen.
		cs.save(st)
	}
	// One ticker per stream serves heartbeats and last-seen records; each
	// is due within half a tick of its interval.
	every := min(s.cfg.HeartbeatEvery, seenEvery)
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastBeat := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case m := <-in:
			cs.record(ctx, st, m)
		case <-sub.C:
			if err := cs.catchUp(ctx, out, st); err != nil {
				return err
			}
		case now := <-tick.C:
			if now.Sub(lastBeat) >= s.cfg.HeartbeatEvery-every/2 {
				lastBeat = now
				if err := cs.heartbeat(ctx, out, sendKeySet, c.DataPlaneID); err != nil {
					return err
				}
			}
			if now.Sub(st.saved) >= seenEvery-every/2 {
				cs.save(st)
			}
		}
	}
}

// Bounds of a Hello's texts: its epoch is stored with the stream's
// position, and a batch of positions is one transaction.
const (
	maxEpoch     = 128
	maxStateHash = 256
)

// checkHello refuses a Hello the store could not take (text that is not
// valid UTF-8 or holds control characters, as PostgreSQL refuses NUL) or
// that makes no sense, with InvalidArgument and the field.
func checkHello(h *agentv1.Hello) error {
	var bad []*errdetails.BadRequest_FieldViolation
	for _, f := range []struct {
		name, v string
		max     int
	}{{"hello.epoch", h.Epoch, maxEpoch}, {"hello.state_hash", h.StateHash, maxStateHash}} {
		if len(f.v) > f.max || metricpoint.CheckText(f.v) != nil {
			bad = append(bad, &errdetails.BadRequest_FieldViolation{Field: f.name,
				Description: fmt.Sprintf("at most %d bytes of valid UTF-8 without control characters", f.max)})
		}
	}
	if h.AppliedRevision < 0 {
		bad = append(bad, &errdetails.BadRequest_FieldViolation{Field: "hello.applied_revision", Description: "must not be negative"})
	}
	if len(bad) == 0 {
		return nil
	}
	return invalidArgument("invalid Hello", bad)
}

// heartbeat sends the data plane's signed heartbeat, after the key set if
// it changed: signing keys rotate, and a long-lived stream learns the new
// key set before updates signed by the new key reach it.
func (cs *configService) heartbeat(ctx context.Context, out func(*agentv1.StreamResponse) error, sendKeySet func() error, dataPlaneID string) error {
	if err := sendKeySet(); err != nil {
		return err
	}
	head, err := cs.s.heads.get(ctx, dataPlaneID)
	if err != nil {
		return status.Error(codes.Unavailable, "store unavailable")
	}
	hb, err := cs.s.cfg.Envelopes.Heartbeat(ctx, head)
	if err != nil {
		return status.Error(codes.Internal, "heartbeat")
	}
	return out(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Heartbeat{Heartbeat: hb}})
}

// connCloser returns what closes the caller's connection (connCreds), or
// a no-op when the connection did not come through them.
func connCloser(ctx context.Context) func() error {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(connInfo); ok {
			return info.close
		}
	}
	return func() error { return nil }
}

// catchUp sends what the agent lacks: deltas from its position, or a
// snapshot when the log does not reach back, the agent's state is not on
// the log (also when it claims the head's revision, or one beyond it, as
// after a database restore), or it refused an update that a newer
// revision now supersedes.
func (cs *configService) catchUp(ctx context.Context, out func(*agentv1.StreamResponse) error, st *streamState) error {
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
			if err := out(&agentv1.StreamResponse{Nonce: fmt.Sprint(rev), Msg: &agentv1.StreamResponse_Update{Update: env}}); err != nil {
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
			if err := out(&agentv1.StreamResponse{Nonce: nonce, Msg: &agentv1.StreamResponse_Update{Update: env}}); err != nil {
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
