package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
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

// streamState is one stream's position.
type streamState struct {
	sent    int64 // newest revision sent (or being sent)
	nacked  int64 // newest revision refused; not resent until a newer one exists
	applied int64
	saved   time.Time // when the position was last recorded
	// snapshot is the revision of the newest snapshot sent; refusals of
	// older revisions are stale.
	snapshot int64
}

// snapshotNonce prefixes the nonce of a snapshot's end, so that the
// agent's answer tells a snapshot at revision R from the delta to R.
const snapshotNonce = "snapshot-"

// shutdownGrace is how long a replica shutting down lets the calls in
// flight on an agent's connection finish before it closes the connection
// to end the agent's config stream.
const shutdownGrace = time.Second

// seenEvery is how often an idle stream records that its agent is still
// there (Agent.sync.last_seen_time): rarely enough that a large fleet's
// idle streams cost few writes, often enough for ListAgents not_seen_for
// of a few minutes.
const seenEvery = time.Minute

// Stream serves one agent's config stream: hello, the trust bundle when
// asked for, key set, catch-up by deltas or snapshot, then live deltas,
// heartbeats and bundle changes. The data plane is
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

// serve runs an admitted stream. While nothing is being sent the stream
// has one goroutine, its handler's, which receives: the Hello, then Acks
// and Nacks. Sending is done by a goroutine started when there is
// something to send (a new revision, a heartbeat or last-seen record due,
// a new trust bundle) and gone when there is not (configStream.wake);
// sendWatch watches its Sends.
//
// gRPC ends a stream only when its handler returns, and the handler waits
// in Recv, which only the agent or the end of the connection ends. So when
// the stream must end from this side — the agent revoked, the replica
// shutting down, or a Send blocked too long (sendWatch) — the agent's
// connection is closed; the agent reconnects (elsewhere, after a
// shutdown) and a revoked agent's next call is refused. A store that
// cannot be read leaves the stream open and the send is tried again.
func (cs *configService) serve(ctx context.Context, stream agentv1.ConfigService_StreamServer, c caller) error {
	s := cs.s
	abort := connCloser(ctx)
	stopAbort := context.AfterFunc(ctx, func() {
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errRevoked):
			_ = abort()
		case errors.Is(cause, errShutdown):
			// GracefulStop has stopped new calls on the connection; let
			// those in flight (a Report) finish first.
			time.AfterFunc(shutdownGrace, func() { _ = abort() })
		}
	})
	defer stopAbort()
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := m.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a Hello")
	}
	if err := checkHello(hello); err != nil {
		return err
	}
	ws, unwatch := s.sends.watch(abort, s.metrics.sent)
	defer unwatch()
	// What is sent first is pending from the start, so that a change
	// notified while the stream subscribes is sent after it: the bundle
	// (what the agent verifies this control plane's SVID with, on its next
	// connection), the key set, then the catch-up.
	first := sendKeySet | catchUp
	if hello.WantTrustBundle {
		first |= sendBundle
	}
	str := &configStream{cs: cs, ctx: ctx, c: c, hello: hello, ws: ws, send: stream.Send,
		keySetSent: hello.KeySetVersion, lastBeat: s.cfg.Now(), pending: first,
		st: streamState{sent: hello.AppliedRevision, applied: hello.AppliedRevision}}
	if hello.WantTrustBundle {
		defer s.bundle.subscribe(func() { str.wake(sendBundle) })()
	}
	defer s.cfg.Hub.Subscribe(c.DataPlaneID, func() { str.wake(catchUp) }).Close()
	defer str.stop()
	str.startTicking()
	str.wake(0) // starts the sender on what is pending
	for {
		m, err := stream.Recv()
		if err != nil {
			stalled := ws.stalled.Load() // the sweeper sets it before it closes the connection
			str.stop()
			switch {
			case stalled:
				return errFellBehind
			case errors.Is(err, io.EOF):
				return nil
			}
			return err
		}
		str.record(m)
	}
}

