// Package configsync is the agent side of ConfigService.Stream: it says
// where the agent's cache stands, verifies every key set, update and
// heartbeat the control plane sends, applies what verifies to the cache,
// and ACKs or NACKs each update with the reason. It also tells whether the
// agent's view is fresh, so a blocked stream shows as stale instead of
// silently serving old config.
//
// It runs one stream at a time and does not dial, retry or reconnect: the
// daemon owns the connection. It must not import control-plane code; the
// payload type strings below are the wire contract and are duplicated from
// controlplane/internal/fanout on purpose.
package configsync

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/certs/sign"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// Payload types of signed updates and heartbeats (config.proto).
const (
	DeltaType         = "application/vnd.cairn.delta+proto"
	ResetType         = "application/vnd.cairn.reset+proto"
	SnapshotChunkType = "application/vnd.cairn.snapshot-chunk+proto"
	SnapshotEndType   = "application/vnd.cairn.snapshot-end+proto"
	HeartbeatType     = "application/vnd.cairn.heartbeat+proto"
)

// Defaults for Config fields left zero.
const (
	DefaultStaleAfter       = 60 * time.Second
	DefaultMaxSnapshotBytes = 64 << 20
)

// maxDetail bounds the detail of a Nack; error text may quote what the peer
// sent.
const maxDetail = 1024

// ErrSessionRunning is returned by Session while another Session of the
// same Syncer runs.
var ErrSessionRunning = errors.New("configsync: a session is already running")

// Config configures a Syncer.
type Config struct {
	// DataPlaneID is the agent's own data plane, from its identity.
	// Required: updates and heartbeats for any other are refused.
	DataPlaneID string
	// Root is the signing root's public key from enrollment; only key sets
	// it signs are accepted. Required, 32 bytes.
	Root ed25519.PublicKey
	// Cache is the agent's config cache. Required; the Syncer does not
	// close it.
	Cache *cache.Cache
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock for signature, expiry and freshness checks; nil
	// means time.Now.
	Now func() time.Time
	// StaleAfter is how long the agent may go without a fresh signed
	// heartbeat or an applied update before Stale reports true; 0 means
	// DefaultStaleAfter.
	StaleAfter time.Duration
	// MaxSnapshotBytes bounds the document bytes (protobuf size) of a
	// snapshot staged in memory; 0 means DefaultMaxSnapshotBytes.
	MaxSnapshotBytes int
	// TrustBundle, when set, asks the control plane for the trust bundle
	// on the config stream (Hello.want_trust_bundle) and installs each one
	// it sends (the CA certificates, DER); an error is logged and the
	// bundle ignored. Nil asks for none: the agent follows the bundle some
	// other way (IdentityService.WatchBundle).
	TrustBundle func(certificates [][]byte) error
	// OnChange, when set, is called whenever what the agent's status
	// shows from the Syncer may have changed: an update applied (the
	// cache's state), a refusal sent (LastNack), the stream connected or
	// gone (Stats.Connected), staleness begun or ended (Stale). Staleness
	// begins with time alone: a timer calls OnChange then. It is called on
	// the Syncer's goroutines without its locks and must not block.
	OnChange func()
}

// Syncer verifies and applies what the control plane streams. Stale,
// LastNack and Stats are safe to call at any time, from any goroutine;
// Session runs one stream at a time.
type Syncer struct {
	cfg      Config
	log      *slog.Logger
	verifier *sign.Verifier

	session sync.Mutex // held by the running Session

	mu        sync.Mutex
	lastFresh time.Time
	lastNack  nack
	stats     Stats
	// staleTimer calls OnChange when the agent turns stale; it is armed
	// (staleArmed) from each freshness until staleness, and re-arms
	// itself while freshness keeps moving. Nil without OnChange.
	staleTimer *time.Timer
	staleArmed bool
}

// Stats counts what a Syncer did since New.
type Stats struct {
	// Applied counts deltas and snapshots written to the cache.
	Applied int64
	// Nacks counts refusals sent.
	Nacks int64
	// KeySets counts key sets accepted (not counting the one restored
	// from the cache).
	KeySets int64
	// TrustBundles counts trust bundles received on the stream and
	// installed.
	TrustBundles int64
	// LastFresh is when the agent last knew its config current: a verified
	// heartbeat for its revision, an applied update, or New.
	LastFresh time.Time
	// Connected is true while a Session runs past its Hello.
	Connected bool
	// SignedHead is the newest revision a verified heartbeat or update
	// named: SignedHead minus the applied revision is the agent's lag.
	SignedHead int64
	// LastApply is how long the newest delta took to verify and apply.
	LastApply time.Duration
}

