// Package fanout turns a data plane's revision log into the signed
// envelopes its agents receive. Each envelope is signed and serialized
// once per (data plane, revision) and the same bytes are shared by every
// agent of that data plane; concurrent requests for one envelope wait for
// a single signing. It reads the store and signs; it does not talk to
// agents.
package fanout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// Payload types of signed updates.
const (
	DeltaType         = "application/vnd.cairn.delta+proto"
	ResetType         = "application/vnd.cairn.reset+proto"
	SnapshotChunkType = "application/vnd.cairn.snapshot-chunk+proto"
	SnapshotEndType   = "application/vnd.cairn.snapshot-end+proto"
	HeartbeatType     = "application/vnd.cairn.heartbeat+proto"
)

// Defaults for Config fields left zero.
const (
	DefaultUpdateTTL    = 24 * time.Hour
	DefaultHeartbeatTTL = 30 * time.Second
	DefaultChunkBytes   = 256 << 10
	DefaultCacheEntries = 4096
)

// Config configures the envelope builder.
type Config struct {
	// Store is read for revisions and snapshots. Required.
	Store *store.Store
	// Signer signs envelopes. Required.
	Signer *signer.Signer
	// UpdateTTL is how long a delta or snapshot envelope is valid; a cached
	// one is re-signed once less than half of it remains. 0 means
	// DefaultUpdateTTL.
	UpdateTTL time.Duration
	// HeartbeatTTL is how long a heartbeat is valid; 0 means
	// DefaultHeartbeatTTL.
	HeartbeatTTL time.Duration
	// ChunkBytes bounds the document bytes of one snapshot chunk; 0 means
	// DefaultChunkBytes.
	ChunkBytes int
	// CacheEntries bounds the cached envelopes; 0 means
	// DefaultCacheEntries.
	CacheEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Envelopes builds and caches signed envelopes.
type Envelopes struct {
	cfg Config
	log *slog.Logger
	sf  singleflight.Group

	mu    sync.Mutex
	cache map[string]*cached
	order []string // insertion order, for eviction

	// keySet is the newest key set envelope and its version.
	keySet        *agentv1.SignedEnvelope
	keySetVersion int64
}

type cached struct {
	envs   []*agentv1.SignedEnvelope
	head   store.Head
	expire time.Time
}

// NewEnvelopes checks cfg.
func NewEnvelopes(cfg Config) (*Envelopes, error) {
	if cfg.Store == nil || cfg.Signer == nil {
		return nil, errors.New("fanout: Store and Signer are required")
	}
	if cfg.UpdateTTL == 0 {
		cfg.UpdateTTL = DefaultUpdateTTL
	}
	if cfg.HeartbeatTTL == 0 {
		cfg.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.CacheEntries == 0 {
		cfg.CacheEntries = DefaultCacheEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Envelopes{cfg: cfg, log: log, cache: map[string]*cached{}}, nil
}

// get returns the cached envelopes for key, building them once when
// missing or past half their validity.
func (e *Envelopes) get(key string, build func() (*cached, error)) (*cached, error) {
	now := e.cfg.Now()
	e.mu.Lock()
	c, ok := e.cache[key]
	e.mu.Unlock()
	if ok && now.Before(c.expire) {
		return c, nil
	}
	v, err, _ := e.sf.Do(key, func() (any, error) {
		c, err := build()
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, exists := e.cache[key]; !exists {
			e.order = append(e.order, key)
		}
		e.cache[key] = c
		for len(e.order) > e.cfg.CacheEntries {
			delete(e.cache, e.order[0])
			e.order = e.order[1:]
		}
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*cached), nil
}

func (e *Envelopes) sign(payloadType string, m proto.Message) (*agentv1.SignedEnvelope, error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("fanout: marshal %s: %w", payloadType, err)
	}
	return envelopePB(e.cfg.Signer.Sign(payloadType, payload)), nil
}

func envelopePB(env sign.Envelope) *agentv1.SignedEnvelope {
	out := &agentv1.SignedEnvelope{PayloadType: env.PayloadType, Payload: env.Payload}
	for _, s := range env.Signatures {
		out.Signatures = append(out.Signatures, &agentv1.Signature{KeyId: s.KeyID, Sig: s.Sig})
	}
	return out
}

// KeySet returns the current signing key set, signed by the root key,
// and its version. Every stream checks it at each heartbeat, so it is
// built once per version; callers must not modify it.
func (e *Envelopes) KeySet() (*agentv1.SignedEnvelope, int64) {
	v := e.cfg.Signer.KeySetVersion()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.keySet == nil || e.keySetVersion != v {
		env := e.cfg.Signer.KeySetEnvelope()
		var ks sign.KeySet
		if err := json.Unmarshal(env.Payload, &ks); err != nil {
			// The signer made it from a KeySet.
			panic(fmt.Sprintf("fanout: key set envelope: %v", err))
		}
		e.keySet, e.keySetVersion = envelopePB(env), ks.Version
	}
	return e.keySet, e.keySetVersion
}

func documentPB(r store.Revision) *agentv1.Document {
	return &agentv1.Document{
		Id: r.DocumentID, ScopeType: r.ScopeType, ScopeId: r.ScopeID, Kind: r.Kind, Name: r.Name,
		Version: r.Version, Content: r.Content, MediaType: r.MediaType, Structured: r.Structured, Labels: r.Labels,
	}
}

// Delta returns the signed delta that moves an agent from revision-1 to
// revision. It fails with store.ErrCompacted when the log no longer holds
// that revision.
func (e *Envelopes) Delta(ctx context.Context, dataPlaneID string, revision int64) (*agentv1.SignedEnvelope, error) {
	c, err := e.get(fmt.Sprintf("delta/%s/%d", dataPlaneID, revision), func() (*cached, error) {
		revs, err := e.cfg.Store.RevisionsAfter(ctx, dataPlaneID, revision-1, 1)
		if err != nil {
			return nil, err
		}
		if len(revs) == 0 || revs[0].Revision != revision {
			return nil, fmt.Errorf("fanout: data plane %s has no revision %d yet", dataPlaneID, revision)
		}
		r := revs[0]
		kind := agentv1.Operation_KIND_PUT
		if r.Op == store.OpDelete {
			kind = agentv1.Operation_KIND_DELETE
		}
		now := e.cfg.Now()
		env, err := e.sign(DeltaType, &agentv1.DeltaPayload{
			DataPlaneId: dataPlaneID, FromRevision: revision - 1, ToRevision: revision,
			PrevStateHash: r.PrevStateHash, StateHash: r.StateHash,
			IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(e.cfg.UpdateTTL)),
			Operations: []*agentv1.Operation{{Kind: kind, Document: documentPB(r)}},
		})
		if err != nil {
			return nil, err
		}
		return &cached{envs: []*agentv1.SignedEnvelope{env}, expire: now.Add(e.cfg.UpdateTTL / 2)}, nil
	})
	if err != nil {
		return nil, err
	}
	return c.envs[0], nil
}

// Snapshot returns the signed reset, chunks and end of a data plane's
// current state, and the head they describe.
func (e *Envelopes) Snapshot(ctx context.Context, dataPlaneID string) ([]*agentv1.SignedEnvelope, store.Head, error) {
	head, err := e.cfg.Store.GetHead(ctx, dataPlaneID)
	if err != nil {
		return nil, store.Head{}, err
	}
	c, err := e.get(fmt.Sprintf("snapshot/%s/%d", dataPlaneID, head.Revision), func() (*cached, error) {
		snap, err := e.cfg.Store.GetSnapshot(ctx, dataPlaneID)
		if err != nil {
			return nil, err
		}
		return e.buildSnapshot(dataPlaneID, snap)
	})
	if err != nil {
		return nil, store.Head{}, err
	}
	return c.envs, c.head, nil
}

func (e *Envelopes) buildSnapshot(dataPlaneID string, snap store.Snapshot) (*cached, error) {
	now := e.cfg.Now()
	issue, expire := timestamppb.New(now), timestamppb.New(now.Add(e.cfg.UpdateTTL))
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	reset, err := e.sign(ResetType, &agentv1.ResetPayload{
		DataPlaneId: dataPlaneID, Revision: snap.Head.Revision, SnapshotId: id, IssueTime: issue, ExpireTime: expire})
	if err != nil {
		return nil, err
	}
	envs := []*agentv1.SignedEnvelope{reset}
	var chunk []*agentv1.Document
	size, index := 0, int32(0)
	flush := func() error {
		env, err := e.sign(SnapshotChunkType, &agentv1.SnapshotChunkPayload{DataPlaneId: dataPlaneID, SnapshotId: id, Index: index, Documents: chunk})
		if err != nil {
			return err
		}
		envs = append(envs, env)
		chunk, size = nil, 0
		index++
		return nil
	}
	for _, d := range snap.Documents {
		doc := &agentv1.Document{Id: d.ID, ScopeType: d.ScopeType, ScopeId: d.ScopeID, Kind: d.Kind, Name: d.Name,
			Version: d.Version, Content: d.Content, MediaType: d.MediaType, Structured: d.Structured, Labels: d.Labels}
		if size > 0 && size+len(d.Content) > e.cfg.ChunkBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		chunk = append(chunk, doc)
		size += len(d.Content)
	}
	if len(chunk) > 0 {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	end, err := e.sign(SnapshotEndType, &agentv1.SnapshotEndPayload{DataPlaneId: dataPlaneID, SnapshotId: id,
		Revision: snap.Head.Revision, Chunks: index, StateHash: snap.Head.StateHash, IssueTime: issue, ExpireTime: expire})
	if err != nil {
		return nil, err
	}
	envs = append(envs, end)
	return &cached{envs: envs, head: snap.Head, expire: now.Add(e.cfg.UpdateTTL / 2)}, nil
}

// Heartbeat returns a signed heartbeat for a data plane at its head; one
// is shared by all agents of the data plane until a third of its validity
// has passed.
func (e *Envelopes) Heartbeat(ctx context.Context, head store.Head) (*agentv1.SignedEnvelope, error) {
	c, err := e.get(fmt.Sprintf("heartbeat/%s/%d", head.DataPlaneID, head.Revision), func() (*cached, error) {
		now := e.cfg.Now()
		env, err := e.sign(HeartbeatType, &agentv1.HeartbeatPayload{DataPlaneId: head.DataPlaneID, Revision: head.Revision,
			StateHash: head.StateHash, IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(e.cfg.HeartbeatTTL))})
		if err != nil {
			return nil, err
		}
		return &cached{envs: []*agentv1.SignedEnvelope{env}, expire: now.Add(e.cfg.HeartbeatTTL / 3)}, nil
	})
	if err != nil {
		return nil, err
	}
	return c.envs[0], nil
}
