package store

import (
	"context"
	"fmt"
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
	a.LastSeen = s.now()
	err := s.inTx(ctx, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO agent_sync (agent_id, data_plane_id, epoch, last_sent_revision, last_applied_revision,
			last_nack_revision, last_nack_reason, last_nack_detail, last_seen) VALUES ($1, $2, $3, $4, $5, 0, '', '', $6)
			ON CONFLICT (agent_id) DO UPDATE SET data_plane_id = excluded.data_plane_id, epoch = excluded.epoch,
			last_sent_revision = excluded.last_sent_revision, last_applied_revision = excluded.last_applied_revision,
			last_seen = excluded.last_seen`,
			a.AgentID, a.DataPlaneID, a.Epoch, a.LastSentRevision, a.LastAppliedRevision, a.LastSeen)
		return err
	})
	if err != nil {
		return fmt.Errorf("put agent sync: %w", err)
	}
	return nil
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
