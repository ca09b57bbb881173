-- What each agent was sent, applied and refused, for the admin API's
-- fleet questions (agents behind revision X, agents with a NACK).
CREATE TABLE agent_sync (
    agent_id              TEXT PRIMARY KEY,
    data_plane_id         TEXT NOT NULL,
    epoch                 TEXT NOT NULL,
    last_sent_revision    INTEGER NOT NULL,
    last_applied_revision INTEGER NOT NULL,
    last_nack_revision    INTEGER NOT NULL,
    last_nack_reason      TEXT NOT NULL,
    last_nack_detail      TEXT NOT NULL,
    last_seen             TIMESTAMP NOT NULL
);
CREATE INDEX agent_sync_data_plane ON agent_sync (data_plane_id, last_applied_revision);