type nack struct {
	revision int64
	reason   agentv1.NackReason
	detail   string
}

// New checks cfg and restores the verifier's key set from the one the cache
// saved, so that after a restart a replayed older key set is still refused.
// A saved key set that no longer verifies under Root (the agent was
// enrolled again) is logged and ignored.
func New(cfg Config) (*Syncer, error) {
	switch {
	case cfg.DataPlaneID == "":
		return nil, errors.New("configsync: Config.DataPlaneID is required")
	case len(cfg.Root) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("configsync: Config.Root is %d bytes; want %d", len(cfg.Root), ed25519.PublicKeySize)
	case cfg.Cache == nil:
		return nil, errors.New("configsync: Config.Cache is required")
	case cfg.StaleAfter < 0 || cfg.MaxSnapshotBytes < 0:
		return nil, errors.New("configsync: negative Config.StaleAfter or Config.MaxSnapshotBytes")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.MaxSnapshotBytes == 0 {
		cfg.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{cfg: cfg, log: log, verifier: sign.NewVerifier(cfg.Root)}
	s.lastFresh = cfg.Now()
	s.stats.LastFresh = s.lastFresh
	if cfg.OnChange != nil {
		// Never stopped: a Syncer has no end, and the timer of one no
		// longer used fires at most once more, within StaleAfter.
		s.mu.Lock()
		s.staleTimer, s.staleArmed = time.AfterFunc(cfg.StaleAfter, s.checkStale), true
		s.mu.Unlock()
	}
	if err := s.restoreKeySet(); err != nil {
		log.Warn("saved signing key set not restored; waiting for the control plane's", "err", err)
	}
	return s, nil
}

// restoreKeySet feeds the cache's saved key set to the verifier. A set
// whose keys have all expired since is still restored, verified as of its
// issue time: it is there to refuse older sets, and Verify checks each
// key's window against the real clock anyway.
func (s *Syncer) restoreKeySet() error {
	version, data := s.cfg.Cache.KeySet()
	if version == 0 {
		return nil
	}
	env, err := sign.UnmarshalEnvelope(data)
	if err != nil {
		return err
	}
	err = s.verifier.UpdateKeySet(env, s.cfg.Now())
	if errors.Is(err, sign.ErrExpiredKey) {
		var ks sign.KeySet
		if jerr := json.Unmarshal(env.Payload, &ks); jerr == nil && !ks.IssuedAt.IsZero() {
			err = s.verifier.UpdateKeySet(env, ks.IssuedAt)
		}
	}
	if err != nil {
		return err
	}
	if got := s.verifier.KeySet().Version; got != version {
		return fmt.Errorf("saved key set says version %d, the cache %d", got, version)
	}
	return nil
}

// Stale reports whether more than StaleAfter has passed since the agent
// last knew its config current (see Stats.LastFresh). A new Syncer counts
// as fresh at New.
func (s *Syncer) Stale() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Now().Sub(s.lastFresh) > s.cfg.StaleAfter
}

// LastNack returns the last refusal sent; zero values if none was.
func (s *Syncer) LastNack() (rev int64, reason agentv1.NackReason, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastNack.revision, s.lastNack.reason, s.lastNack.detail
}

// Stats returns the counters.
func (s *Syncer) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// KeySetVersion returns the version of the signing key set the Syncer
// trusts; 0 for none.
func (s *Syncer) KeySetVersion() int64 {
	return s.verifier.KeySet().Version
}

func (s *Syncer) fresh() {
	s.mu.Lock()
	now := s.cfg.Now()
	wasStale := now.Sub(s.lastFresh) > s.cfg.StaleAfter
	s.lastFresh = now
	s.stats.LastFresh = now
	if s.staleTimer != nil && !s.staleArmed {
		s.staleTimer.Reset(s.cfg.StaleAfter)
		s.staleArmed = true
	}
	s.mu.Unlock()
	if wasStale {
		s.changed()
	}
}

// checkStale is staleTimer's: when the agent has turned stale it calls
// OnChange, otherwise it waits for the newest freshness to run out.
func (s *Syncer) checkStale() {
	s.mu.Lock()
	left := s.lastFresh.Add(s.cfg.StaleAfter).Sub(s.cfg.Now())
	if left >= 0 { // Stale needs more than StaleAfter
		s.staleTimer.Reset(left + time.Millisecond)
		s.mu.Unlock()
		return
	}
	s.staleArmed = false
	s.mu.Unlock()
	s.changed()
}

// changed calls Config.OnChange.
func (s *Syncer) changed() {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

// Session runs one stream: it sends Hello with the cache's revision, state
// hash and epoch and the key set version, then handles what the control
// plane sends until the stream ends, answering each key set and update
// with an Ack or a Nack that echoes its nonce. Reset and snapshot chunks
// are answered only when refused; the snapshot's end gets the Ack.
// Heartbeats are never answered. A refused message changes nothing: not
// the cache, not the key set.
//
// ctx must be the context the stream was opened with, or one that ends no
// later: Session cannot cancel the stream itself. Session returns nil when
// the control plane ends the stream, ctx's error when ctx ends, the
// stream's error otherwise, and ErrSessionRunning if another Session of s
// is running. A snapshot left unfinished is dropped; the caller reconnects.
func (s *Syncer) Session(ctx context.Context, stream agentv1.ConfigService_StreamClient) error {
	if !s.session.TryLock() {
		return ErrSessionRunning
	}
	defer s.session.Unlock()

	st := s.cfg.Cache.State()
	if st.DataPlaneID != "" && st.DataPlaneID != s.cfg.DataPlaneID {
		s.log.Warn("config cache holds another data plane; it takes only a snapshot now",
			"cache_data_plane", st.DataPlaneID, "data_plane", s.cfg.DataPlaneID)
	}
	hello := &agentv1.Hello{
		AppliedRevision: st.Revision,
		StateHash:       st.StateHash,
		Epoch:           st.Epoch,
		KeySetVersion:   s.verifier.KeySet().Version,
		WantTrustBundle: s.cfg.TrustBundle != nil,
	}
	s.log.Debug("config stream hello", "revision", hello.AppliedRevision, "key_set_version", hello.KeySetVersion)
	if err := s.send(ctx, stream, &agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		return err
	}
	s.setConnected(true)
	defer s.setConnected(false)

	var snap *staging
	for {
		resp, err := stream.Recv()
		if err != nil {
			return endErr(ctx, err)
		}
		var reply *agentv1.StreamRequest
		switch m := resp.GetMsg().(type) {
		case *agentv1.StreamResponse_KeySet:
			reply = s.handleKeySet(resp.GetNonce(), m.KeySet)
		case *agentv1.StreamResponse_Update:
			reply = s.handleUpdate(resp.GetNonce(), m.Update, &snap)
		case *agentv1.StreamResponse_Heartbeat:
			s.handleHeartbeat(m.Heartbeat)
		case *agentv1.StreamResponse_TrustBundle:
			s.handleTrustBundle(m.TrustBundle)
		default:
			reply = s.refuse(resp.GetNonce(), 0, agentv1.NackReason_NACK_REASON_MALFORMED, "stream message without key set, update, heartbeat or trust bundle")
		}
		if reply == nil {
			continue
		}
		if err := s.send(ctx, stream, reply); err != nil {
			return err
		}
	}
}

// send sends req. gRPC reports a stream the server ended as io.EOF from
// Send and the real status from Recv, so on io.EOF it reads until Recv
// fails.
func (s *Syncer) send(ctx context.Context, stream agentv1.ConfigService_StreamClient, req *agentv1.StreamRequest) error {
	err := stream.Send(req)
	if err == nil {
		return nil
	}
	if !errors.Is(err, io.EOF) {
		return endErr(ctx, err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return endErr(ctx, err)
		}
	}
}

// endErr turns the error that ended a stream into Session's result.
func endErr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, io.EOF):
		return nil
	default:
		return fmt.Errorf("config stream: %w", err)
	}
}

