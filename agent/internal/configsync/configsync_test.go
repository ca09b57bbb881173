package configsync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
	"github.com/cairnhq/cairn/internal/configstate"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

func (h *harness) reset(id string, rev int64) *agentv1.ResetPayload {
	now := h.clock.Now()
	return &agentv1.ResetPayload{DataPlaneId: testDP, Revision: rev, SnapshotId: id,
		IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(time.Hour))}
}

func chunk(id string, index int32, docs ...*agentv1.Document) *agentv1.SnapshotChunkPayload {
	return &agentv1.SnapshotChunkPayload{DataPlaneId: testDP, SnapshotId: id, Index: index, Documents: docs}
}

func (h *harness) end(id string, rev int64, chunks int32, hash string) *agentv1.SnapshotEndPayload {
	now := h.clock.Now()
	return &agentv1.SnapshotEndPayload{DataPlaneId: testDP, SnapshotId: id, Revision: rev, Chunks: chunks, StateHash: hash,
		IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(time.Hour))}
}

func (h *harness) heartbeat(rev int64, hash string) *agentv1.HeartbeatPayload {
	now := h.clock.Now()
	return &agentv1.HeartbeatPayload{DataPlaneId: testDP, Revision: rev, StateHash: hash,
		IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(30 * time.Second))}
}

// checkCache checks the cache holds m.
func (h *harness) checkCache(m model) {
	h.tb.Helper()
	st := h.cache.State()
	if st.DataPlaneID != testDP || st.Revision != m.rev || st.StateHash != m.hash() {
		h.tb.Errorf("cache state %+v; want data plane %s, revision %d, hash %s", st, testDP, m.rev, m.hash())
	}
	var want []*agentv1.Document
	for _, k := range slices.Sorted(maps.Keys(m.docs)) {
		want = append(want, m.docs[k])
	}
	if diff := cmp.Diff(want, h.cache.List(""), protocmp.Transform(), cmpopts.EquateEmpty()); diff != "" {
		h.tb.Errorf("cache documents (-want +got):\n%s", diff)
	}
}

func TestFreshAgentThenRestart(t *testing.T) {
	h := newHarness(t, nil)
	epoch := h.cache.State().Epoch
	s := h.start()
	want := &agentv1.Hello{AppliedRevision: 0, StateHash: configstate.EmptyHash, Epoch: epoch, KeySetVersion: 0}
	if diff := cmp.Diff(want, s.hello, protocmp.Transform()); diff != "" {
		t.Fatalf("fresh Hello (-want +got):\n%s", diff)
	}
	s.giveKeySet()
	s.apply(doc("a", 1, `{"a":1}`))
	s.apply(doc("b", 1, `{"b":1}`))
	s.apply(doc("a", 2, `{"a":2}`))
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v; want nil after the control plane ends the stream", err)
	}
	h.checkCache(h.m)
	if v, _ := h.cache.KeySet(); v != 1 {
		t.Errorf("saved key set version %d; want 1", v)
	}
	if got := h.syncer.Stats(); got.Applied != 3 || got.Nacks != 0 || got.KeySets != 1 {
		t.Errorf("Stats %+v; want 3 applied, 0 nacks, 1 key set", got)
	}

	h.restart()
	s = h.start()
	want = &agentv1.Hello{AppliedRevision: 3, StateHash: h.m.hash(), Epoch: epoch, KeySetVersion: 1}
	if diff := cmp.Diff(want, s.hello, protocmp.Transform()); diff != "" {
		t.Fatalf("Hello after restart (-want +got):\n%s", diff)
	}
	// The restored key set verifies without being sent again.
	s.apply(doc("c", 1, `{"c":1}`))
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}
	h.checkCache(h.m)
}

