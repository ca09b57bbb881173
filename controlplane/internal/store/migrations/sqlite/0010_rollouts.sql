-- Rollouts (docs/fleet.md): the saved plan and each cluster's state.
-- Every transition is a conditional UPDATE (WHERE state = <expected>) in a
-- transaction that also checks the engine's lease, so a replica that lost
-- the lease changes nothing.
CREATE TABLE rollouts (
    id                    TEXT PRIMARY KEY,
    product               TEXT NOT NULL,
    target_version        TEXT NOT NULL,
    -- JSON of the spec as started (query, shape, policy, seed).
    spec                  TEXT NOT NULL,
    state                 TEXT NOT NULL,
    reason                TEXT NOT NULL,
    current_wave          INTEGER NOT NULL,
    global_failure_budget INTEGER NOT NULL,
    -- Failed and unreachable clusters when the rollout was last resumed:
    -- the global budget pauses the rollout only beyond these.
    accepted_failures     INTEGER NOT NULL,
    rollback_of           TEXT NOT NULL,
    rolled_back_by        TEXT NOT NULL,
    created_by            TEXT NOT NULL,
    create_time           TIMESTAMP NOT NULL,
    update_time           TIMESTAMP NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state, id);
CREATE INDEX rollouts_created ON rollouts (create_time, id);

CREATE TABLE rollout_waves (
    rollout_id     TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    concurrency    INTEGER NOT NULL,
    failure_budget INTEGER NOT NULL,
    soak_ms        INTEGER NOT NULL,
    sensitive      BOOLEAN NOT NULL,
    start_time     TIMESTAMP,
    done_time      TIMESTAMP,
    soak_until     TIMESTAMP,
    -- Failed and unreachable clusters of the wave when the rollout was
    -- last resumed: its budget pauses the rollout only beyond these.
    accepted_failures INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, idx)
);

CREATE TABLE rollout_clusters (
    rollout_id       TEXT NOT NULL,
    cluster_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    data_plane_id    TEXT NOT NULL,
    -- -1 for clusters skipped when planning.
    wave             INTEGER NOT NULL,
    position         INTEGER NOT NULL,
    state            TEXT NOT NULL,
    detail           TEXT NOT NULL,
    unreachable      BOOLEAN NOT NULL,
    target_version   TEXT NOT NULL,
    previous_version TEXT NOT NULL,
    state_time       TIMESTAMP NOT NULL,
    deadline         TIMESTAMP,
    dispatch_time    TIMESTAMP,
    -- An eligible cluster waiting for its maintenance window is not looked
    -- at before then.
    not_before       TIMESTAMP,
    PRIMARY KEY (rollout_id, cluster_id)
);
CREATE INDEX rollout_clusters_plan ON rollout_clusters (rollout_id, wave, position);
CREATE INDEX rollout_clusters_state ON rollout_clusters (rollout_id, state, wave, position);

-- One rollout at a time per cluster: a row while a rollout may still
-- dispatch or verify the cluster.
CREATE TABLE rollout_locks (
    cluster_id TEXT PRIMARY KEY,
    rollout_id TEXT NOT NULL
);
CREATE INDEX rollout_locks_rollout ON rollout_locks (rollout_id);

CREATE TABLE exclusions (
    id          TEXT PRIMARY KEY,
    scope_type  TEXT NOT NULL,
    scope_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    expire_time TIMESTAMP NOT NULL,
    created_by  TEXT NOT NULL,
    create_time TIMESTAMP NOT NULL
);
CREATE INDEX exclusions_scope ON exclusions (scope_id, expire_time);

-- Leases elect the replica that runs a singleton job (the rollout engine).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expire_time TIMESTAMP NOT NULL
);

-- When the control plane stored each cluster report (report_time is the
-- agent's clock): the engine compares it with a cluster's dispatch time.
ALTER TABLE cluster_reports ADD COLUMN receive_time TIMESTAMP;