// configStream is an admitted stream's state and its sending side.
type configStream struct {
	cs    *configService
	ctx   context.Context
	c     caller
	hello *agentv1.Hello
	ws    *watchedSend
	send  func(*agentv1.StreamResponse) error

	// Only the sender touches these.
	keySetSent int64
	checked    bool // the agent's state was checked against the log's at its revision
	// diverged: that check failed, so the agent needs a snapshot (until
	// one is sent, also when sending it has to be tried again).
	diverged bool
	// lastBeat is when the agent last got what a heartbeat tells it, a
	// heartbeat or the head itself: the start of the stream, a heartbeat,
	// or a catch-up that sent updates (Server's clock).
	lastBeat time.Time
	retry    time.Duration // delay before the next catch-up after a failed one

	mu      sync.Mutex
	st      streamState
	pending work // for the sender to do
	running bool // a sender goroutine runs
	ended   bool // stop was called: nothing more is sent
	broken  bool // a Send failed: the stream is gone
	tick    *time.Timer
	retryT  *time.Timer // the next catch-up after a failed one
	senders sync.WaitGroup
}

// work is what a stream's sender has to do, as bits.
type work uint8

const (
	sendBundle work = 1 << iota // the trust bundle
	sendKeySet                  // the key set, if newer than the agent's
	catchUp                     // what the agent lacks up to the head
	beat                        // a heartbeat and last-seen record, when due
)

// wake asks for w to be done, starting a sender unless one runs.
func (str *configStream) wake(w work) {
	str.mu.Lock()
	defer str.mu.Unlock()
	if str.ended || str.broken {
		return
	}
	str.pending |= w
	if !str.running {
		str.running = true
		str.senders.Add(1)
		go str.run()
	}
}

// run is the sender: it does what is pending until nothing is.
func (str *configStream) run() {
	defer str.senders.Done()
	for {
		str.mu.Lock()
		w := str.pending
		str.pending = 0
		if w == 0 || str.ended || str.broken {
			str.running = false
			str.mu.Unlock()
			return
		}
		str.mu.Unlock()
		str.do(w)
	}
}

// stop ends sending and waits for a sender that runs; the handler calls
// it before it returns, since gRPC forbids Send after that.
func (str *configStream) stop() {
	str.mu.Lock()
	str.ended = true
	if str.tick != nil {
		str.tick.Stop()
	}
	if str.retryT != nil {
		str.retryT.Stop()
	}
	str.mu.Unlock()
	str.senders.Wait()
}

// tickEvery is the period of a stream's timer, which serves heartbeats and
// last-seen records: each is due within half a tick of its interval.
func (str *configStream) tickEvery() time.Duration {
	return min(str.cs.s.cfg.HeartbeatEvery, seenEvery)
}

func (str *configStream) startTicking() {
	str.mu.Lock()
	defer str.mu.Unlock()
	str.tick = time.AfterFunc(str.tickEvery(), func() { str.wake(beat) })
}

// out sends m, noting a failed Send: the stream is gone (the agent left,
// or sendWatch closed its connection) and the handler's Recv ends too. A
// Send that failed on a stream still open closes the connection, so that
// the agent is not left connected with nothing sent to it.
func (str *configStream) out(m *agentv1.StreamResponse) error {
	err := str.ws.send(str.send, m)
	if err != nil {
		str.mu.Lock()
		str.broken = true
		str.mu.Unlock()
		if str.ctx.Err() == nil {
			_ = str.ws.abort() // closes the agent's connection
		}
	}
	return err
}

// do does w, in order: bundle, key set, catch-up, heartbeat. It gives up
// only when a Send failed (the stream is gone).
func (str *configStream) do(w work) {
	s := str.cs.s
	if w&sendBundle != 0 {
		certs := s.bundle.get()
		if str.out(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_TrustBundle{
			TrustBundle: &agentv1.TrustBundle{Certificates: derList(certs)}}}) != nil {
			return
		}
	}
	if w&sendKeySet != 0 && str.sendKeySet() != nil {
		return
	}
	if w&catchUp != 0 {
		switch err := str.catchUp(); {
		case err == nil:
			str.retry = 0
		case str.isBroken():
			return
		case str.ctx.Err() == nil: // not the stream ending
			str.retryCatchUp(err)
		}
	}
	if w&beat != 0 {
		now := s.cfg.Now()
		every := str.tickEvery()
		if now.Sub(str.lastBeat) >= s.cfg.HeartbeatEvery-every/2 {
			str.lastBeat = now
			if err := str.heartbeat(); err != nil {
				if str.isBroken() {
					return
				}
				s.log.DebugContext(str.ctx, "heartbeat not sent", "agent_id", str.c.AgentID, "error", err)
			}
		}
		str.mu.Lock()
		if now.Sub(str.st.saved) >= seenEvery-every/2 {
			str.save()
		}
		if !str.ended {
			str.tick.Reset(every)
		}
		str.mu.Unlock()
	}
}