func ack(nonce string, revision int64) *agentv1.StreamRequest {
	return &agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Ack{Ack: &agentv1.Ack{Revision: revision, Nonce: nonce}}}
}

// refuse records and logs a refusal and returns its Nack.
func (s *Syncer) refuse(nonce string, revision int64, reason agentv1.NackReason, detail string) *agentv1.StreamRequest {
	detail = strings.ToValidUTF8(detail, "?")
	if len(detail) > maxDetail {
		detail = strings.ToValidUTF8(detail[:maxDetail], "")
	}
	s.mu.Lock()
	s.lastNack = nack{revision: revision, reason: reason, detail: detail}
	s.stats.Nacks++
	s.mu.Unlock()
	s.changed()
	s.log.Warn("config update refused", "reason", reason.String(), "revision", revision, "nonce", nonce, "detail", detail)
	return &agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Nack{Nack: &agentv1.Nack{
		Revision: revision, Nonce: nonce, Reason: reason, Detail: detail,
	}}}
}

// refusal is a reason to refuse an update, with its detail.
type refusal struct {
	reason agentv1.NackReason
	detail string
}

func refused(reason agentv1.NackReason, format string, args ...any) *refusal {
	return &refusal{reason: reason, detail: fmt.Sprintf(format, args...)}
}

