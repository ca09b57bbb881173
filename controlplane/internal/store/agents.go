package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// JoinToken is a single-use enrollment credential for one data plane.
type JoinToken struct {
	ID          string
	TenantID    string
	DataPlaneID string
	CreateTime  time.Time
	ExpireTime  time.Time
}

// Agent is an enrolled agent identity.
type Agent struct {
	ID             string     `json:"id"`
	TenantID       string     `json:"tenant_id"`
	DataPlaneID    string     `json:"data_plane_id"`
	SPIFFEID       string     `json:"spiffe_id"`
	AgentVersion   string     `json:"agent_version"`
	Hostname       string     `json:"hostname"`
	CreateTime     time.Time  `json:"create_time"`
	SVIDExpireTime time.Time  `json:"svid_expire_time"`
	RevokeTime     *time.Time `json:"revoke_time,omitempty"`
	RevokeReason   string     `json:"revoke_reason"`
	// Sync is the agent's config stream position; nil until it streamed.
	// Read-only: not part of audit digests.
	Sync *AgentSync `json:"-"`
	// Status is the agent's newest status report; nil until it reported.
	// Read-only like Sync.
	Status *AgentStatus `json:"-"`
}

// Enrollment refusals, wrapped with detail.
var (
	// ErrJoinTokenInvalid: unknown, used, expired, or its data plane is
	// gone. One error for all, so a caller learns nothing about which.
	ErrJoinTokenInvalid = fmt.Errorf("join token is invalid, used or expired: %w", ErrFailedPrecondition)
)

const agentCols = `t.id, t.tenant_id, t.data_plane_id, t.spiffe_id, t.agent_version, t.hostname,
	t.create_time, t.svid_expire_time, t.revoke_time, t.revoke_reason`

func scanAgent(r row) (Agent, error) {
	var a Agent
	if err := r.Scan(&a.ID, &a.TenantID, &a.DataPlaneID, &a.SPIFFEID, &a.AgentVersion, &a.Hostname,
		&a.CreateTime, &a.SVIDExpireTime, &a.RevokeTime, &a.RevokeReason); err != nil {
		return Agent{}, err
	}
	a.CreateTime, a.SVIDExpireTime = utc(a.CreateTime), utc(a.SVIDExpireTime)
	if a.RevokeTime != nil {
		*a.RevokeTime = utc(*a.RevokeTime)
	}
	return a, nil
}

// CreateJoinToken stores a join token (ID and secret hash made by the
// caller) for an existing, visible data plane.
func (s *Store) CreateJoinToken(ctx context.Context, a Actor, visible, dataPlaneID, id string, secretHash []byte, ttl time.Duration) (JoinToken, error) {
	now := s.now()
	jt := JoinToken{ID: id, DataPlaneID: dataPlaneID, CreateTime: now, ExpireTime: now.Add(ttl).Truncate(time.Microsecond)}
	err := s.inTx(ctx, func(q querier) error {
		dp, err := getDataPlane(ctx, q, visible, dataPlaneID)
		if err != nil {
			return err
		}
		jt.TenantID = dp.TenantID
		if _, err := q.exec(ctx, `INSERT INTO join_tokens (id, tenant_id, data_plane_id, secret_hash, create_time, expire_time)
			VALUES ($1, $2, $3, $4, $5, $6)`, jt.ID, jt.TenantID, jt.DataPlaneID, secretHash, jt.CreateTime, jt.ExpireTime); err != nil {
			return err
		}
		// The digest covers the token's metadata only, never its hash.
		return s.audit(ctx, q, a, "join_token.create", "join_token", jt.ID, jt.TenantID, nil, jt)
	})
	if err != nil {
		return JoinToken{}, fmt.Errorf("create join token: %w", err)
	}
	return jt, nil
}

// Enrollment is what EnrollAgent needs to register an agent.
type Enrollment struct {
	// Actor carries the request id; the enrolled agent becomes the actor
	// of the audit event.
	Actor       Actor
	JoinTokenID string
	// CheckSecret reports whether the presented secret matches the stored
	// hash (constant time, done by the caller who holds the secret).
	CheckSecret func(hash []byte) bool
	AgentID     string
	// SPIFFEID builds the agent's SPIFFE ID once its tenant and data plane
	// are known.
	SPIFFEID       func(tenantID, dataPlaneID string) (string, error)
	AgentVersion   string
	Hostname       string
	SVIDExpireTime time.Time
	// Issue signs the agent's SVID; it runs inside the transaction, so a
	// token whose enrollment fails is not consumed. It may run more than
	// once on retries.
	Issue func(spiffeID string) error
}