func TestSnapshotReplacesCache(t *testing.T) {
	h := newHarness(t, nil)
	s := h.start()
	s.giveKeySet()
	s.apply(doc("a", 1, "a"))
	s.apply(doc("b", 1, "b"))

	// The control plane's log no longer reaches back: revision 7 holds b
	// (changed), c, d and e but not a.
	docs := []*agentv1.Document{doc("b", 3, "b3"), doc("c", 1, "c"), doc("d", 1, "d"), doc("e", 1, "e")}
	m := model{rev: 7, docs: map[string]*agentv1.Document{}}
	for _, d := range docs {
		m.docs[docKey(d)] = d
	}
	const id = "snap-1"
	s.update(h.sign(configsync.ResetType, h.reset(id, 7)))
	s.update(h.sign(configsync.SnapshotChunkType, chunk(id, 0, docs[0], docs[1])))
	s.update(h.sign(configsync.SnapshotChunkType, chunk(id, 1, docs[2])))
	s.update(h.sign(configsync.SnapshotChunkType, chunk(id, 2, docs[3])))
	s.expectAck(s.update(h.sign(configsync.SnapshotEndType, h.end(id, 7, 3, m.hash()))), 7)
	h.m = m
	h.checkCache(h.m)

	// The chain continues from the snapshot.
	s.apply(doc("f", 1, "f"))
	h.checkCache(h.m)

	// An empty snapshot (a data plane without documents) works too.
	s.update(h.sign(configsync.ResetType, h.reset("snap-2", 9)))
	s.expectAck(s.update(h.sign(configsync.SnapshotEndType, h.end("snap-2", 9, 0, configstate.EmptyHash))), 9)
	h.m = model{rev: 9, docs: map[string]*agentv1.Document{}}
	h.checkCache(h.m)

	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}
	if got := h.syncer.Stats(); got.Applied != 5 || got.Nacks != 0 {
		t.Errorf("Stats %+v; want 5 applied, 0 nacks", got)
	}
}

// flip returns env with one payload byte changed.
func flip(env *agentv1.SignedEnvelope) *agentv1.SignedEnvelope {
	env = proto.CloneOf(env)
	env.Payload[len(env.Payload)/2] ^= 0x01
	return env
}