// signReason maps a certs/sign error to the Nack reason.
func signReason(err error) agentv1.NackReason {
	switch {
	case errors.Is(err, sign.ErrExpiredKey):
		return agentv1.NackReason_NACK_REASON_EXPIRED
	case errors.Is(err, sign.ErrBadSignature):
		return agentv1.NackReason_NACK_REASON_BAD_SIGNATURE
	case errors.Is(err, sign.ErrUnknownKey):
		return agentv1.NackReason_NACK_REASON_UNKNOWN_KEY
	default: // ErrWrongType, ErrMalformed
		return agentv1.NackReason_NACK_REASON_MALFORMED
	}
}

// cacheReason maps a cache error to the Nack reason.
func cacheReason(err error) agentv1.NackReason {
	switch {
	case errors.Is(err, cache.ErrStale), errors.Is(err, cache.ErrGap):
		return agentv1.NackReason_NACK_REASON_STALE
	case errors.Is(err, cache.ErrChainBroken):
		return agentv1.NackReason_NACK_REASON_CHAIN_BROKEN
	case errors.Is(err, cache.ErrWrongDataPlane):
		return agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE
	case errors.Is(err, cache.ErrMalformed):
		return agentv1.NackReason_NACK_REASON_MALFORMED
	default: // ErrStateMismatch, disk errors, ErrClosed
		return agentv1.NackReason_NACK_REASON_APPLY_FAILED
	}
}

// envelope converts the wire envelope; it does not verify it.
func envelope(pb *agentv1.SignedEnvelope) sign.Envelope {
	env := sign.Envelope{PayloadType: pb.GetPayloadType(), Payload: pb.GetPayload()}
	for _, sig := range pb.GetSignatures() {
		env.Signatures = append(env.Signatures, sign.Signature{KeyID: sig.GetKeyId(), Sig: sig.GetSig()})
	}
	return env
}

// verify checks pb against the current key set as a wantType envelope and
// unmarshals its payload into m. It returns env for storing.
func (s *Syncer) verify(pb *agentv1.SignedEnvelope, wantType string, m proto.Message) (sign.Envelope, *refusal) {
	env := envelope(pb)
	if len(env.Signatures) == 0 {
		return env, refused(agentv1.NackReason_NACK_REASON_BAD_SIGNATURE, "%s envelope has no signature", wantType)
	}
	payload, _, err := s.verifier.Verify(env, wantType, s.cfg.Now())
	if err != nil {
		return env, &refusal{reason: signReason(err), detail: err.Error()}
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return env, refused(agentv1.NackReason_NACK_REASON_MALFORMED, "%s payload: %v", wantType, err)
	}
	return env, nil
}

// checkScope refuses a payload for another data plane, or one whose expiry
// is missing or past.
func (s *Syncer) checkScope(kind, dataPlaneID string, expire *timestamppb.Timestamp) *refusal {
	if r := s.checkDataPlane(kind, dataPlaneID); r != nil {
		return r
	}
	if expire == nil || expire.CheckValid() != nil {
		return refused(agentv1.NackReason_NACK_REASON_MALFORMED, "%s without a valid expire time", kind)
	}
	if now := s.cfg.Now(); !expire.AsTime().After(now) {
		return refused(agentv1.NackReason_NACK_REASON_EXPIRED, "%s expired at %v; now is %v", kind, expire.AsTime(), now)
	}
	return nil
}