// EnrollAgent consumes a join token and registers the agent, atomically:
// of any number of concurrent enrollments with one token, exactly one
// succeeds. Every refusal returns ErrJoinTokenInvalid and is audited.
func (s *Store) EnrollAgent(ctx context.Context, e Enrollment) (Agent, error) {
	var out Agent
	refuse := func(reason string) error { return fmt.Errorf("%s: %w", reason, ErrJoinTokenInvalid) }
	err := s.inTx(ctx, func(q querier) error {
		now := s.now()
		var jt JoinToken
		var hash []byte
		var used *time.Time
		err := q.queryRow(ctx, `SELECT id, tenant_id, data_plane_id, secret_hash, expire_time, used_time FROM join_tokens WHERE id = $1`,
			e.JoinTokenID).Scan(&jt.ID, &jt.TenantID, &jt.DataPlaneID, &hash, &jt.ExpireTime, &used)
		switch {
		case isNoRows(err):
			return refuse("unknown join token")
		case err != nil:
			return err
		case !e.CheckSecret(hash):
			return refuse("wrong join token secret")
		case used != nil:
			return refuse("join token already used")
		case !now.Before(jt.ExpireTime):
			return refuse("join token expired")
		}
		if _, err := getDataPlane(ctx, q, "", jt.DataPlaneID); err != nil {
			return refuse("data plane of join token is gone")
		}
		id, err := e.SPIFFEID(jt.TenantID, jt.DataPlaneID)
		if err != nil {
			return err
		}
		if err := e.Issue(id); err != nil {
			return err
		}
		n, err := q.exec(ctx, `UPDATE join_tokens SET used_time = $2, agent_id = $3 WHERE id = $1 AND used_time IS NULL`, jt.ID, now, e.AgentID)
		if err != nil {
			return err
		}
		if n != 1 {
			return refuse("join token already used")
		}
		out = Agent{ID: e.AgentID, TenantID: jt.TenantID, DataPlaneID: jt.DataPlaneID, SPIFFEID: id,
			AgentVersion: e.AgentVersion, Hostname: e.Hostname, CreateTime: now, SVIDExpireTime: e.SVIDExpireTime.UTC().Truncate(time.Microsecond)}
		if _, err := q.exec(ctx, `INSERT INTO agents (id, tenant_id, data_plane_id, spiffe_id, agent_version, hostname,
			create_time, svid_expire_time, revoke_time, revoke_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, '')`,
			out.ID, out.TenantID, out.DataPlaneID, out.SPIFFEID, out.AgentVersion, out.Hostname, out.CreateTime, out.SVIDExpireTime); err != nil {
			return err
		}
		return s.audit(ctx, q, Actor{ID: "agent:" + out.ID}, "agent.enroll", "agent", out.ID, out.TenantID, nil, out)
	})
	if err != nil {
		if errors.Is(err, ErrJoinTokenInvalid) {
			s.AuditRefusal(ctx, Actor{ID: "anonymous", RequestID: e.Actor.RequestID}, "agent.enroll.refused", "join_token", e.JoinTokenID, "", err.Error())
		}
		return Agent{}, fmt.Errorf("enroll agent: %w", err)
	}
	return out, nil
}

// AuditRefusal records a refused attempt in a transaction of its own: the
// refused mutation wrote nothing, but the attempt leaves a trace. detail
// says why; it must hold no secret. Failing to write it is logged, not
// returned, since the caller is already answering with the refusal.
func (s *Store) AuditRefusal(ctx context.Context, a Actor, action, resourceType, resourceID, tenantID, detail string) {
	// The refused caller may be gone already: the event is written anyway.
	ctx = context.WithoutCancel(ctx)
	err := s.inTx(ctx, func(q querier) error {
		return s.auditDetail(ctx, q, a, action, resourceType, resourceID, tenantID, nil, nil, detail)
	})
	if err != nil {
		s.log.Error("write refusal audit event", "action", action, "error", err)
	}
}

