-- What each cluster runs as its agent's upgrade hook last left it: the
-- version (also copied to clusters.reported_version), whether the last
-- attempt to reach the desired version failed, and why.
CREATE TABLE cluster_reports (
    cluster_id      UUID PRIMARY KEY,
    agent_id        UUID NOT NULL,
    version         TEXT NOT NULL,
    desired_version TEXT NOT NULL,
    healthy         BOOLEAN NOT NULL,
    detail          TEXT NOT NULL,
    report_time     TIMESTAMPTZ NOT NULL
);