// checkDataPlane refuses a payload for another data plane.
func (s *Syncer) checkDataPlane(kind, dataPlaneID string) *refusal {
	if dataPlaneID != s.cfg.DataPlaneID {
		return refused(agentv1.NackReason_NACK_REASON_WRONG_DATA_PLANE, "%s for data plane %q; this agent is in %q", kind, dataPlaneID, s.cfg.DataPlaneID)
	}
	return nil
}

// handleKeySet verifies a key set and makes it current. The same version
// again is acknowledged (a harmless redelivery); an older one is refused as
// STALE, since only a replay or a control plane serving old state sends it.
func (s *Syncer) handleKeySet(nonce string, pb *agentv1.SignedEnvelope) *agentv1.StreamRequest {
	env := envelope(pb)
	if len(env.Signatures) == 0 {
		return s.refuse(nonce, 0, agentv1.NackReason_NACK_REASON_BAD_SIGNATURE, "key set envelope has no signature")
	}
	// Serialize first: what cannot be stored must not become current.
	data, err := sign.MarshalEnvelope(env)
	if err != nil {
		return s.refuse(nonce, 0, agentv1.NackReason_NACK_REASON_MALFORMED, err.Error())
	}
	cur := s.verifier.KeySet().Version
	err = s.verifier.UpdateKeySet(env, s.cfg.Now())
	if errors.Is(err, sign.ErrStaleKeySet) {
		// UpdateKeySet verified the root's signature and parsed the set
		// before comparing versions.
		var ks sign.KeySet
		if jerr := json.Unmarshal(env.Payload, &ks); jerr == nil && ks.Version < cur {
			return s.refuse(nonce, 0, agentv1.NackReason_NACK_REASON_STALE, err.Error())
		}
		return ack(nonce, 0)
	}
	if err != nil {
		return s.refuse(nonce, 0, signReason(err), err.Error())
	}
	version := s.verifier.KeySet().Version
	if err := s.cfg.Cache.SaveKeySet(version, data); err != nil {
		// The set verified, so it stays current in memory; Hello after a
		// restart reports the saved version and the control plane sends
		// this one again.
		return s.refuse(nonce, 0, agentv1.NackReason_NACK_REASON_APPLY_FAILED, fmt.Sprintf("save key set version %d: %v", version, err))
	}
	s.mu.Lock()
	s.stats.KeySets++
	s.mu.Unlock()
	s.log.Info("signing key set updated", "version", version, "previous_version", cur)
	return ack(nonce, 0)
}

// handleUpdate verifies an update by its payload type and applies it.
func (s *Syncer) handleUpdate(nonce string, pb *agentv1.SignedEnvelope, snap **staging) *agentv1.StreamRequest {
	switch t := pb.GetPayloadType(); t {
	case DeltaType:
		return s.handleDelta(nonce, pb)
	case ResetType:
		return s.handleReset(nonce, pb, snap)
	case SnapshotChunkType:
		return s.handleChunk(nonce, pb, snap)
	case SnapshotEndType:
		return s.handleEnd(nonce, pb, snap)
	default:
		return s.refuse(nonce, 0, agentv1.NackReason_NACK_REASON_MALFORMED, fmt.Sprintf("update of payload type %q", t))
	}
}

func (s *Syncer) setConnected(c bool) {
	s.mu.Lock()
	was := s.stats.Connected
	s.stats.Connected = c
	s.mu.Unlock()
	if was != c {
		s.changed()
	}
}

// sawHead notes a revision named by a verified message.
func (s *Syncer) sawHead(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.SignedHead = max(s.stats.SignedHead, rev)
}