func getAgent(ctx context.Context, q querier, visible, id string) (Agent, error) {
	if !isValidID(id) {
		return Agent{}, fmt.Errorf("agent %q: %w", id, ErrNotFound)
	}
	a, err := scanAgent(q.queryRow(ctx, `SELECT `+agentCols+` FROM agents t WHERE t.id = $1`, id))
	if isNoRows(err) || (err == nil && visible != "" && a.TenantID != visible) {
		return Agent{}, fmt.Errorf("agent %q: %w", id, ErrNotFound)
	}
	return a, err
}

// agentSyncFrom joins each agent with its stream position, if any.
const agentSyncFrom = `FROM agents t LEFT JOIN agent_sync s ON s.agent_id = t.id LEFT JOIN agent_status r ON r.agent_id = t.id`

const agentSyncCols = agentCols + `, s.last_sent_revision, s.last_applied_revision, s.last_nack_revision,
	s.last_nack_reason, s.last_nack_detail, s.last_seen, s.epoch, r.seq, r.applied_revision, r.state_hash, r.agent_version,
	r.host_version, r.product_version, r.checks, r.last_error, r.stale, r.dropped_reports, r.report_time, r.receive_time`

func scanAgentWithSync(r row) (Agent, error) {
	var a Agent
	var sent, applied, nackRev *int64
	var reason, detail, epoch *string
	var seen *time.Time
	var st struct {
		seq, applied, dropped                                            *int64
		stateHash, agentVersion, hostVersion, productVersion, checks, le *string
		stale                                                            *bool
		reportTime, receiveTime                                          *time.Time
	}
	if err := r.Scan(&a.ID, &a.TenantID, &a.DataPlaneID, &a.SPIFFEID, &a.AgentVersion, &a.Hostname,
		&a.CreateTime, &a.SVIDExpireTime, &a.RevokeTime, &a.RevokeReason,
		&sent, &applied, &nackRev, &reason, &detail, &seen, &epoch,
		&st.seq, &st.applied, &st.stateHash, &st.agentVersion, &st.hostVersion, &st.productVersion, &st.checks,
		&st.le, &st.stale, &st.dropped, &st.reportTime, &st.receiveTime); err != nil {
		return Agent{}, err
	}
	if st.seq != nil {
		a.Status = &AgentStatus{AgentID: a.ID, DataPlaneID: a.DataPlaneID, Seq: *st.seq, AppliedRevision: *st.applied,
			StateHash: *st.stateHash, AgentVersion: *st.agentVersion, HostVersion: *st.hostVersion,
			ProductVersion: *st.productVersion, LastError: *st.le, Stale: *st.stale, DroppedReports: *st.dropped,
			ReportTime: utc(*st.reportTime), ReceiveTime: utc(*st.receiveTime)}
		if err := json.Unmarshal([]byte(*st.checks), &a.Status.Checks); err != nil {
			return Agent{}, fmt.Errorf("decode checks: %w", err)
		}
	}
	a.CreateTime, a.SVIDExpireTime = utc(a.CreateTime), utc(a.SVIDExpireTime)
	if a.RevokeTime != nil {
		*a.RevokeTime = utc(*a.RevokeTime)
	}
	if sent != nil {
		a.Sync = &AgentSync{AgentID: a.ID, DataPlaneID: a.DataPlaneID, LastSentRevision: *sent, LastAppliedRevision: *applied,
			LastNackRevision: *nackRev, LastNackReason: *reason, LastNackDetail: *detail, LastSeen: utc(*seen), Epoch: *epoch}
	}
	return a, nil
}

