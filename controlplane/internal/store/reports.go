package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// AgentStatus is the newest status an agent reported.
type AgentStatus struct {
	AgentID         string
	DataPlaneID     string
	Seq             int64
	AppliedRevision int64
	StateHash       string
	AgentVersion    string
	HostVersion     string
	ProductVersion  string
	Checks          []Check
	LastError       string
	Stale           bool
	DroppedReports  int64
	// ReportTime is the agent's clock; ReceiveTime the control plane's.
	ReportTime  time.Time
	ReceiveTime time.Time
	// Clusters is what the agent's upgrade hook left each cluster at.
	// Stored per cluster (ClusterReport), not with the status.
	Clusters []ClusterReport
}

// ClusterReport is one cluster's product version as its agent reported.
type ClusterReport struct {
	ClusterID      string
	AgentID        string
	Version        string
	DesiredVersion string
	Healthy        bool
	Detail         string
	ReportTime     time.Time
}

// Check is one local health check result.
type Check struct {
	Name    string `json:"name"`
	Healthy bool   `json:"healthy"`
	Detail  string `json:"detail,omitempty"`
}

// MetricPoint is one reported sample.
type MetricPoint struct {
	AgentID     string
	Name        string
	Labels      map[string]string
	Value       float64
	Source      string
	Time        time.Time
	ReceiveTime time.Time
	// ID orders points of an agent by arrival; the page token.
	ID string
}

// Report is one queued report of an agent: a status or a batch of points.
type Report struct {
	Seq     int64
	Status  *AgentStatus
	Metrics []MetricPoint
}

// Reports is a batch from one agent's queue, in increasing Seq order.
type Reports struct {
	AgentID     string
	DataPlaneID string
	QueueID     string
	Items       []Report
}

// IngestReports stores the reports of a batch that are newer than the
// newest stored from the same queue, and returns the newest sequence
// number now stored. The sequence number moves in the same transaction as
// the reports, so a batch delivered twice is stored once. A new QueueID
// starts over.
func (s *Store) IngestReports(ctx context.Context, r Reports) (int64, error) {
	acked, err := s.IngestReportsMany(ctx, []Reports{r})
	if err != nil {
		return 0, err
	}
	return acked[0], nil
}

// IngestReportsMany is IngestReports for several batches, of one agent or
// many, in one transaction: acked[i] is batch i's newest stored sequence
// number. Either every batch is stored or none is. The agent API groups
// concurrent Report calls this way: with 10,000 agents one transaction
// per call bounded the reports stored to about a thousand calls a second.
// The transaction reads every batch's queue in one statement and writes
// statuses, points and queues in multi-row statements, so a group of 200
// calls is a handful of round trips rather than several per call.
func (s *Store) IngestReportsMany(ctx context.Context, rs []Reports) ([]int64, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	perStatement := reportRowsPerStatement
	if s.b.name() == "sqlite" {
		perStatement = sqliteReportRowsPerStatement
	}
	now := s.now()
	var acked []int64
	err := s.inTx(ctx, func(q querier) error {
		// A retried transaction starts over.
		in, err := readReportQueues(ctx, q, rs)
		if err != nil {
			return err
		}
		var out ingest
		acked = out.plan(rs, in, now)
		return out.write(ctx, q, perStatement, now)
	})
	if err != nil {
		return nil, fmt.Errorf("ingest reports: %w", err)
	}
	return acked, nil
}

// Rows of one multi-row statement of IngestReportsMany. SQLite is fastest
// with short statements: a group of 200 agents' statuses took 4.6–4.9 ms
// in statements of 10 rows, 5.3 ms in 5, 5.8–7.8 ms in 20, 9.3 ms in 50 and
// 32 ms in 200 (BenchmarkIngestReportsMany; 8.6–10 ms with statements for
// each agent in turn). PostgreSQL took 4.2–6.5 ms in statements of 200
// rows, 5.8–6.0 ms in 50, and 35–45 ms with statements for each agent.
const (
	reportRowsPerStatement       = 200
	sqliteReportRowsPerStatement = 10
)

// reportQueue is where an agent's report queue stands: its id and newest
// stored sequence number.
type reportQueue struct {
	id   string
	last int64
}