func (s *Syncer) handleDelta(nonce string, pb *agentv1.SignedEnvelope) *agentv1.StreamRequest {
	start := time.Now()
	var p agentv1.DeltaPayload
	env, r := s.verify(pb, DeltaType, &p)
	if r != nil {
		return s.refuse(nonce, 0, r.reason, r.detail)
	}
	rev := p.GetToRevision()
	if r := s.checkScope("delta", p.GetDataPlaneId(), p.GetExpireTime()); r != nil {
		return s.refuse(nonce, rev, r.reason, r.detail)
	}
	data, err := sign.MarshalEnvelope(env)
	if err != nil {
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED, err.Error())
	}
	// The cache checks revisions (stale, gap) and the state hash chain
	// atomically with the write.
	if err := s.cfg.Cache.ApplyDelta(&p, data); err != nil {
		detail := err.Error()
		if errors.Is(err, cache.ErrGap) {
			detail = "gap: " + detail
		}
		return s.refuse(nonce, rev, cacheReason(err), detail)
	}
	s.applied()
	s.sawHead(rev)
	s.mu.Lock()
	s.stats.LastApply = time.Since(start)
	s.mu.Unlock()
	s.log.Info("config delta applied", "revision", rev, "state_hash", p.GetStateHash(), "operations", len(p.GetOperations()))
	return ack(nonce, rev)
}

func (s *Syncer) applied() {
	s.mu.Lock()
	s.stats.Applied++
	s.mu.Unlock()
	s.fresh()
	s.changed()
}

// staging is a snapshot being received: what its reset said and the
// chunks so far.
type staging struct {
	id       string
	revision int64
	next     int32 // index of the next chunk
	size     int   // protobuf bytes of docs
	docs     []*agentv1.Document
}

// handleReset starts staging a snapshot, dropping one unfinished. It is
// answered only when refused. A reset below the applied revision is
// accepted: only the control plane can tell a rollback it means (a
// restored database) from one it does not.
func (s *Syncer) handleReset(nonce string, pb *agentv1.SignedEnvelope, snap **staging) *agentv1.StreamRequest {
	*snap = nil
	var p agentv1.ResetPayload
	if _, r := s.verify(pb, ResetType, &p); r != nil {
		return s.refuse(nonce, 0, r.reason, r.detail)
	}
	if r := s.checkScope("reset", p.GetDataPlaneId(), p.GetExpireTime()); r != nil {
		return s.refuse(nonce, p.GetRevision(), r.reason, r.detail)
	}
	if p.GetSnapshotId() == "" || p.GetRevision() < 0 {
		return s.refuse(nonce, p.GetRevision(), agentv1.NackReason_NACK_REASON_MALFORMED, "reset without snapshot id or with a negative revision")
	}
	if st := s.cfg.Cache.State(); st.DataPlaneID == s.cfg.DataPlaneID && p.GetRevision() < st.Revision {
		s.log.Warn("snapshot goes back in revisions", "revision", p.GetRevision(), "applied_revision", st.Revision)
	}
	*snap = &staging{id: p.GetSnapshotId(), revision: p.GetRevision()}
	s.log.Debug("snapshot started", "snapshot_id", p.GetSnapshotId(), "revision", p.GetRevision())
	return nil
}

// handleChunk stages a chunk. Any refusal drops the staged snapshot. It is
// answered only when refused.
func (s *Syncer) handleChunk(nonce string, pb *agentv1.SignedEnvelope, snap **staging) *agentv1.StreamRequest {
	cur := *snap
	*snap = nil
	var rev int64
	if cur != nil {
		rev = cur.revision
	}
	var p agentv1.SnapshotChunkPayload
	if _, r := s.verify(pb, SnapshotChunkType, &p); r != nil {
		return s.refuse(nonce, rev, r.reason, r.detail)
	}
	if r := s.checkDataPlane("snapshot chunk", p.GetDataPlaneId()); r != nil {
		return s.refuse(nonce, rev, r.reason, r.detail)
	}
	switch {
	case cur == nil:
		return s.refuse(nonce, 0, agentv1.NackReason_NACK_REASON_MALFORMED, "snapshot chunk without a reset")
	case p.GetSnapshotId() != cur.id:
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED,
			fmt.Sprintf("snapshot chunk of snapshot %q; staging %q", p.GetSnapshotId(), cur.id))
	case p.GetIndex() != cur.next:
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED,
			fmt.Sprintf("snapshot chunk %d; want chunk %d", p.GetIndex(), cur.next))
	}
	for _, d := range p.GetDocuments() {
		cur.size += proto.Size(d)
	}
	if cur.size > s.cfg.MaxSnapshotBytes {
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED,
			fmt.Sprintf("snapshot exceeds %d bytes of documents at chunk %d", s.cfg.MaxSnapshotBytes, p.GetIndex()))
	}
	cur.docs = append(cur.docs, p.GetDocuments()...)
	cur.next++
	*snap = cur
	return nil
}