// GetAgent returns one agent with its stream position.
func (s *Store) GetAgent(ctx context.Context, visible, id string) (Agent, error) {
	if !isValidID(id) {
		return Agent{}, fmt.Errorf("get agent: agent %q: %w", id, ErrNotFound)
	}
	var a Agent
	err := s.b.read(ctx, func(q querier) (err error) {
		a, err = scanAgentWithSync(q.queryRow(ctx, `SELECT `+agentSyncCols+` `+agentSyncFrom+` WHERE t.id = $1`, id))
		return err
	})
	if isNoRows(err) || (err == nil && visible != "" && a.TenantID != visible) {
		return Agent{}, fmt.Errorf("get agent: agent %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("get agent: %w", err)
	}
	return a, nil
}

// AgentFilter narrows ListAgents beyond Filter: the fleet questions.
type AgentFilter struct {
	// DataPlaneID keeps one data plane's agents.
	DataPlaneID string
	// BehindRevision keeps agents that have not applied it (or never
	// streamed); 0 means no filter.
	BehindRevision int64
	// WithNack keeps agents whose newest refusal is past what they applied.
	WithNack bool
	// NotSeenSince keeps agents not seen on a stream since then (or never);
	// zero means no filter.
	NotSeenSince time.Time
	// ActiveOnly leaves out revoked agents.
	ActiveOnly bool
	// UnhealthyOnly keeps agents whose newest status is stale or has a
	// failing check.
	UnhealthyOnly bool
}

// ListAgents returns one page of agents with their stream positions.
func (s *Store) ListAgents(ctx context.Context, f Filter, af AgentFilter, p Page) ([]Agent, string, error) {
	var w where
	w.filter(Filter{Visible: f.Visible, TenantID: f.TenantID})
	if af.DataPlaneID != "" {
		w.add("t.data_plane_id = " + w.arg(af.DataPlaneID))
	}
	if af.BehindRevision > 0 {
		w.add("(s.agent_id IS NULL OR s.last_applied_revision < " + w.arg(af.BehindRevision) + ")")
	}
	if af.WithNack {
		w.add("s.last_nack_revision > s.last_applied_revision")
	}
	if !af.NotSeenSince.IsZero() {
		w.add("(s.agent_id IS NULL OR s.last_seen < " + w.arg(af.NotSeenSince.UTC()) + ")")
	}
	if af.ActiveOnly {
		w.add("t.revoke_time IS NULL")
	}
	if af.UnhealthyOnly {
		w.add("(r.stale = TRUE OR r.failing_checks > 0)")
	}
	var out []Agent
	var next string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, next, err = list(ctx, q, agentSyncCols, agentSyncFrom, &w, p, scanAgentWithSync, func(a Agent) string { return a.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list agents: %w", err)
	}
	return out, next, nil
}

// RevokeAgent revokes an agent; revoking twice keeps the first time and
// reason.
func (s *Store) RevokeAgent(ctx context.Context, a Actor, visible, id, reason string) (Agent, error) {
	var out Agent
	err := s.inTx(ctx, func(q querier) error {
		old, err := getAgent(ctx, q, visible, id)
		if err != nil {
			return err
		}
		out = old
		if old.RevokeTime != nil {
			return nil
		}
		return s.revokeAgent(ctx, q, a, &out, reason)
	})
	if err != nil {
		return Agent{}, fmt.Errorf("revoke agent: %w", err)
	}
	return out, nil
}

func (s *Store) revokeAgent(ctx context.Context, q querier, a Actor, ag *Agent, reason string) error {
	old := *ag
	now := s.now()
	ag.RevokeTime, ag.RevokeReason = &now, reason
	if _, err := q.exec(ctx, `UPDATE agents SET revoke_time = $2, revoke_reason = $3 WHERE id = $1`, ag.ID, now, reason); err != nil {
		return err
	}
	return s.audit(ctx, q, a, "agent.revoke", "agent", ag.ID, ag.TenantID, old, *ag)
}

// revokeDataPlaneAgents revokes every agent of a data plane and deletes
// its unused join tokens; DeleteDataPlane calls it in its transaction.
func (s *Store) revokeDataPlaneAgents(ctx context.Context, q querier, a Actor, dataPlaneID string) error {
	agents, err := queryAll(ctx, q, scanAgent, `SELECT `+agentCols+` FROM agents t WHERE t.data_plane_id = $1 AND t.revoke_time IS NULL`, dataPlaneID)
	if err != nil {
		return err
	}
	for i := range agents {
		if err := s.revokeAgent(ctx, q, a, &agents[i], "data plane deleted"); err != nil {
			return err
		}
	}
	_, err = q.exec(ctx, `DELETE FROM join_tokens WHERE data_plane_id = $1`, dataPlaneID)
	return err
}

// RenewAgent records a newly issued SVID's expiry for a registered,
// unrevoked agent; Issue runs inside the transaction, so a revoked agent
// never gets a certificate.
func (s *Store) RenewAgent(ctx context.Context, id string, issue func(Agent) (time.Time, error)) (Agent, error) {
	var out Agent
	err := s.inTx(ctx, func(q querier) error {
		ag, err := getAgent(ctx, q, "", id)
		if err != nil {
			return err
		}
		if ag.RevokeTime != nil {
			return fmt.Errorf("agent %q is revoked: %w", id, ErrFailedPrecondition)
		}
		exp, err := issue(ag)
		if err != nil {
			return err
		}
		ag.SVIDExpireTime = exp.UTC().Truncate(time.Microsecond)
		if _, err := q.exec(ctx, `UPDATE agents SET svid_expire_time = $2 WHERE id = $1`, id, ag.SVIDExpireTime); err != nil {
			return err
		}
		out = ag
		return nil
	})
	if err != nil {
		return Agent{}, fmt.Errorf("renew agent: %w", err)
	}
	return out, nil
}

// RevokedSince returns the ids of agents revoked at or after since, for
// replicas that must close those agents' streams.
func (s *Store) RevokedSince(ctx context.Context, since time.Time) ([]string, error) {
	var ids []string
	err := s.b.read(ctx, func(q querier) (err error) {
		ids, err = queryAll(ctx, q, scanString, `SELECT id FROM agents WHERE revoke_time >= $1`, since.UTC())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoked agents: %w", err)
	}
	return ids, nil
}

// RegisterExternalAgent returns the agent a.ID, registering it on first
// contact: for agents whose identity comes from outside Cairn (SPIRE),
// mapped to a data plane by configuration. The data plane must exist and
// belong to a.TenantID (ErrNotFound otherwise); an agent registered
// earlier under another tenant or data plane is refused with
// ErrFailedPrecondition, since its mapping changed.
func (s *Store) RegisterExternalAgent(ctx context.Context, a Agent) (Agent, error) {
	var out Agent
	check := func(got Agent) error {
		if got.TenantID != a.TenantID || got.DataPlaneID != a.DataPlaneID || got.SPIFFEID != a.SPIFFEID {
			return fmt.Errorf("registered for data plane %s, now mapped to %s: revoke it first: %w", got.DataPlaneID, a.DataPlaneID, ErrFailedPrecondition)
		}
		out = got
		return nil
	}
	got, err := s.GetAgent(ctx, "", a.ID)
	if err == nil {
		return out, check(got)
	}
	if !errors.Is(err, ErrNotFound) {
		return Agent{}, err
	}
	err = s.inTx(ctx, func(q querier) error {
		if got, err := getAgent(ctx, q, "", a.ID); err == nil {
			return check(got) // registered concurrently
		}
		if _, err := getDataPlane(ctx, q, a.TenantID, a.DataPlaneID); err != nil {
			return err
		}
		now := s.now()
		out = Agent{ID: a.ID, TenantID: a.TenantID, DataPlaneID: a.DataPlaneID, SPIFFEID: a.SPIFFEID,
			AgentVersion: a.AgentVersion, Hostname: a.Hostname, CreateTime: now, SVIDExpireTime: now}
		if _, err := q.exec(ctx, `INSERT INTO agents (id, tenant_id, data_plane_id, spiffe_id, agent_version, hostname,
			create_time, svid_expire_time, revoke_time, revoke_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, '')`,
			out.ID, out.TenantID, out.DataPlaneID, out.SPIFFEID, out.AgentVersion, out.Hostname, out.CreateTime, out.SVIDExpireTime); err != nil {
			return err
		}
		return s.audit(ctx, q, Actor{ID: "agent:" + out.ID}, "agent.register", "agent", out.ID, out.TenantID, nil, out)
	})
	if err != nil {
		return Agent{}, fmt.Errorf("register external agent: %w", err)
	}
	return out, nil
}

// RevokedAmong returns which of the given agents are revoked. Replicas use
// it to recheck the agents they hold streams for, whatever the clocks of
// the replicas that revoked them said.
func (s *Store) RevokedAmong(ctx context.Context, ids []string) ([]string, error) {
	var out []string
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		var valid []string
		for _, id := range chunk {
			if isValidID(id) {
				valid = append(valid, id)
			}
		}
		if len(valid) == 0 {
			continue
		}
		var w where
		w.add("revoke_time IS NOT NULL")
		w.add(in(&w, "id", valid))
		err := s.b.read(ctx, func(q querier) error {
			ids, err := queryAll(ctx, q, scanString, `SELECT id FROM agents`+w.String(), w.args...)
			out = append(out, ids...)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("revoked agents: %w", err)
		}
	}
	return out, nil
}
