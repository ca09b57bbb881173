package configsync_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/certs/sign"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// TestTamperRealEnvelopes checks the agent against envelopes real control
// planes signed (realcp_test.go records them): every byte of every
// recorded envelope is altered in turn, and each altered envelope must be
// refused — with a Nack, or for a heartbeat, which is never answered, by
// not counting as fresh; or it fails to decode, and gRPC refuses the
// message before the agent sees it — without changing the cache file or
// the agent's state; the unaltered envelope must then be accepted. Then
// real envelopes are replayed, reordered and crossed between data planes,
// control planes and diverged histories, and must be refused with the
// right reason.
func TestTamperRealEnvelopes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cairn-controlplane")
	}
	rec := recordRealStreams(t)
	base := latestIssue(t, rec).Add(time.Second)
	t.Logf("recorded %v", rec)

	t.Run("ByteFlips", func(t *testing.T) {
		for _, w := range []struct {
			name string
			dp   string
			root ed25519.PublicKey
			seq  []*agentv1.StreamResponse
		}{
			{"main", rec.dp1, rec.root, rec.main},
			{"other data plane", rec.dp2, rec.root, rec.other},
			{"fork then snapshot", rec.dp1, rec.root, concat(rec.fork, rec.snapshot)},
			{"another control plane", rec.foreignDP, rec.foreignRoot, rec.foreign},
		} {
			t.Run(w.name, func(t *testing.T) {
				st := walkFlips(t, agentSpec{dataPlane: w.dp, root: w.root, now: base}, w.seq)
				t.Logf("%s: %d envelopes, %d bytes, %d altered envelopes: %d refused (%s), %d heartbeats ignored, %d undecodable",
					w.name, st.envelopes, st.bytes, st.altered, st.refused, st.reasonList(), st.ignored, st.undecodable)
			})
		}
	})

	t.Run("Cases", func(t *testing.T) { tamperCases(t, rec, base) })
}

// latestIssue returns the latest issue time of the recorded envelopes: the
// agents under test run on a fake clock set just after it, so that short-
// lived heartbeats are still valid however long the recording took.
func latestIssue(tb testing.TB, rec *recording) time.Time {
	tb.Helper()
	var latest time.Time
	for _, m := range concat(rec.main, rec.other, rec.fork, rec.snapshot, rec.foreign) {
		var at time.Time
		switch kindOf(m) {
		case "keyset":
			var ks sign.KeySet
			if err := json.Unmarshal(m.GetKeySet().GetPayload(), &ks); err != nil {
				tb.Fatalf("recorded key set: %v", err)
			}
			at = ks.IssuedAt
		case "delta":
			at = payload[*agentv1.DeltaPayload](tb, m).GetIssueTime().AsTime()
		case "reset":
			at = payload[*agentv1.ResetPayload](tb, m).GetIssueTime().AsTime()
		case "end":
			at = payload[*agentv1.SnapshotEndPayload](tb, m).GetIssueTime().AsTime()
		case "heartbeat":
			at = payload[*agentv1.HeartbeatPayload](tb, m).GetIssueTime().AsTime()
		}
		if at.After(latest) {
			latest = at
		}
	}
	return latest
}

// payload decodes a recorded message's payload (without verifying it).
func payload[M proto.Message](tb testing.TB, m *agentv1.StreamResponse) M {
	tb.Helper()
	var p M
	p = p.ProtoReflect().Type().New().Interface().(M)
	env := envelopeOf(m)
	if err := proto.Unmarshal(env.GetPayload(), p); err != nil {
		tb.Fatalf("recorded %s payload: %v", kindOf(m), err)
	}
	return p
}

func concat(seqs ...[]*agentv1.StreamResponse) []*agentv1.StreamResponse {
	var out []*agentv1.StreamResponse
	for _, s := range seqs {
		out = append(out, s...)
	}
	return out
}

// envelopeOf returns a stream message's envelope.
func envelopeOf(m *agentv1.StreamResponse) *agentv1.SignedEnvelope {
	switch msg := m.GetMsg().(type) {
	case *agentv1.StreamResponse_KeySet:
		return msg.KeySet
	case *agentv1.StreamResponse_Update:
		return msg.Update
	case *agentv1.StreamResponse_Heartbeat:
		return msg.Heartbeat
	}
	return nil
}