// handleEnd checks the end against the staged snapshot and replaces the
// cache with it.
func (s *Syncer) handleEnd(nonce string, pb *agentv1.SignedEnvelope, snap **staging) *agentv1.StreamRequest {
	cur := *snap
	*snap = nil
	var p agentv1.SnapshotEndPayload
	if _, r := s.verify(pb, SnapshotEndType, &p); r != nil {
		var rev int64
		if cur != nil {
			rev = cur.revision
		}
		return s.refuse(nonce, rev, r.reason, r.detail)
	}
	rev := p.GetRevision()
	if r := s.checkScope("snapshot end", p.GetDataPlaneId(), p.GetExpireTime()); r != nil {
		return s.refuse(nonce, rev, r.reason, r.detail)
	}
	switch {
	case cur == nil:
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED, "snapshot end without a reset")
	case p.GetSnapshotId() != cur.id:
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED,
			fmt.Sprintf("snapshot end of snapshot %q; staging %q", p.GetSnapshotId(), cur.id))
	case p.GetChunks() != cur.next:
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED,
			fmt.Sprintf("snapshot end says %d chunks; got %d", p.GetChunks(), cur.next))
	case rev != cur.revision:
		return s.refuse(nonce, rev, agentv1.NackReason_NACK_REASON_MALFORMED,
			fmt.Sprintf("snapshot end at revision %d; the reset said %d", rev, cur.revision))
	}
	if err := s.cfg.Cache.ReplaceWithSnapshot(s.cfg.DataPlaneID, rev, p.GetStateHash(), cur.docs); err != nil {
		reason := agentv1.NackReason_NACK_REASON_APPLY_FAILED
		if errors.Is(err, cache.ErrMalformed) {
			reason = agentv1.NackReason_NACK_REASON_MALFORMED
		}
		return s.refuse(nonce, rev, reason, err.Error())
	}
	s.applied()
	s.sawHead(rev)
	s.log.Info("config replaced with snapshot", "revision", rev, "documents", len(cur.docs))
	return ack(nonce, rev)
}

// handleTrustBundle installs a trust bundle. It is never answered: it is
// not a signed update, and the connection it came on was verified with the
// bundle the agent held (cairn-agent's installer also refuses a bundle
// that does not verify the agent's own SVID).
func (s *Syncer) handleTrustBundle(b *agentv1.TrustBundle) {
	if s.cfg.TrustBundle == nil {
		s.log.Warn("ignoring a trust bundle the agent did not ask for")
		return
	}
	if err := s.cfg.TrustBundle(b.GetCertificates()); err != nil {
		s.log.Warn("ignoring trust bundle", "error", err)
		return
	}
	s.mu.Lock()
	s.stats.TrustBundles++
	s.mu.Unlock()
}

// handleHeartbeat refreshes freshness if the heartbeat verifies, is for
// this data plane, has not expired, and names the revision and state hash
// the cache holds: a heartbeat for a newer revision means the agent is
// behind, which is what Stale must show. Heartbeats are never answered;
// a refused one is only logged.
func (s *Syncer) handleHeartbeat(pb *agentv1.SignedEnvelope) {
	var p agentv1.HeartbeatPayload
	if _, r := s.verify(pb, HeartbeatType, &p); r != nil {
		s.log.Warn("heartbeat refused", "reason", r.reason.String(), "detail", r.detail)
		return
	}
	if r := s.checkScope("heartbeat", p.GetDataPlaneId(), p.GetExpireTime()); r != nil {
		s.log.Warn("heartbeat refused", "reason", r.reason.String(), "detail", r.detail)
		return
	}
	s.sawHead(p.GetRevision())
	if st := s.cfg.Cache.State(); p.GetRevision() != st.Revision || p.GetStateHash() != st.StateHash {
		s.log.Warn("heartbeat names another state; config is behind", "revision", p.GetRevision(), "applied_revision", st.Revision)
		return
	}
	s.fresh()
}