// readReportQueues reads the stored queue of every agent in rs.
func readReportQueues(ctx context.Context, q querier, rs []Reports) (map[string]reportQueue, error) {
	ids := make([]string, 0, len(rs))
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		if !seen[r.AgentID] {
			seen[r.AgentID] = true
			ids = append(ids, r.AgentID)
		}
	}
	out := make(map[string]reportQueue, len(ids))
	for chunk := range slices.Chunk(ids, reportRowsPerStatement) {
		var w where
		rows, err := q.query(ctx, `SELECT agent_id, queue_id, last_seq FROM agent_report_queues WHERE `+in(&w, "agent_id", chunk), w.args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			var rq reportQueue
			if err := rows.Scan(&id, &rq.id, &rq.last); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = rq
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ingest is what IngestReportsMany writes: per agent its newest status
// and its queue's new position; every new point, and the cluster reports
// of each batch's status, in order.
type ingest struct {
	statuses map[string]AgentStatus // DataPlaneID set
	queues   map[string]reportQueue // only those that moved
	points   []agentPoint
	clusters []agentStatus // the statuses with clusters, of every batch
}

type agentStatus struct {
	agentID string
	AgentStatus
}

type agentPoint struct {
	agentID string
	MetricPoint
}

// plan works out, from the stored queues, what each batch adds, batch by
// batch as if each were stored in turn, and returns each batch's newest
// stored sequence number. A batch from a new queue id starts over. A
// status without a report time gets now.
func (w *ingest) plan(rs []Reports, stored map[string]reportQueue, now time.Time) []int64 {
	w.statuses, w.queues = map[string]AgentStatus{}, map[string]reportQueue{}
	acked := make([]int64, len(rs))
	for i, r := range rs {
		cur := stored[r.AgentID]
		last := cur.last
		if cur.id != r.QueueID {
			last = 0
		}
		var status *AgentStatus
		newest, first := last, len(w.points)
		for _, it := range r.Items {
			if it.Seq <= newest {
				continue
			}
			newest = it.Seq
			if it.Status != nil {
				st := *it.Status
				st.Seq = it.Seq
				status = &st
			}
			for _, p := range it.Metrics {
				w.points = append(w.points, agentPoint{agentID: r.AgentID, MetricPoint: p})
			}
		}
		acked[i] = newest
		if newest == last && cur.id == r.QueueID {
			w.points = w.points[:first]
			continue
		}
		if status != nil {
			status.DataPlaneID = r.DataPlaneID
			if status.ReportTime.IsZero() {
				status.ReportTime = now
			}
			w.statuses[r.AgentID] = *status
			if len(status.Clusters) > 0 {
				w.clusters = append(w.clusters, agentStatus{r.AgentID, *status})
			}
		}
		stored[r.AgentID] = reportQueue{id: r.QueueID, last: newest}
		w.queues[r.AgentID] = stored[r.AgentID]
	}
	return acked
}

// write stores w in q's transaction, rows in agent order so that
// concurrent transactions lock them in the same order.
func (w *ingest) write(ctx context.Context, q querier, perStatement int, now time.Time) error {
	agents := slices.Sorted(maps.Keys(w.statuses))
	for chunk := range slices.Chunk(agents, perStatement) {
		if err := putStatuses(ctx, q, chunk, w.statuses, now); err != nil {
			return err
		}
	}
	for _, st := range w.clusters {
		if err := putClusterReports(ctx, q, st.agentID, st.DataPlaneID, st.Clusters, st.ReportTime, now); err != nil {
			return err
		}
	}
	if err := insertPoints(ctx, q, w.points, now); err != nil {
		return err
	}
	queued := slices.Sorted(maps.Keys(w.queues))
	for chunk := range slices.Chunk(queued, perStatement) {
		var a where
		values := make([]string, len(chunk))
		for i, id := range chunk {
			rq := w.queues[id]
			values[i] = a.row(id, rq.id, rq.last, now)
		}
		if _, err := q.exec(ctx, `INSERT INTO agent_report_queues (agent_id, queue_id, last_seq, update_time) VALUES `+strings.Join(values, ", ")+`
			ON CONFLICT (agent_id) DO UPDATE SET queue_id = excluded.queue_id, last_seq = excluded.last_seq, update_time = excluded.update_time`,
			a.args...); err != nil {
			return fmt.Errorf("put report queues: %w", err)
		}
	}
	return nil
}

// putStatuses upserts the statuses of agents, in one statement.
func putStatuses(ctx context.Context, q querier, agents []string, statuses map[string]AgentStatus, now time.Time) error {
	var a where
	values := make([]string, len(agents))
	for i, id := range agents {
		st := statuses[id]
		checks, err := json.Marshal(nonNilSlice(st.Checks))
		if err != nil {
			return fmt.Errorf("encode checks: %w", err)
		}
		failing := 0
		for _, c := range st.Checks {
			if !c.Healthy {
				failing++
			}
		}
		values[i] = a.row(id, st.DataPlaneID, st.Seq, st.AppliedRevision, st.StateHash, st.AgentVersion, st.HostVersion,
			st.ProductVersion, string(checks), failing, st.LastError, st.Stale, st.DroppedReports, st.ReportTime.UTC(), now)
	}
	_, err := q.exec(ctx, `INSERT INTO agent_status (agent_id, data_plane_id, seq, applied_revision, state_hash, agent_version,
		host_version, product_version, checks, failing_checks, last_error, stale, dropped_reports, report_time, receive_time)
		VALUES `+strings.Join(values, ", ")+`
		ON CONFLICT (agent_id) DO UPDATE SET data_plane_id = excluded.data_plane_id, seq = excluded.seq,
		applied_revision = excluded.applied_revision, state_hash = excluded.state_hash, agent_version = excluded.agent_version,
		host_version = excluded.host_version, product_version = excluded.product_version, checks = excluded.checks,
		failing_checks = excluded.failing_checks, last_error = excluded.last_error, stale = excluded.stale,
		dropped_reports = excluded.dropped_reports, report_time = excluded.report_time, receive_time = excluded.receive_time`,
		a.args...)
	if err != nil {
		return fmt.Errorf("put status: %w", err)
	}
	return nil
}

// putClusterReports records the clusters' versions an agent reported, for
// clusters of its own data plane only (others are ignored: an agent speaks
// for its data plane), and copies each version to clusters.reported_version.
// The cluster's etag does not change: the version is an observation, not
// a change of what the cluster should be.
func putClusterReports(ctx context.Context, q querier, agentID, dataPlaneID string, reports []ClusterReport, at, now time.Time) error {
	for _, r := range reports {
		if !isValidID(r.ClusterID) {
			continue
		}
		var n int
		if err := q.queryRow(ctx, `SELECT count(*) FROM clusters WHERE id = $1 AND data_plane_id = $2`, r.ClusterID, dataPlaneID).Scan(&n); err != nil {
			return fmt.Errorf("cluster report: %w", err)
		}
		if n == 0 {
			continue
		}
		if _, err := q.exec(ctx, `INSERT INTO cluster_reports (cluster_id, agent_id, version, desired_version, healthy, detail, report_time, receive_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (cluster_id) DO UPDATE SET agent_id = excluded.agent_id, version = excluded.version,
			desired_version = excluded.desired_version, healthy = excluded.healthy, detail = excluded.detail,
			report_time = excluded.report_time, receive_time = excluded.receive_time`,
			r.ClusterID, agentID, r.Version, r.DesiredVersion, r.Healthy, r.Detail, at.UTC(), now.UTC()); err != nil {
			return fmt.Errorf("cluster report: %w", err)
		}
		if r.Version != "" {
			if _, err := q.exec(ctx, `UPDATE clusters SET reported_version = $2, reported_version_key = $3 WHERE id = $1 AND reported_version <> $2`,
				r.ClusterID, r.Version, versionSortKey(r.Version)); err != nil {
				return fmt.Errorf("cluster report: %w", err)
			}
		}
	}
	return nil
}

// GetClusterReport returns what a cluster's agent last reported of it;
// ErrNotFound when nothing yet.
func (s *Store) GetClusterReport(ctx context.Context, clusterID string) (ClusterReport, error) {
	if !isValidID(clusterID) {
		return ClusterReport{}, fmt.Errorf("cluster report %q: %w", clusterID, ErrNotFound)
	}
	var r ClusterReport
	err := s.b.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT cluster_id, agent_id, version, desired_version, healthy, detail, report_time
			FROM cluster_reports WHERE cluster_id = $1`, clusterID).
			Scan(&r.ClusterID, &r.AgentID, &r.Version, &r.DesiredVersion, &r.Healthy, &r.Detail, &r.ReportTime)
	})
	if isNoRows(err) {
		return ClusterReport{}, fmt.Errorf("cluster report %q: %w", clusterID, ErrNotFound)
	}
	if err != nil {
		return ClusterReport{}, fmt.Errorf("get cluster report: %w", err)
	}
	r.ReportTime = utc(r.ReportTime)
	return r, nil
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// pointsPerInsert bounds one multi-row INSERT: 8 parameters a row stays
// far below PostgreSQL's 65,535 and SQLite's 32,766.
const pointsPerInsert = 500

func insertPoints(ctx context.Context, q querier, points []agentPoint, now time.Time) error {
	for chunk := range slices.Chunk(points, pointsPerInsert) {
		var a where
		values := make([]string, len(chunk))
		for i, p := range chunk {
			if p.Time.IsZero() {
				p.Time = now
			}
			id, err := uuid.NewV7()
			if err != nil {
				return fmt.Errorf("point id: %w", err)
			}
			values[i] = a.row(p.agentID, id.String(), p.Name, encodeLabels(p.Labels), p.Value, p.Source, p.Time.UTC(), now)
		}
		if _, err := q.exec(ctx, `INSERT INTO agent_metric_points (agent_id, id, name, labels, value, source, point_time, receive_time) VALUES `+
			strings.Join(values, ", "), a.args...); err != nil {
			return fmt.Errorf("insert metric points: %w", err)
		}
	}
	return nil
}

const statusCols = `seq, applied_revision, state_hash, agent_version, host_version, product_version, checks,
	last_error, stale, dropped_reports, report_time, receive_time`

// GetAgentStatus returns an agent's newest status; ErrNotFound when it
// has reported none.
func (s *Store) GetAgentStatus(ctx context.Context, agentID string) (AgentStatus, error) {
	if !isValidID(agentID) {
		return AgentStatus{}, fmt.Errorf("agent status %q: %w", agentID, ErrNotFound)
	}
	var st AgentStatus
	err := s.b.read(ctx, func(q querier) error {
		var checks string
		err := q.queryRow(ctx, `SELECT agent_id, data_plane_id, `+statusCols+` FROM agent_status WHERE agent_id = $1`, agentID).
			Scan(&st.AgentID, &st.DataPlaneID, &st.Seq, &st.AppliedRevision, &st.StateHash, &st.AgentVersion, &st.HostVersion,
				&st.ProductVersion, &checks, &st.LastError, &st.Stale, &st.DroppedReports, &st.ReportTime, &st.ReceiveTime)
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(checks), &st.Checks)
	})
	if isNoRows(err) {
		return AgentStatus{}, fmt.Errorf("agent status %q: %w", agentID, ErrNotFound)
	}
	if err != nil {
		return AgentStatus{}, fmt.Errorf("get agent status: %w", err)
	}
	st.ReportTime, st.ReceiveTime = utc(st.ReportTime), utc(st.ReceiveTime)
	return st, nil
}

// MetricFilter narrows ListAgentMetrics.
type MetricFilter struct {
	AgentID string
	// Name keeps one metric; empty keeps all.
	Name string
	// Since keeps points received at or after it; zero keeps all.
	Since time.Time
}

// ListAgentMetrics returns one page of an agent's metric points in
// arrival order.
func (s *Store) ListAgentMetrics(ctx context.Context, f MetricFilter, p Page) ([]MetricPoint, string, error) {
	if !isValidID(f.AgentID) {
		return nil, "", nil
	}
	var w where
	w.add("t.agent_id = " + w.arg(f.AgentID))
	if f.Name != "" {
		w.add("t.name = " + w.arg(f.Name))
	}
	if !f.Since.IsZero() {
		w.add("t.receive_time >= " + w.arg(f.Since.UTC()))
	}
	var out []MetricPoint
	var next string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, next, err = list(ctx, q, `t.agent_id, t.id, t.name, t.labels, t.value, t.source, t.point_time, t.receive_time`,
			`FROM agent_metric_points t`, &w, p, scanPoint, func(m MetricPoint) string { return m.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list agent metrics: %w", err)
	}
	return out, next, nil
}

func scanPoint(r row) (MetricPoint, error) {
	var m MetricPoint
	var labels string
	if err := r.Scan(&m.AgentID, &m.ID, &m.Name, &labels, &m.Value, &m.Source, &m.Time, &m.ReceiveTime); err != nil {
		return MetricPoint{}, err
	}
	var err error
	if m.Labels, err = decodeLabels(labels); err != nil {
		return MetricPoint{}, err
	}
	m.Time, m.ReceiveTime = utc(m.Time), utc(m.ReceiveTime)
	return m, nil
}

// compactBatch bounds one DELETE of CompactMetrics, so that no single
// transaction grows with the backlog (CockroachDB limits transaction size).
const compactBatch = 5000

// CompactMetrics deletes metric points received before cutoff and returns
// how many it deleted.
func (s *Store) CompactMetrics(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.inTx(ctx, func(q querier) error {
			var err error
			n, err = q.exec(ctx, `DELETE FROM agent_metric_points WHERE (agent_id, id) IN
				(SELECT agent_id, id FROM agent_metric_points WHERE receive_time < $1 LIMIT `+strconv.Itoa(compactBatch)+`)`, cutoff.UTC())
			return err
		})
		if err != nil {
			return total, fmt.Errorf("compact metrics: %w", err)
		}
		total += n
		if n < compactBatch {
			return total, nil
		}
	}
}
