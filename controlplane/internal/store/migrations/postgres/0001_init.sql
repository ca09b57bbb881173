-- Cairn schema v1 for PostgreSQL and CockroachDB. Keep it valid on both:
-- UUID keys from the application, no sequences or SERIAL.

CREATE TABLE tenants (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    labels       TEXT NOT NULL,
    etag         TEXT NOT NULL,
    create_time  TIMESTAMPTZ NOT NULL,
    update_time  TIMESTAMPTZ NOT NULL
);

CREATE TABLE data_planes (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    cloud       INT NOT NULL,
    labels      TEXT NOT NULL,
    etag        TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE clusters (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL REFERENCES tenants (id),
    data_plane_id    UUID NOT NULL REFERENCES data_planes (id),
    name             TEXT NOT NULL,
    labels           TEXT NOT NULL,
    properties       TEXT NOT NULL,
    desired_version  TEXT NOT NULL,
    reported_version TEXT NOT NULL,
    host_version     TEXT NOT NULL,
    etag             TEXT NOT NULL,
    create_time      TIMESTAMPTZ NOT NULL,
    update_time      TIMESTAMPTZ NOT NULL,
    UNIQUE (data_plane_id, name)
);
CREATE INDEX clusters_tenant ON clusters (tenant_id, id);

-- scope_id is the data plane or cluster the document applies to;
-- data_plane_id is the data plane whose agents receive it.
CREATE TABLE config_documents (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id),
    data_plane_id UUID NOT NULL REFERENCES data_planes (id),
    scope_type    TEXT NOT NULL,
    scope_id      UUID NOT NULL,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    content       BYTEA NOT NULL,
    media_type    TEXT NOT NULL,
    structured    BOOLEAN NOT NULL,
    labels        TEXT NOT NULL,
    version       BIGINT NOT NULL,
    etag          TEXT NOT NULL,
    create_time   TIMESTAMPTZ NOT NULL,
    update_time   TIMESTAMPTZ NOT NULL,
    UNIQUE (scope_id, kind, name)
);
CREATE INDEX config_documents_tenant ON config_documents (tenant_id, id);
CREATE INDEX config_documents_data_plane ON config_documents (data_plane_id, id);

-- labels indexes the labels of every labelled object for selector queries.
-- object ids are UUIDs, unique across kinds.
CREATE TABLE labels (
    object_id UUID NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (object_id, key)
);
CREATE INDEX labels_key_value ON labels (key, value, object_id);

-- The audit log outlives what it describes: no foreign keys.
CREATE TABLE audit_events (
    id            UUID PRIMARY KEY,
    time          TIMESTAMPTZ NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    old_digest    TEXT NOT NULL,
    new_digest    TEXT NOT NULL,
    request_id    TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time, id);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, time, id);
CREATE INDEX audit_events_resource ON audit_events (resource_id, time, id);

CREATE TABLE api_tokens (
    id          UUID PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    role        INT NOT NULL,
    description TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    expire_time TIMESTAMPTZ,
    revoke_time TIMESTAMPTZ
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, id);
