-- Agent identity: join tokens and enrolled agents. No foreign keys to
-- data_planes: deleting a data plane revokes its agents, and their records
-- stay for the audit trail.

CREATE TABLE join_tokens (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    data_plane_id UUID NOT NULL,
    secret_hash   BYTEA NOT NULL,
    create_time   TIMESTAMPTZ NOT NULL,
    expire_time   TIMESTAMPTZ NOT NULL,
    used_time     TIMESTAMPTZ,
    agent_id      UUID
);
CREATE INDEX join_tokens_data_plane ON join_tokens (data_plane_id);

CREATE TABLE agents (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL,
    data_plane_id    UUID NOT NULL,
    spiffe_id        TEXT NOT NULL UNIQUE,
    agent_version    TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    create_time      TIMESTAMPTZ NOT NULL,
    svid_expire_time TIMESTAMPTZ NOT NULL,
    revoke_time      TIMESTAMPTZ,
    revoke_reason    TEXT NOT NULL
);
CREATE INDEX agents_tenant ON agents (tenant_id, id);
CREATE INDEX agents_data_plane ON agents (data_plane_id, id);
CREATE INDEX agents_revoke_time ON agents (revoke_time);

-- Why an attempt was refused (refusals are audited too).
ALTER TABLE audit_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
