-- The config revision log: each data plane has a gapless revision number,
-- and every config document change appends one entry in the change's own
-- transaction (outbox). data_plane_heads holds the latest revision and
-- state hash; updating it first serializes writers of one data plane.

CREATE TABLE data_plane_heads (
    data_plane_id     TEXT PRIMARY KEY,
    revision          INTEGER NOT NULL,
    state_hash        TEXT NOT NULL,
    -- Entries at or below this revision have been compacted away.
    compacted_through INTEGER NOT NULL,
    update_time       TIMESTAMP NOT NULL
);
CREATE INDEX data_plane_heads_update_time ON data_plane_heads (update_time);

CREATE TABLE config_revisions (
    data_plane_id   TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    op              TEXT NOT NULL,
    document_id     TEXT NOT NULL,
    scope_type      TEXT NOT NULL,
    scope_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    version         INTEGER NOT NULL,
    content         BLOB NOT NULL,
    media_type      TEXT NOT NULL,
    structured      BOOLEAN NOT NULL,
    labels          TEXT NOT NULL,
    prev_state_hash TEXT NOT NULL,
    state_hash      TEXT NOT NULL,
    commit_time     TIMESTAMP NOT NULL,
    PRIMARY KEY (data_plane_id, revision)
);
CREATE INDEX config_revisions_commit_time ON config_revisions (commit_time);

-- Data planes created before this migration start at revision 0; their
-- state hash is left empty here (SQLite cannot compute it) and filled in
-- by the store when it opens.
INSERT INTO data_plane_heads (data_plane_id, revision, state_hash, compacted_through, update_time)
SELECT id, 0, '', 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM data_planes;
