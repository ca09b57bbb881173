-- Agent identity: join tokens and enrolled agents. No foreign keys to
-- data_planes: deleting a data plane revokes its agents, and their records
-- stay for the audit trail.

CREATE TABLE join_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    data_plane_id TEXT NOT NULL,
    secret_hash   BLOB NOT NULL,
    create_time   TIMESTAMP NOT NULL,
    expire_time   TIMESTAMP NOT NULL,
    used_time     TIMESTAMP,
    agent_id      TEXT
);
CREATE INDEX join_tokens_data_plane ON join_tokens (data_plane_id);

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    data_plane_id    TEXT NOT NULL,
    spiffe_id        TEXT NOT NULL UNIQUE,
    agent_version    TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    create_time      TIMESTAMP NOT NULL,
    svid_expire_time TIMESTAMP NOT NULL,
    revoke_time      TIMESTAMP,
    revoke_reason    TEXT NOT NULL
);
CREATE INDEX agents_tenant ON agents (tenant_id, id);
CREATE INDEX agents_data_plane ON agents (data_plane_id, id);
CREATE INDEX agents_revoke_time ON agents (revoke_time);

-- Why an attempt was refused (refusals are audited too).
ALTER TABLE audit_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