func TestRefusals(t *testing.T) {
	const nack = 0 // placeholder revision for envelopes that did not verify
	type sent struct {
		nonce string
		rev   int64
	}
	tests := []struct {
		name   string
		reason agentv1.NackReason
		detail string
		// setup may change the agent first (the cache snapshot is taken
		// after it) and returns the func that sends the refused message.
		setup func(h *harness, s *session, deltas []*agentv1.SignedEnvelope) func() sent
	}{
		{
			name: "bad signature", reason: agentv1.NackReason_NACK_REASON_BAD_SIGNATURE, detail: "bad signature",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				return func() sent { return sent{s.update(flip(h.sign(configsync.DeltaType, p))), nack} }
			},
		},
		{
			name: "no signature", reason: agentv1.NackReason_NACK_REASON_BAD_SIGNATURE, detail: "no signature",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				env := h.sign(configsync.DeltaType, p)
				env.Signatures = nil
				return func() sent { return sent{s.update(env), nack} }
			},
		},
		{
			name: "unknown key", reason: agentv1.NackReason_NACK_REASON_UNKNOWN_KEY, detail: "unknown signing key",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				other := otherSigner(h)
				p, _ := h.delta(doc("d", 1, "d"))
				return func() sent { return sent{s.update(h.signWith(other, configsync.DeltaType, p)), nack} }
			},
		},
		{
			name: "expired envelope", reason: agentv1.NackReason_NACK_REASON_EXPIRED, detail: "delta expired",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				p.ExpireTime = timestamppb.New(h.clock.Now().Add(-time.Second))
				return func() sent { return sent{s.update(h.sign(configsync.DeltaType, p)), 4} }
			},
		},
		{
			name: "expired key", reason: agentv1.NackReason_NACK_REASON_EXPIRED, detail: "signing key not valid",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				// Signed by the key about to be retired, valid for a day.
				p, _ := h.delta(doc("d", 1, "d"))
				p.ExpireTime = timestamppb.New(h.clock.Now().Add(24 * time.Hour))
				env := h.sign(configsync.DeltaType, p)
				if err := h.signer.Rotate(); err != nil {
					h.tb.Fatalf("Rotate: %v", err)
				}
				s.giveKeySet()
				// Past the retired key's grace (an hour).
				h.clock.Advance(2 * time.Hour)
				return func() sent { return sent{s.update(env), nack} }
			},
		},
		{
			name: "wrong data plane", reason: agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE, detail: `"dp-2"`,
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				p.DataPlaneId = "dp-2"
				return func() sent { return sent{s.update(h.sign(configsync.DeltaType, p)), 4} }
			},
		},
		{
			name: "replay", reason: agentv1.NackReason_NACK_REASON_STALE, detail: "stale",
			setup: func(h *harness, s *session, deltas []*agentv1.SignedEnvelope) func() sent {
				return func() sent { return sent{s.update(deltas[1]), 2} }
			},
		},
		{
			name: "gap", reason: agentv1.NackReason_NACK_REASON_STALE, detail: "gap",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				p.FromRevision, p.ToRevision = 4, 5
				return func() sent { return sent{s.update(h.sign(configsync.DeltaType, p)), 5} }
			},
		},
		{
			name: "chain broken", reason: agentv1.NackReason_NACK_REASON_CHAIN_BROKEN, detail: "chain broken",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				p.PrevStateHash = configstate.EmptyHash
				return func() sent { return sent{s.update(h.sign(configsync.DeltaType, p)), 4} }
			},
		},
		{
			name: "state after delta mismatch", reason: agentv1.NackReason_NACK_REASON_APPLY_FAILED, detail: "state hash mismatch",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				p.StateHash = configstate.EmptyHash
				return func() sent { return sent{s.update(h.sign(configsync.DeltaType, p)), 4} }
			},
		},
		{
			name: "malformed payload bytes", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "payload",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				env := envelopePB(h.signer.Sign(configsync.DeltaType, []byte{0xff, 0xff, 0xff, 0xff}))
				return func() sent { return sent{s.update(env), nack} }
			},
		},
		{
			name: "malformed operation", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "operation 0",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				p.Operations[0].Kind = agentv1.Operation_KIND_UNSPECIFIED
				return func() sent { return sent{s.update(h.sign(configsync.DeltaType, p)), 4} }
			},
		},
		{
			name: "unknown payload type", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "payload type",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p, _ := h.delta(doc("d", 1, "d"))
				return func() sent { return sent{s.update(h.sign("application/vnd.cairn.other+proto", p)), nack} }
			},
		},
		{
			name: "heartbeat sent as update", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "payload type",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					return sent{s.update(h.sign(configsync.HeartbeatType, h.heartbeat(3, h.m.hash()))), nack}
				}
			},
		},
		{
			name: "key set sent as update", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "payload type",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent { return sent{s.update(h.keySet()), nack} }
			},
		},
		{
			name: "empty stream message", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "without",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent { return sent{s.send(&agentv1.StreamResponse{}), nack} }
			},
		},
		{
			name: "reset for another data plane", reason: agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE, detail: `"dp-2"`,
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p := h.reset("snap", 10)
				p.DataPlaneId = "dp-2"
				return func() sent { return sent{s.update(h.sign(configsync.ResetType, p)), 10} }
			},
		},
		{
			name: "expired reset", reason: agentv1.NackReason_NACK_REASON_EXPIRED, detail: "reset expired",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				p := h.reset("snap", 10)
				p.ExpireTime = timestamppb.New(h.clock.Now())
				return func() sent { return sent{s.update(h.sign(configsync.ResetType, p)), 10} }
			},
		},
		{
			name: "snapshot end with wrong state hash", reason: agentv1.NackReason_NACK_REASON_APPLY_FAILED, detail: "state hash mismatch",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					s.update(h.sign(configsync.ResetType, h.reset("snap", 10)))
					s.update(h.sign(configsync.SnapshotChunkType, chunk("snap", 0, doc("x", 1, "x"))))
					return sent{s.update(h.sign(configsync.SnapshotEndType, h.end("snap", 10, 1, configstate.EmptyHash))), 10}
				}
			},
		},
		{
			name: "chunk out of order", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "want chunk 1",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					s.update(h.sign(configsync.ResetType, h.reset("snap", 10)))
					s.update(h.sign(configsync.SnapshotChunkType, chunk("snap", 0, doc("x", 1, "x"))))
					return sent{s.update(h.sign(configsync.SnapshotChunkType, chunk("snap", 2, doc("y", 1, "y")))), 10}
				}
			},
		},
		{
			name: "chunk of another snapshot", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: `"other"`,
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					s.update(h.sign(configsync.ResetType, h.reset("snap", 10)))
					return sent{s.update(h.sign(configsync.SnapshotChunkType, chunk("other", 0, doc("x", 1, "x")))), 10}
				}
			},
		},
		{
			name: "chunk without reset", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "without a reset",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					return sent{s.update(h.sign(configsync.SnapshotChunkType, chunk("snap", 0, doc("x", 1, "x")))), 0}
				}
			},
		},
		{
			name: "snapshot end with wrong chunk count", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "2 chunks",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					x := doc("x", 1, "x")
					s.update(h.sign(configsync.ResetType, h.reset("snap", 10)))
					s.update(h.sign(configsync.SnapshotChunkType, chunk("snap", 0, x)))
					return sent{s.update(h.sign(configsync.SnapshotEndType, h.end("snap", 10, 2, hashOf([]*agentv1.Document{x})))), 10}
				}
			},
		},
		{
			name: "snapshot end at another revision", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "the reset said 10",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					s.update(h.sign(configsync.ResetType, h.reset("snap", 10)))
					return sent{s.update(h.sign(configsync.SnapshotEndType, h.end("snap", 11, 0, configstate.EmptyHash))), 11}
				}
			},
		},
		{
			name: "snapshot over the memory bound", reason: agentv1.NackReason_NACK_REASON_MALFORMED, detail: "exceeds 4096 bytes",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				return func() sent {
					s.update(h.sign(configsync.ResetType, h.reset("snap", 10)))
					s.update(h.sign(configsync.SnapshotChunkType, chunk("snap", 0, doc("x", 1, strings.Repeat("x", 3000)))))
					return sent{s.update(h.sign(configsync.SnapshotChunkType, chunk("snap", 1, doc("y", 1, strings.Repeat("y", 3000))))), 10}
				}
			},
		},
		{
			name: "key set not signed by the root", reason: agentv1.NackReason_NACK_REASON_UNKNOWN_KEY, detail: "not signed by root",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				// Version 2, so only the signature stands in its way.
				other := otherSigner(h)
				if err := other.Rotate(); err != nil {
					h.tb.Fatalf("Rotate: %v", err)
				}
				return func() sent { return sent{s.keySet(envelopePB(other.KeySetEnvelope())), 0} }
			},
		},
		{
			name: "key set altered", reason: agentv1.NackReason_NACK_REASON_BAD_SIGNATURE, detail: "bad signature",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				if err := h.signer.Rotate(); err != nil {
					h.tb.Fatalf("Rotate: %v", err)
				}
				return func() sent { return sent{s.keySet(flip(h.keySet())), 0} }
			},
		},
		{
			name: "older key set", reason: agentv1.NackReason_NACK_REASON_STALE, detail: "older",
			setup: func(h *harness, s *session, _ []*agentv1.SignedEnvelope) func() sent {
				v1 := h.keySet()
				if err := h.signer.Rotate(); err != nil {
					h.tb.Fatalf("Rotate: %v", err)
				}
				s.giveKeySet()
				return func() sent { return sent{s.keySet(v1), 0} }
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *configsync.Config) { c.MaxSnapshotBytes = 4096 })
			s := h.start()
			s.giveKeySet()
			deltas := []*agentv1.SignedEnvelope{
				s.apply(doc("a", 1, "a")),
				s.apply(doc("b", 1, "b")),
				s.apply(doc("c", 1, "c")),
			}
			send := tt.setup(h, s, deltas)
			before, keySetVersion, stats := h.snapshot(), h.syncer.KeySetVersion(), h.syncer.Stats()

			got := send()
			detail := s.expectNack(got.nonce, got.rev, tt.reason)
			if !strings.Contains(detail, tt.detail) {
				t.Errorf("Nack detail %q; want it to contain %q", detail, tt.detail)
			}
			if rev, reason, d := h.syncer.LastNack(); rev != got.rev || reason != tt.reason || d != detail {
				t.Errorf("LastNack() = %d, %v, %q; want %d, %v, %q", rev, reason, d, got.rev, tt.reason, detail)
			}
			if diff := cmp.Diff(before, h.snapshot(), protocmp.Transform()); diff != "" {
				t.Errorf("cache changed by a refused message (-before +after):\n%s", diff)
			}
			if v := h.syncer.KeySetVersion(); v != keySetVersion {
				t.Errorf("key set version %d after the refusal; want %d", v, keySetVersion)
			}
			if after := h.syncer.Stats(); after.Nacks != stats.Nacks+1 || after.Applied != stats.Applied {
				t.Errorf("Stats %+v after the refusal; want one more nack than %+v and no more applied", after, stats)
			}

			// The stream goes on: the current key set and the next good
			// delta apply.
			h.clock.Advance(time.Second)
			s.giveKeySet()
			s.apply(doc("z", 1, "z"))
			if err := s.finish(nil); err != nil {
				t.Fatalf("Session: %v", err)
			}
			h.checkCache(h.m)
		})
	}
}