// withEnvelope returns a message like m carrying env instead.
func withEnvelope(m *agentv1.StreamResponse, env *agentv1.SignedEnvelope) *agentv1.StreamResponse {
	switch m.GetMsg().(type) {
	case *agentv1.StreamResponse_KeySet:
		return &agentv1.StreamResponse{Msg: &agentv1.StreamResponse_KeySet{KeySet: env}}
	case *agentv1.StreamResponse_Heartbeat:
		return &agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Heartbeat{Heartbeat: env}}
	default:
		return &agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Update{Update: env}}
	}
}

// agentSpec says how to make an agent under test.
type agentSpec struct {
	dataPlane string
	root      ed25519.PublicKey
	now       time.Time
	// log routes the agent's log to the test; otherwise it is discarded
	// (the byte walk makes thousands of refusals).
	log bool
}

// agentUnderTest is a fresh cache file and Syncer running the real Session
// against the fake control plane, which sends what the test gives it.
type agentUnderTest struct {
	tb     testing.TB
	path   string
	cache  *cache.Cache
	syncer *configsync.Syncer
	clock  *fakeClock
	srv    *serverStream
	n      int
	stop   func()
}

func newAgentUnderTest(tb testing.TB, spec agentSpec) *agentUnderTest {
	tb.Helper()
	c, path := openCache(tb)
	clock := &fakeClock{t: spec.now}
	log := slog.New(slog.DiscardHandler)
	if spec.log {
		log = testLogger(tb)
	}
	s, err := configsync.New(configsync.Config{DataPlaneID: spec.dataPlane, Root: spec.root, Cache: c, Logger: log, Now: clock.Now})
	if err != nil {
		tb.Fatalf("configsync.New: %v", err)
	}
	cp, client := startCP(tb)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Stream(ctx)
	if err != nil {
		cancel()
		tb.Fatalf("open stream: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Session(ctx, stream) }()
	a := &agentUnderTest{tb: tb, path: path, cache: c, syncer: s, clock: clock}
	a.stop = sync.OnceFunc(func() {
		cancel()
		<-errc
		_ = c.Close()
	})
	tb.Cleanup(a.stop)
	select {
	case a.srv = <-cp.streams:
	case <-time.After(timeout):
		tb.Fatal("the fake control plane got no stream")
	}
	if req := a.next(); req.GetHello() == nil {
		tb.Fatalf("first message %v; want Hello", req)
	}
	return a
}

func (a *agentUnderTest) next() *agentv1.StreamRequest {
	a.tb.Helper()
	select {
	case req, ok := <-a.srv.reqs:
		if !ok {
			a.tb.Fatal("the stream ended; want a message from the agent")
		}
		return req
	case <-time.After(timeout):
		a.tb.Fatal("the agent sent nothing")
		return nil
	}
}

func nonceOf(r *agentv1.StreamRequest) string {
	if ack := r.GetAck(); ack != nil {
		return ack.GetNonce()
	}
	return r.GetNack().GetNonce()
}

// deliver sends msgs, each with a new nonce, then a barrier (a message
// without content, which the agent always refuses and which changes
// nothing), and returns the agent's reply to each of msgs: nil for a
// message it did not answer (a reset or chunk it staged, any heartbeat).
func (a *agentUnderTest) deliver(msgs ...*agentv1.StreamResponse) []*agentv1.StreamRequest {
	a.tb.Helper()
	index := make(map[string]int, len(msgs))
	for i, m := range msgs {
		a.n++
		nonce := fmt.Sprintf("m%d", a.n)
		index[nonce] = i
		if err := a.srv.ss.Send(&agentv1.StreamResponse{Nonce: nonce, Msg: m.GetMsg()}); err != nil {
			a.tb.Fatalf("send: %v", err)
		}
	}
	a.n++
	barrier := fmt.Sprintf("b%d", a.n)
	if err := a.srv.ss.Send(&agentv1.StreamResponse{Nonce: barrier}); err != nil {
		a.tb.Fatalf("send: %v", err)
	}
	replies := make([]*agentv1.StreamRequest, len(msgs))
	for {
		r := a.next()
		nonce := nonceOf(r)
		if nonce == barrier {
			if r.GetNack().GetReason() != agentv1.NackReason_NACK_REASON_MALFORMED {
				a.tb.Fatalf("reply to the barrier %v; want a MALFORMED Nack", r)
			}
			return replies
		}
		i, ok := index[nonce]
		if !ok || replies[i] != nil {
			a.tb.Fatalf("unexpected reply %v", r)
		}
		replies[i] = r
	}
}

// image is everything of the agent's state a refused message must leave
// alone, in comparable form: the cache file byte for byte, what the cache
// serves, the key set the Syncer trusts and its counters (but Nacks).
type image struct {
	File          [sha256.Size]byte
	State         cache.State
	Docs          [sha256.Size]byte
	KeySetVersion int64
	KeySet        [sha256.Size]byte
	Trusted       int64
	Applied       int64
	KeySets       int64
	LastFresh     time.Time
}

func (a *agentUnderTest) image() image {
	a.tb.Helper()
	file, err := os.ReadFile(a.path)
	if err != nil {
		a.tb.Fatalf("read cache file: %v", err)
	}
	docs := sha256.New()
	for _, d := range a.cache.List("") {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
		if err != nil {
			a.tb.Fatal(err)
		}
		docs.Write(binary.AppendUvarint(nil, uint64(len(b))))
		docs.Write(b)
	}
	v, ks := a.cache.KeySet()
	st := a.syncer.Stats()
	return image{
		File: sha256.Sum256(file), State: a.cache.State(), Docs: [sha256.Size]byte(docs.Sum(nil)),
		KeySetVersion: v, KeySet: sha256.Sum256(ks), Trusted: a.syncer.KeySetVersion(),
		Applied: st.Applied, KeySets: st.KeySets, LastFresh: st.LastFresh,
	}
}

// accepted checks the agent's reply to real message m says it accepted it,
// and returns what is wrong if not.
func (a *agentUnderTest) accepted(m *agentv1.StreamResponse, reply *agentv1.StreamRequest) string {
	tb := a.tb
	tb.Helper()
	var wantAck bool
	var rev int64
	switch kindOf(m) {
	case "keyset":
		wantAck = true
	case "delta":
		wantAck, rev = true, payload[*agentv1.DeltaPayload](tb, m).GetToRevision()
	case "end":
		wantAck, rev = true, payload[*agentv1.SnapshotEndPayload](tb, m).GetRevision()
	case "heartbeat":
		if got := a.syncer.Stats().LastFresh; !got.Equal(a.clock.Now()) {
			return fmt.Sprintf("heartbeat did not refresh: last fresh %v; now %v", got, a.clock.Now())
		}
	}
	switch {
	case wantAck && (reply.GetAck() == nil || reply.GetAck().GetRevision() != rev):
		return fmt.Sprintf("reply %v; want Ack of revision %d", reply, rev)
	case !wantAck && reply != nil:
		return fmt.Sprintf("reply %v; want none", reply)
	}
	return ""
}

// replay brings a to the state after seq, each message being accepted.
func (a *agentUnderTest) replay(seq []*agentv1.StreamResponse) {
	a.tb.Helper()
	for i, m := range seq {
		if kindOf(m) == "heartbeat" {
			a.clock.Advance(time.Millisecond)
		}
		if msg := a.accepted(m, a.deliver(m)[0]); msg != "" {
			a.tb.Fatalf("real message %d (%s): %s", i, kindOf(m), msg)
		}
	}
}

// snapshotPrefix returns the reset and chunks before seq[i] of the
// snapshot seq[i] belongs to, if it is a chunk or an end: a refusal drops
// the staged snapshot, so they are sent again before each attempt.
func snapshotPrefix(seq []*agentv1.StreamResponse, i int) []*agentv1.StreamResponse {
	if k := kindOf(seq[i]); k != "chunk" && k != "end" {
		return nil
	}
	for j := i - 1; j >= 0; j-- {
		switch kindOf(seq[j]) {
		case "reset":
			return seq[j:i]
		case "chunk":
		default:
			return nil
		}
	}
	return nil
}

// flipStats counts what a walk did.
type flipStats struct {
	envelopes   int
	bytes       int
	altered     int // altered envelopes that decoded and were fed to the agent
	undecodable int
	refused     int
	ignored     int // altered heartbeats that did not refresh freshness
	reasons     map[agentv1.NackReason]int
}

func (s *flipStats) reasonList() string {
	var out []string
	for r, n := range s.reasons {
		out = append(out, fmt.Sprintf("%s %d", strings.TrimPrefix(r.String(), "NACK_REASON_"), n))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// flipBits are the bits flipped, one at a time, at every byte position:
// the lowest bit (changes every character, length and tag) and the highest
// (the continuation bit of every varint).
var flipBits = []byte{0x01, 0x80}

// walkFlips feeds seq to a fresh agent. Before each real message it sends
// every one-bit alteration of the message's serialized envelope (payload
// type, payload, key id, signature and the protobuf framing): each must be
// refused and leave the agent as it was; then the real message must be
// accepted. A refusal changes nothing, which is checked after each one, so
// one agent stands for a fresh copy at the right state per alteration; if
// one is wrongly accepted, the test fails and the walk goes on with a
// fresh agent replayed to the right state.
func walkFlips(t *testing.T, spec agentSpec, seq []*agentv1.StreamResponse) *flipStats {
	st := &flipStats{reasons: map[agentv1.NackReason]int{}}
	fresh := func(i int) *agentUnderTest {
		a := newAgentUnderTest(t, spec)
		a.replay(seq[:i])
		return a
	}
	a := fresh(0)
	failures := 0
	for i, m := range seq {
		kind := kindOf(m)
		orig := envelopeOf(m)
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(orig)
		if err != nil {
			t.Fatal(err)
		}
		st.envelopes++
		st.bytes += len(b)
		pre := snapshotPrefix(seq, i)
		before := a.image()
		for pos := range b {
			for _, bit := range flipBits {
				altered := bytes.Clone(b)
				altered[pos] ^= bit
				var env agentv1.SignedEnvelope
				if proto.Unmarshal(altered, &env) != nil {
					st.undecodable++
					continue
				}
				st.altered++
				if kind == "heartbeat" {
					a.clock.Advance(time.Millisecond)
				}
				replies := a.deliver(append(pre[:len(pre):len(pre)], withEnvelope(m, &env))...)
				for j, r := range replies[:len(pre)] {
					if r != nil {
						t.Fatalf("message %d (%s): the real %s before it was refused: %v", i, kind, kindOf(pre[j]), r)
					}
				}
				var problem string
				r := replies[len(pre)]
				switch {
				case kind == "heartbeat" && r != nil:
					problem = fmt.Sprintf("heartbeat answered with %v", r)
				case kind == "heartbeat":
					st.ignored++
				case r.GetNack() == nil:
					problem = fmt.Sprintf("accepted: %v", r)
				default:
					st.refused++
					st.reasons[r.GetNack().GetReason()]++
				}
				if after := a.image(); after != before {
					problem += "; agent changed (-before +after):\n" + cmp.Diff(before, after)
				}
				if problem == "" {
					continue
				}
				t.Errorf("message %d (%s), byte %d of %d ^ %#02x: %s", i, kind, pos, len(b), bit, problem)
				if failures++; failures == 20 {
					t.Fatal("stopping after 20 alterations that were not refused or changed the agent")
				}
				a.stop()
				a = fresh(i)
				before = a.image()
			}
		}
		if kind == "heartbeat" {
			a.clock.Advance(time.Millisecond)
		}
		replies := a.deliver(append(pre[:len(pre):len(pre)], m)...)
		if msg := a.accepted(m, replies[len(pre)]); msg != "" {
			t.Fatalf("real message %d (%s) after its alterations: %s", i, kind, msg)
		}
	}
	return st
}

// tamperCases replays, reorders and crosses real envelopes.
func tamperCases(t *testing.T, rec *recording, base time.Time) {
	main, other, fork, snap := rec.main, rec.other, rec.fork, rec.snapshot
	ks, d1, d2, d3, d4, d5 := main[0], main[1], main[2], main[3], main[4], main[5]
	fd2 := fork[2]
	reset, chunks, end := snap[0], snap[1:len(snap)-1], snap[len(snap)-1]
	var hb *agentv1.StreamResponse
	for _, m := range main {
		if kindOf(m) == "heartbeat" {
			hb = m
			break
		}
	}
	fks, fd1 := rec.foreign[0], rec.foreign[1]
	expireOf := func(m *agentv1.StreamResponse) time.Time {
		switch kindOf(m) {
		case "delta":
			return payload[*agentv1.DeltaPayload](t, m).GetExpireTime().AsTime()
		case "end":
			return payload[*agentv1.SnapshotEndPayload](t, m).GetExpireTime().AsTime()
		default:
			return payload[*agentv1.HeartbeatPayload](t, m).GetExpireTime().AsTime()
		}
	}
	// splice returns m's envelope with fields from others changed by edit.
	splice := func(m *agentv1.StreamResponse, edit func(*agentv1.SignedEnvelope)) *agentv1.StreamResponse {
		env := proto.CloneOf(envelopeOf(m))
		edit(env)
		return withEnvelope(m, env)
	}
	withSnapshot := concat(fork, snap)
	upToChunks := concat(fork, []*agentv1.StreamResponse{reset}, chunks)

	for _, tc := range []struct {
		name  string
		dp    string // data plane of the agent; "" means data plane 1
		prior []*agentv1.StreamResponse
		at    time.Time // clock when m is sent; zero leaves it as it was
		m     *agentv1.StreamResponse
		// want: the Nack reason; UNSPECIFIED means an Ack (a control case
		// that shows the refusals are not the test's doing).
		want   agentv1.NackReason
		rev    int64
		detail string
	}{
		{name: "the next delta applies", prior: main[:3], m: d3, rev: 3},
		{name: "replay of an applied delta", prior: main[:4], m: d2, want: agentv1.NackReason_NACK_REASON_STALE, rev: 2},
		{name: "replay of the last applied delta", prior: main[:4], m: d3, want: agentv1.NackReason_NACK_REASON_STALE, rev: 3},
		{name: "replay of a delta below a snapshot's revision", prior: withSnapshot, m: d4, want: agentv1.NackReason_NACK_REASON_STALE, rev: 4},
		{name: "replay of a delta at the snapshot's revision", prior: withSnapshot, m: d5, want: agentv1.NackReason_NACK_REASON_STALE, rev: 5},
		{name: "the other data plane's first delta", dp: rec.dp2, prior: other[:1], m: other[1], rev: 1},
		{name: "another data plane's delta", prior: main[:1], m: other[1], want: agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE, rev: 1, detail: rec.dp2},
		{name: "another data plane's delta at the next revision", prior: main[:2], m: other[2], want: agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE, rev: 2},
		{name: "skipped revision", prior: main[:2], m: d3, want: agentv1.NackReason_NACK_REASON_STALE, rev: 3, detail: "gap"},
		{name: "skipped revisions", prior: main[:2], m: d5, want: agentv1.NackReason_NACK_REASON_STALE, rev: 5, detail: "gap"},
		{name: "broken chain: the restored control plane's delta", prior: main[:2], m: fd2, want: agentv1.NackReason_NACK_REASON_CHAIN_BROKEN, rev: 2},
		{name: "broken chain: the original's delta after the restored one's", prior: fork[:2], m: d2, want: agentv1.NackReason_NACK_REASON_CHAIN_BROKEN, rev: 2},
		{name: "delta just before it expires", prior: main[:1], at: expireOf(d1).Add(-time.Second), m: d1, rev: 1},
		{name: "expired delta", prior: main[:1], at: expireOf(d1), m: d1, want: agentv1.NackReason_NACK_REASON_EXPIRED, rev: 1, detail: "expired at"},
		{name: "expired snapshot end", prior: upToChunks, at: expireOf(end), m: end, want: agentv1.NackReason_NACK_REASON_EXPIRED, rev: 5, detail: "expired at"},
		{name: "another control plane's key set", m: fks, want: agentv1.NackReason_NACK_REASON_UNKNOWN_KEY, detail: "not signed by root key"},
		{name: "another control plane's key set after this one's", prior: main[:1], m: fks, want: agentv1.NackReason_NACK_REASON_UNKNOWN_KEY, detail: "not signed by root key"},
		{name: "another control plane's key set naming this one's root",
			m: splice(fks, func(e *agentv1.SignedEnvelope) { e.Signatures[0].KeyId = sign.KeyID(rec.root) }), want: agentv1.NackReason_NACK_REASON_BAD_SIGNATURE},
		{name: "another control plane's delta", prior: main[:1], m: fd1, want: agentv1.NackReason_NACK_REASON_UNKNOWN_KEY},
		{name: "delta before any key set", m: d1, want: agentv1.NackReason_NACK_REASON_UNKNOWN_KEY},
		{name: "delta with another delta's signature", prior: main[:2],
			m: splice(d2, func(e *agentv1.SignedEnvelope) { e.Signatures = envelopeOf(d1).Signatures }), want: agentv1.NackReason_NACK_REASON_BAD_SIGNATURE},
		{name: "delta without signatures", prior: main[:2],
			m: splice(d2, func(e *agentv1.SignedEnvelope) { e.Signatures = nil }), want: agentv1.NackReason_NACK_REASON_BAD_SIGNATURE},
		{name: "delta relabeled as a snapshot end", prior: main[:2],
			m: splice(d2, func(e *agentv1.SignedEnvelope) { e.PayloadType = configsync.SnapshotEndType }), want: agentv1.NackReason_NACK_REASON_BAD_SIGNATURE},
		{name: "key set sent as an update", prior: main[:2],
			m: &agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Update{Update: envelopeOf(ks)}}, want: agentv1.NackReason_NACK_REASON_MALFORMED},
		{name: "delta sent as a key set", prior: main[:2],
			m: &agentv1.StreamResponse{Msg: &agentv1.StreamResponse_KeySet{KeySet: envelopeOf(d3)}}, want: agentv1.NackReason_NACK_REASON_MALFORMED},
		{name: "snapshot chunk without its reset", prior: fork, m: chunks[0], want: agentv1.NackReason_NACK_REASON_MALFORMED},
		{name: "snapshot end without its chunks", prior: concat(fork, []*agentv1.StreamResponse{reset}), m: end, want: agentv1.NackReason_NACK_REASON_MALFORMED, rev: 5},
		{name: "snapshot end replayed", prior: withSnapshot, m: end, want: agentv1.NackReason_NACK_REASON_MALFORMED, rev: 5},
		{name: "another data plane's snapshot reset", dp: rec.dp2, prior: other[:1], m: reset, want: agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE, rev: 5},
		{name: "another data plane's snapshot chunk", dp: rec.dp2, prior: other[:1], m: chunks[0], want: agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE},
		{name: "another data plane's snapshot end", dp: rec.dp2, prior: other[:1], m: end, want: agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE, rev: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := agentSpec{dataPlane: rec.dp1, root: rec.root, now: base, log: true}
			if tc.dp != "" {
				spec.dataPlane = tc.dp
			}
			a := newAgentUnderTest(t, spec)
			a.replay(tc.prior)
			if !tc.at.IsZero() {
				a.clock.mu.Lock()
				a.clock.t = tc.at
				a.clock.mu.Unlock()
			}
			before := a.image()
			r := a.deliver(tc.m)[0]
			if tc.want == agentv1.NackReason_NACK_REASON_UNSPECIFIED {
				if msg := a.accepted(tc.m, r); msg != "" {
					t.Fatal(msg)
				}
				if a.image() == before {
					t.Fatal("accepted, but the agent did not change")
				}
				return
			}
			n := r.GetNack()
			if n == nil || n.GetReason() != tc.want || n.GetRevision() != tc.rev || !strings.Contains(n.GetDetail(), tc.detail) {
				t.Errorf("reply %v; want Nack %v of revision %d with %q in its detail", r, tc.want, tc.rev, tc.detail)
			}
			if after := a.image(); after != before {
				t.Errorf("agent changed (-before +after):\n%s", cmp.Diff(before, after))
			}
		})
	}

	// Heartbeats are never answered: a bad one only fails to make the agent
	// fresh.
	for _, tc := range []struct {
		name  string
		prior []*agentv1.StreamResponse
		at    time.Time
		fresh bool
	}{
		{name: "heartbeat at the applied revision", prior: main[:6], fresh: true},
		{name: "heartbeat just before it expires", prior: main[:6], at: expireOf(hb).Add(-time.Second), fresh: true},
		{name: "expired heartbeat", prior: main[:6], at: expireOf(hb)},
		{name: "heartbeat for a revision not applied yet", prior: main[:5]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgentUnderTest(t, agentSpec{dataPlane: rec.dp1, root: rec.root, now: base, log: true})
			a.replay(tc.prior)
			a.clock.Advance(time.Millisecond)
			if !tc.at.IsZero() {
				a.clock.mu.Lock()
				a.clock.t = tc.at
				a.clock.mu.Unlock()
			}
			before := a.image()
			if r := a.deliver(hb)[0]; r != nil {
				t.Fatalf("heartbeat answered with %v", r)
			}
			after := a.image()
			if got := after.LastFresh.Equal(a.clock.Now()); got != tc.fresh {
				t.Errorf("fresh after the heartbeat: got %v; want %v", got, tc.fresh)
			}
			after.LastFresh = before.LastFresh
			if after != before {
				t.Errorf("agent changed (-before +after):\n%s", cmp.Diff(before, after))
			}
		})
	}
}
