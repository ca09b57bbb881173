package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// AgentSync is where an agent's config stream stands.
type AgentSync struct {
	AgentID             string
	DataPlaneID         string
	Epoch               string
	LastSentRevision    int64
	LastAppliedRevision int64
	// LastNack* describe the newest refused update; revision 0 means none.
	LastNackRevision int64
	LastNackReason   string
	LastNackDetail   string
	LastSeen         time.Time
}

// PutAgentSync records an agent's stream position (data plane, epoch,
// sent and applied revisions); it leaves the NACK fields alone, so that
// streams of one agent recording at once cannot erase a NACK.
func (s *Store) PutAgentSync(ctx context.Context, a AgentSync) error {
	return s.PutAgentSyncs(ctx, []AgentSync{a})
}

// PutAgentSyncs records many agents' stream positions as PutAgentSync
// does, all in one transaction: a config change moves a whole fleet's
// positions at once, and a transaction for each agent's position queues
// thousands of transactions on the database. Of several positions of one
// agent in recs, the last is written. An empty recs writes nothing.
func (s *Store) PutAgentSyncs(ctx context.Context, recs []AgentSync) error {
	if len(recs) == 0 {
		return nil
	}
	recs = lastPerAgent(recs)
	n := len(recs)
	agents, dataPlanes := make([]string, n), make([]string, n)
	epochs, noText := make([]string, n), make([]string, n)
	sent, applied, noRevision := make([]int64, n), make([]int64, n), make([]int64, n)
	seen := make([]time.Time, n)
	now := s.now()
	for i, a := range recs {
		agents[i], dataPlanes[i], epochs[i], sent[i], applied[i], seen[i] = a.AgentID, a.DataPlaneID, a.Epoch,
			a.LastSentRevision, a.LastAppliedRevision, now
	}
	agentIDs, err := uuids("agent id", agents)
	if err != nil {
		return fmt.Errorf("put agent syncs: %w", err)
	}
	dataPlaneIDs, err := uuids("data plane id", dataPlanes)
	if err != nil {
		return fmt.Errorf("put agent syncs: %w", err)
	}
	arrays := s.b.name() != "sqlite"
	err = s.inTx(ctx, func(q querier) error {
		// The NACK columns are only for a new row; an update leaves them.
		return insertRows(ctx, q, arrays, `INSERT INTO agent_sync (agent_id, data_plane_id, epoch, last_sent_revision,
			last_applied_revision, last_nack_revision, last_nack_reason, last_nack_detail, last_seen)`,
			`ON CONFLICT (agent_id) DO UPDATE SET data_plane_id = excluded.data_plane_id, epoch = excluded.epoch,
			last_sent_revision = excluded.last_sent_revision, last_applied_revision = excluded.last_applied_revision,
			last_seen = excluded.last_seen`,
			agentIDs, dataPlaneIDs, column[string]{"TEXT", epochs}, column[int64]{"INT8", sent}, column[int64]{"INT8", applied},
			column[int64]{"INT8", noRevision}, column[string]{"TEXT", noText}, column[string]{"TEXT", noText},
			column[time.Time]{"TIMESTAMPTZ", seen})
	})
	if err != nil {
		return fmt.Errorf("put agent syncs: %w", err)
	}
	return nil
}

// lastPerAgent returns the last of recs' records of each agent, sorted by
// agent ID. One statement may not update a row twice (PostgreSQL refuses
// it), and a fixed order makes concurrent batches lock rows in the same
// order instead of deadlocking.
func lastPerAgent(recs []AgentSync) []AgentSync {
	last := make(map[string]int, len(recs))
	for i, a := range recs {
		last[a.AgentID] = i
	}
	out := make([]AgentSync, 0, len(last))
	for i, a := range recs {
		if last[a.AgentID] == i {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b AgentSync) int { return strings.Compare(a.AgentID, b.AgentID) })
	return out
}

// RecordNack records the newest update an agent refused.
func (s *Store) RecordNack(ctx context.Context, agentID, dataPlaneID string, revision int64, reason, detail string) error {
	now := s.now()
	err := s.inTx(ctx, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO agent_sync (agent_id, data_plane_id, epoch, last_sent_revision, last_applied_revision,
			last_nack_revision, last_nack_reason, last_nack_detail, last_seen) VALUES ($1, $2, '', 0, 0, $3, $4, $5, $6)
			ON CONFLICT (agent_id) DO UPDATE SET last_nack_revision = excluded.last_nack_revision,
			last_nack_reason = excluded.last_nack_reason, last_nack_detail = excluded.last_nack_detail, last_seen = excluded.last_seen`,
			agentID, dataPlaneID, revision, reason, detail, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("record nack: %w", err)
	}
	return nil
}

// GetAgentSync returns an agent's stream position; ErrNotFound when it has
// never streamed.
func (s *Store) GetAgentSync(ctx context.Context, agentID string) (AgentSync, error) {
	if !isValidID(agentID) {
		return AgentSync{}, fmt.Errorf("agent sync %q: %w", agentID, ErrNotFound)
	}
	var a AgentSync
	err := s.b.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT agent_id, data_plane_id, epoch, last_sent_revision, last_applied_revision,
			last_nack_revision, last_nack_reason, last_nack_detail, last_seen FROM agent_sync WHERE agent_id = $1`, agentID).
			Scan(&a.AgentID, &a.DataPlaneID, &a.Epoch, &a.LastSentRevision, &a.LastAppliedRevision,
				&a.LastNackRevision, &a.LastNackReason, &a.LastNackDetail, &a.LastSeen)
	})
	if isNoRows(err) {
		return AgentSync{}, fmt.Errorf("agent sync %q: %w", agentID, ErrNotFound)
	}
	if err != nil {
		return AgentSync{}, fmt.Errorf("get agent sync: %w", err)
	}
	a.LastSeen = utc(a.LastSeen)
	return a, nil
}