// otherSigner is a control plane the agent has never heard of.
func otherSigner(h *harness) *signer.Signer {
	h.tb.Helper()
	sg, err := signer.Open(signer.Config{Dir: filepath.Join(h.tb.TempDir(), "other"), Now: h.clock.Now})
	if err != nil {
		h.tb.Fatalf("signer.Open: %v", err)
	}
	return sg
}

// TestOlderKeySetAfterRestart: the restored verifier remembers the newest
// key set, so a replayed older one, which still lists the retired key, is
// refused after a restart too.
func TestOlderKeySetAfterRestart(t *testing.T) {
	h := newHarness(t, nil)
	v1 := h.keySet()
	s := h.start()
	s.giveKeySet()
	if err := h.signer.Rotate(); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	s.giveKeySet()
	s.apply(doc("a", 1, "a"))
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}

	h.restart()
	if v := h.syncer.KeySetVersion(); v != 2 {
		t.Fatalf("restored key set version %d; want 2", v)
	}
	s = h.start()
	if s.hello.KeySetVersion != 2 {
		t.Errorf("Hello.KeySetVersion %d; want 2", s.hello.KeySetVersion)
	}
	s.expectNack(s.keySet(v1), 0, agentv1.NackReason_NACK_REASON_STALE)
	// The current set again is a harmless redelivery.
	s.giveKeySet()
	if v, _ := h.cache.KeySet(); v != 2 || h.syncer.KeySetVersion() != 2 {
		t.Errorf("key set versions: cache %d, verifier %d; want 2 and 2", v, h.syncer.KeySetVersion())
	}
	s.apply(doc("b", 1, "b"))
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}
}

