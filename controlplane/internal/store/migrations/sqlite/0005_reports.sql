-- Agents' status and metric reports. agent_report_queues holds, per agent,
-- the newest report sequence number stored from its queue: written in the
-- same transaction as the reports, it makes redelivery harmless.
CREATE TABLE agent_report_queues (
    agent_id    TEXT PRIMARY KEY,
    queue_id    TEXT NOT NULL,
    last_seq    INTEGER NOT NULL,
    update_time TIMESTAMP NOT NULL
);

-- The newest status of each agent.
CREATE TABLE agent_status (
    agent_id         TEXT PRIMARY KEY,
    data_plane_id    TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    applied_revision INTEGER NOT NULL,
    state_hash       TEXT NOT NULL,
    agent_version    TEXT NOT NULL,
    host_version     TEXT NOT NULL,
    product_version  TEXT NOT NULL,
    checks           TEXT NOT NULL,
    failing_checks   INTEGER NOT NULL,
    last_error       TEXT NOT NULL,
    stale            BOOLEAN NOT NULL,
    dropped_reports  INTEGER NOT NULL,
    report_time      TIMESTAMP NOT NULL,
    receive_time     TIMESTAMP NOT NULL
);

-- Recent metric points, kept for the metrics retention. The key leads
-- with the agent so that inserts from many agents spread over ranges on
-- CockroachDB; id is a time-ordered UUID (v7), so a key scan per agent
-- reads points in arrival order.
CREATE TABLE agent_metric_points (
    agent_id     TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    labels       TEXT NOT NULL,
    value        REAL NOT NULL,
    source       TEXT NOT NULL,
    point_time   TIMESTAMP NOT NULL,
    receive_time TIMESTAMP NOT NULL,
    PRIMARY KEY (agent_id, id)
);
CREATE INDEX agent_metric_points_name ON agent_metric_points (agent_id, name, id);
CREATE INDEX agent_metric_points_receive ON agent_metric_points (receive_time);