func (str *configStream) isBroken() bool {
	str.mu.Lock()
	defer str.mu.Unlock()
	return str.broken
}

// retryCatchUp tries a failed catch-up (the store could not be read, an
// envelope not made) again after a delay that doubles from a second to
// half a minute. A change notified meanwhile tries at once; one timer per
// stream, so retries do not pile up.
func (str *configStream) retryCatchUp(err error) {
	str.retry = min(max(2*str.retry, time.Second), 30*time.Second)
	str.cs.s.metrics.retries.Inc()
	str.cs.s.log.DebugContext(str.ctx, "config stream catch-up failed; retrying", "agent_id", str.c.AgentID,
		"error", err, "in", str.retry)
	str.mu.Lock()
	defer str.mu.Unlock()
	if str.ended {
		return
	}
	if str.retryT == nil {
		str.retryT = time.AfterFunc(str.retry, func() { str.wake(catchUp) })
	} else {
		str.retryT.Reset(str.retry)
	}
}

// sendKeySet sends the signing key set if it is newer than the agent's.
func (str *configStream) sendKeySet() error {
	ks, v := str.cs.s.cfg.Envelopes.KeySet()
	if v <= str.keySetSent {
		return nil
	}
	str.keySetSent = v
	return str.out(&agentv1.StreamResponse{Nonce: "keyset", Msg: &agentv1.StreamResponse_KeySet{KeySet: ks}})
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
func (str *configStream) heartbeat() error {
	if err := str.sendKeySet(); err != nil {
		return err
	}
	s := str.cs.s
	head, err := s.heads.get(str.ctx, str.c.DataPlaneID)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	hb, err := s.cfg.Envelopes.Heartbeat(str.ctx, head)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return str.out(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Heartbeat{Heartbeat: hb}})
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
// revision now supersedes. The position is updated before each Send, so
// that an answer that overtakes the Send's return finds it.
func (str *configStream) catchUp() error {
	s := str.cs.s
	ctx, dp := str.ctx, str.c.DataPlaneID
	head, err := s.heads.get(ctx, dp)
	if err != nil {
		return fmt.Errorf("read head: %w", err)
	}
	str.mu.Lock()
	sent, nacked := str.st.sent, str.st.nacked
	str.mu.Unlock()
	if nacked > 0 && head.Revision <= nacked {
		return nil
	}
	snapshot := nacked > 0 || sent > head.Revision || str.diverged
	if !snapshot && !str.checked {
		// First catch-up: the agent's state must be the log's at its
		// revision, which at the head is the head's.
		want := head.StateHash
		if sent < head.Revision {
			// The next revision's prev_state_hash is the state at the
			// agent's revision; it is on the log whenever the deltas the
			// agent needs are, even when the agent's own revision was
			// just compacted away.
			revs, err := slotted(ctx, s.slots, func() ([]store.Revision, error) { return s.cfg.Store.RevisionsAfter(ctx, dp, sent, 1) })
			switch {
			case errors.Is(err, store.ErrCompacted) || (err == nil && len(revs) == 0):
				snapshot = true
			case err != nil:
				return fmt.Errorf("read revision log: %w", err)
			default:
				want = revs[0].PrevStateHash
			}
		}
		str.checked = true
		str.diverged = str.hello.StateHash != want
		snapshot = snapshot || str.diverged
	}
	if !snapshot && head.Revision <= sent {
		str.saveOnce()
		return nil
	}
	// Read before anything is sent: the agent may answer, and the next
	// heartbeat be reckoned, before the last Send returns.
	sending := s.cfg.Now()
	// Updates are signed with the newest keys: the key set they need goes
	// first (heartbeats, which also send it, skip a stream kept busy by
	// updates).
	if err := str.sendKeySet(); err != nil {
		return err
	}
	if !snapshot {
		for rev := sent + 1; rev <= head.Revision; rev++ {
			env, err := s.cfg.Envelopes.Delta(ctx, dp, rev)
			if errors.Is(err, store.ErrCompacted) {
				snapshot = true
				break
			}
			if err != nil {
				return fmt.Errorf("delta %d: %w", rev, err)
			}
			str.mu.Lock()
			str.st.sent = rev
			str.mu.Unlock()
			if err := str.out(&agentv1.StreamResponse{Nonce: fmt.Sprint(rev), Msg: &agentv1.StreamResponse_Update{Update: env}}); err != nil {
				return err
			}
		}
	}
	if snapshot {
		envs, snapHead, err := s.cfg.Envelopes.Snapshot(ctx, dp)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		str.mu.Lock()
		str.st.sent, str.st.nacked, str.st.snapshot = snapHead.Revision, 0, snapHead.Revision
		str.mu.Unlock()
		str.diverged = false
		for i, env := range envs {
			nonce := ""
			if i == len(envs)-1 {
				nonce = snapshotNonce + fmt.Sprint(snapHead.Revision)
			}
			if err := str.out(&agentv1.StreamResponse{Nonce: nonce, Msg: &agentv1.StreamResponse_Update{Update: env}}); err != nil {
				return err
			}
		}
	}
	// The agent has been sent the head, which is what a heartbeat would
	// tell it: heartbeats are reckoned from here as from a heartbeat (the
	// timer sends one once half an interval has passed, so 0.5 to 1.5
	// intervals later). A data plane that changes more often than every
	// half interval gets no heartbeats, and its agents verify one
	// signature per change, not two.
	str.lastBeat = sending
	str.mu.Lock()
	str.save()
	str.mu.Unlock()
	return nil
}

// saveOnce records the position of an agent that was current when its
// stream began: nothing was sent, but the agent is seen.
func (str *configStream) saveOnce() {
	str.mu.Lock()
	defer str.mu.Unlock()
	if str.st.saved.IsZero() {
		str.save()
	}
}

// record notes an Ack or Nack, on the handler's goroutine.
func (str *configStream) record(m *agentv1.StreamRequest) {
	s := str.cs.s
	str.mu.Lock()
	switch msg := m.Msg.(type) {
	case *agentv1.StreamRequest_Ack:
		if msg.Ack.Revision >= str.st.nacked {
			str.st.nacked = 0
		}
		if msg.Ack.Revision > str.st.applied {
			str.st.applied = msg.Ack.Revision
			str.save()
		}
		str.mu.Unlock()
	case *agentv1.StreamRequest_Nack:
		n := msg.Nack
		rev := n.Revision
		isSnapshot := strings.HasPrefix(n.Nonce, snapshotNonce)
		if rev == 0 {
			// Refused before the agent could read a revision (a bad
			// signature): the nonce this server issued names it.
			rev, _ = strconv.ParseInt(strings.TrimPrefix(n.Nonce, snapshotNonce), 10, 64)
		}
		stale := rev > 0 && (rev <= str.st.applied || (!isSnapshot && rev <= str.st.snapshot))
		// A refused key set (revision 0) is recorded but resends nothing.
		if !stale && rev > str.st.nacked {
			str.st.nacked = rev
		}
		str.mu.Unlock()
		s.log.WarnContext(str.ctx, "agent refused an update", "agent_id", str.c.AgentID, "revision", rev,
			"reason", n.Reason.String(), "detail", n.Detail)
		if stale {
			// Already applied, or superseded by a snapshot sent since: a
			// late answer to an update that no longer matters.
			return
		}
		detail := n.Detail
		if len(detail) > 1024 {
			detail = detail[:1024]
		}
		if err := s.slots.run(str.ctx, func() error {
			return s.cfg.Store.RecordNack(str.ctx, str.c.AgentID, str.c.DataPlaneID, rev, n.Reason.String(), detail)
		}); err != nil {
			s.log.WarnContext(str.ctx, "record nack", "agent_id", str.c.AgentID, "error", err)
		}
	default:
		str.mu.Unlock()
	}
}

// save records the stream's position: it hands it to the server's
// positions writer and does not wait for the database. Call it with mu
// held.
func (str *configStream) save() {
	str.cs.s.positions.put(store.AgentSync{AgentID: str.c.AgentID, DataPlaneID: str.c.DataPlaneID, Epoch: str.hello.Epoch,
		LastSentRevision: str.st.sent, LastAppliedRevision: str.st.applied})
	str.st.saved = str.cs.s.cfg.Now()
}