// TestRestoreExpiredKeySet: a saved key set whose keys have all expired
// while the agent was down still guards against older sets after the
// restart, though it verifies nothing.
func TestRestoreExpiredKeySet(t *testing.T) {
	rootPub, rootPriv := newRoot(t)
	h := newHarness(t, func(c *configsync.Config) { c.Root = rootPub })
	keySet := func(version int64, notAfter time.Time) *agentv1.SignedEnvelope {
		pub, _ := newRoot(t)
		now := h.clock.Now()
		data, err := json.Marshal(sign.KeySet{Version: version, IssuedAt: now, Keys: []sign.VerificationKey{{
			KeyID: sign.KeyID(pub), PublicKey: pub, NotBefore: now, NotAfter: notAfter,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return envelopePB(sign.SignEnvelope(sign.KeySetPayloadType, data, rootPriv))
	}
	old := keySet(4, time.Time{})
	s := h.start()
	s.expectAck(s.keySet(keySet(5, h.clock.Now().Add(time.Hour))), 0)
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}

	h.clock.Advance(2 * time.Hour)
	h.restart()
	if v := h.syncer.KeySetVersion(); v != 5 {
		t.Fatalf("restored key set version %d; want 5", v)
	}
	s = h.start()
	s.expectNack(s.keySet(old), 0, agentv1.NackReason_NACK_REASON_STALE)
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}
}

func TestHeartbeatAndStale(t *testing.T) {
	h := newHarness(t, nil)
	s := h.start()
	s.giveKeySet()

	check := func(want bool) {
		t.Helper()
		if got := h.syncer.Stale(); got != want {
			t.Errorf("Stale() at %v since last fresh = %v; want %v", h.clock.Now().Sub(h.syncer.Stats().LastFresh), got, want)
		}
	}
	// A new Syncer counts as fresh for StaleAfter (60s).
	check(false)
	h.clock.Advance(60 * time.Second)
	check(false)
	h.clock.Advance(time.Second)
	check(true)

	s.heartbeat(h.sign(configsync.HeartbeatType, h.heartbeat(0, configstate.EmptyHash)))
	s.barrier()
	check(false)
	h.clock.Advance(61 * time.Second)
	check(true)

	refused := map[string]*agentv1.SignedEnvelope{}
	p := h.heartbeat(0, configstate.EmptyHash)
	p.ExpireTime = timestamppb.New(h.clock.Now().Add(-time.Second))
	refused["expired"] = h.sign(configsync.HeartbeatType, p)
	p = h.heartbeat(0, configstate.EmptyHash)
	p.DataPlaneId = "dp-2"
	refused["wrong data plane"] = h.sign(configsync.HeartbeatType, p)
	refused["newer revision"] = h.sign(configsync.HeartbeatType, h.heartbeat(1, "x"))
	refused["bad signature"] = flip(h.sign(configsync.HeartbeatType, h.heartbeat(0, configstate.EmptyHash)))
	refused["unknown key"] = h.signWith(otherSigner(h), configsync.HeartbeatType, h.heartbeat(0, configstate.EmptyHash))
	refused["wrong type"] = h.sign(configsync.DeltaType, h.heartbeat(0, configstate.EmptyHash))
	for name, env := range refused {
		s.heartbeat(env)
		s.barrier()
		if !h.syncer.Stale() {
			t.Errorf("a %s heartbeat made the agent fresh", name)
		}
	}

	// An applied update is as good as a heartbeat.
	s.apply(doc("a", 1, "a"))
	check(false)
	h.clock.Advance(30 * time.Second)
	s.heartbeat(h.sign(configsync.HeartbeatType, h.heartbeat(1, h.m.hash())))
	s.barrier()
	h.clock.Advance(45 * time.Second)
	check(false)
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}
	if got := h.syncer.Stats(); got.Nacks != 0 {
		t.Errorf("Stats().Nacks = %d; heartbeats are never answered", got.Nacks)
	}
}

func TestSessionEnd(t *testing.T) {
	t.Run("control plane error", func(t *testing.T) {
		h := newHarness(t, nil)
		s := h.start()
		err := s.finish(status.Error(codes.Unavailable, "going away"))
		if status.Code(err) != codes.Unavailable {
			t.Errorf("Session: %v; want code Unavailable", err)
		}
	})
	t.Run("context canceled", func(t *testing.T) {
		h := newHarness(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := h.client.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- h.syncer.Session(ctx, stream) }()
		srv := <-h.cp.streams
		<-srv.reqs // Hello
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Session: %v; want context.Canceled", err)
		}
	})
	t.Run("one session at a time", func(t *testing.T) {
		h := newHarness(t, nil)
		s := h.start()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream, err := h.client.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.syncer.Session(ctx, stream); !errors.Is(err, configsync.ErrSessionRunning) {
			t.Errorf("second Session: %v; want ErrSessionRunning", err)
		}
		cancel()
		if err := s.finish(nil); err != nil {
			t.Errorf("first Session: %v", err)
		}
	})
}

func TestNew(t *testing.T) {
	c, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	root, _ := newRoot(t)
	good := configsync.Config{DataPlaneID: testDP, Root: root, Cache: c}
	tests := []struct {
		name string
		edit func(*configsync.Config)
		ok   bool
	}{
		{"complete", func(*configsync.Config) {}, true},
		{"no data plane", func(c *configsync.Config) { c.DataPlaneID = "" }, false},
		{"no root", func(c *configsync.Config) { c.Root = nil }, false},
		{"short root", func(c *configsync.Config) { c.Root = bytes.Clone(root[:31]) }, false},
		{"no cache", func(c *configsync.Config) { c.Cache = nil }, false},
		{"negative StaleAfter", func(c *configsync.Config) { c.StaleAfter = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			_, err := configsync.New(cfg)
			if (err == nil) != tt.ok {
				t.Errorf("New: %v; want ok = %v", err, tt.ok)
			}
		})
	}
}

// TestTrustBundle: a Syncer given TrustBundle asks for the bundle in its
// Hello and hands each one to it, unanswered; a bundle the installer
// refuses is logged and the stream goes on. A Syncer without TrustBundle
// does not ask, and ignores a bundle sent anyway rather than refusing it.
func TestTrustBundle(t *testing.T) {
	t.Run("asked for", func(t *testing.T) {
		var mu sync.Mutex
		var got []string
		h := newHarness(t, func(c *configsync.Config) {
			c.TrustBundle = func(certs [][]byte) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, string(bytes.Join(certs, []byte(","))))
				if string(certs[0]) == "bad" {
					return errors.New("does not verify the agent's SVID")
				}
				return nil
			}
		})
		s := h.start()
		if !s.hello.WantTrustBundle {
			t.Fatalf("Hello %v does not ask for the trust bundle", s.hello)
		}
		for _, b := range [][][]byte{{[]byte("ca-1")}, {[]byte("bad")}, {[]byte("ca-1"), []byte("ca-2")}} {
			s.send(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_TrustBundle{TrustBundle: &agentv1.TrustBundle{Certificates: b}}})
		}
		// The key set's ack is the agent's first answer: the bundles were
		// not answered, and the refused one did not end the session.
		s.giveKeySet()
		s.apply(doc("a", 1, `{"a":1}`))
		mu.Lock()
		if diff := cmp.Diff([]string{"ca-1", "bad", "ca-1,ca-2"}, got); diff != "" {
			t.Errorf("bundles installed (-want +got):\n%s", diff)
		}
		mu.Unlock()
		if n := h.syncer.Stats().TrustBundles; n != 2 {
			t.Errorf("Stats.TrustBundles %d; want 2 (the refused one not counted)", n)
		}
		if err := s.finish(nil); err != nil {
			t.Fatalf("Session: %v", err)
		}
	})
	t.Run("not asked for", func(t *testing.T) {
		h := newHarness(t, nil)
		s := h.start()
		if s.hello.WantTrustBundle {
			t.Fatalf("Hello %v asks for the trust bundle without an installer", s.hello)
		}
		s.send(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_TrustBundle{TrustBundle: &agentv1.TrustBundle{Certificates: [][]byte{[]byte("ca-1")}}}})
		s.giveKeySet()
		if n := h.syncer.Stats().Nacks; n != 0 {
			t.Errorf("%d nacks; want none", n)
		}
		if err := s.finish(nil); err != nil {
			t.Fatalf("Session: %v", err)
		}
	})
}
