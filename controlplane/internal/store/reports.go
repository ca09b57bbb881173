package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
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
// statuses, points and queues a table at a time (insertRows), so a group of
// 200 calls is a handful of round trips rather than several per call.
func (s *Store) IngestReportsMany(ctx context.Context, rs []Reports) ([]int64, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	arrays := s.b.name() != "sqlite"
	now := s.now()
	var acked []int64
	err := s.inTx(ctx, func(q querier) error {
		// A retried transaction starts over.
		in, err := readReportQueues(ctx, q, rs, arrays)
		if err != nil {
			return err
		}
		var out ingest
		acked = out.plan(rs, in, now)
		return out.write(ctx, q, arrays, now)
	})
	if err != nil {
		return nil, fmt.Errorf("ingest reports: %w", err)
	}
	return acked, nil
}

// reportQueue is where an agent's report queue stands: its id and newest
// stored sequence number.
type reportQueue struct {
	id   string
	last int64
}

// readReportQueues reads the stored queue of every agent in rs.
func readReportQueues(ctx context.Context, q querier, rs []Reports, arrays bool) (map[string]reportQueue, error) {
	ids := make([]string, 0, len(rs))
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		if !seen[r.AgentID] {
			seen[r.AgentID] = true
			ids = append(ids, r.AgentID)
		}
	}
	out := make(map[string]reportQueue, len(ids))
	per := arrayRowsPerStatement
	if !arrays {
		per = sqliteParamsPerStatement
	}
	for chunk := range slices.Chunk(ids, per) {
		var w where
		var cond string
		if arrays {
			u, err := uuids("agent id", chunk)
			if err != nil {
				return nil, fmt.Errorf("read report queues: %w", err)
			}
			cond = "agent_id = ANY(" + w.arg([][16]byte(u)) + "::UUID[])"
		} else {
			cond = in(&w, "agent_id", chunk)
		}
		rows, err := q.query(ctx, `SELECT agent_id, queue_id, last_seq FROM agent_report_queues WHERE `+cond, w.args...)
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
func (w *ingest) write(ctx context.Context, q querier, arrays bool, now time.Time) error {
	if err := putStatuses(ctx, q, arrays, slices.Sorted(maps.Keys(w.statuses)), w.statuses, now); err != nil {
		return err
	}
	for _, st := range w.clusters {
		if err := putClusterReports(ctx, q, st.agentID, st.DataPlaneID, st.Clusters, st.ReportTime, now); err != nil {
			return err
		}
	}
	if err := insertPoints(ctx, q, arrays, w.points, now); err != nil {
		return err
	}
	queued := slices.Sorted(maps.Keys(w.queues))
	agentIDs, err := uuids("agent id", queued)
	if err != nil {
		return fmt.Errorf("put report queues: %w", err)
	}
	queueIDs, lasts, times := make([]string, len(queued)), make([]int64, len(queued)), make([]time.Time, len(queued))
	for i, id := range queued {
		queueIDs[i], lasts[i], times[i] = w.queues[id].id, w.queues[id].last, now
	}
	err = insertRows(ctx, q, arrays, `INSERT INTO agent_report_queues (agent_id, queue_id, last_seq, update_time)`,
		`ON CONFLICT (agent_id) DO UPDATE SET queue_id = excluded.queue_id, last_seq = excluded.last_seq, update_time = excluded.update_time`,
		agentIDs, column[string]{"TEXT", queueIDs}, column[int64]{"INT8", lasts},
		column[time.Time]{"TIMESTAMPTZ", times})
	if err != nil {
		return fmt.Errorf("put report queues: %w", err)
	}
	return nil
}

// putStatuses upserts the statuses of agents.
func putStatuses(ctx context.Context, q querier, arrays bool, agents []string, statuses map[string]AgentStatus, now time.Time) error {
	n := len(agents)
	agentIDs, err := uuids("agent id", agents)
	if err != nil {
		return fmt.Errorf("put status: %w", err)
	}
	var (
		dataPlanes, hashes, versions, hosts, products, checks, lastErrs = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		seqs, applied, dropped = make([]int64, n), make([]int64, n), make([]int64, n)
		failing                = make([]int32, n)
		stale                  = make([]bool, n)
		reported, received     = make([]time.Time, n), make([]time.Time, n)
	)
	for i, id := range agents {
		st := statuses[id]
		b, err := json.Marshal(nonNilSlice(st.Checks))
		if err != nil {
			return fmt.Errorf("encode checks: %w", err)
		}
		for _, c := range st.Checks {
			if !c.Healthy {
				failing[i]++
			}
		}
		dataPlanes[i], seqs[i], applied[i], hashes[i], versions[i], hosts[i], products[i] = st.DataPlaneID, st.Seq,
			st.AppliedRevision, st.StateHash, st.AgentVersion, st.HostVersion, st.ProductVersion
		checks[i], lastErrs[i], stale[i], dropped[i], reported[i], received[i] = string(b), st.LastError, st.Stale,
			st.DroppedReports, st.ReportTime.UTC(), now
	}
	dataPlaneIDs, err := uuids("data plane id", dataPlanes)
	if err != nil {
		return fmt.Errorf("put status: %w", err)
	}
	err = insertRows(ctx, q, arrays, `INSERT INTO agent_status (agent_id, data_plane_id, seq, applied_revision, state_hash,
		agent_version, host_version, product_version, checks, failing_checks, last_error, stale, dropped_reports, report_time,
		receive_time)`, `ON CONFLICT (agent_id) DO UPDATE SET data_plane_id = excluded.data_plane_id, seq = excluded.seq,
		applied_revision = excluded.applied_revision, state_hash = excluded.state_hash, agent_version = excluded.agent_version,
		host_version = excluded.host_version, product_version = excluded.product_version, checks = excluded.checks,
		failing_checks = excluded.failing_checks, last_error = excluded.last_error, stale = excluded.stale,
		dropped_reports = excluded.dropped_reports, report_time = excluded.report_time, receive_time = excluded.receive_time`,
		agentIDs, dataPlaneIDs, column[int64]{"INT8", seqs},
		column[int64]{"INT8", applied}, column[string]{"TEXT", hashes}, column[string]{"TEXT", versions},
		column[string]{"TEXT", hosts}, column[string]{"TEXT", products}, column[string]{"TEXT", checks},
		column[int32]{"INT4", failing}, column[string]{"TEXT", lastErrs}, column[bool]{"BOOL", stale},
		column[int64]{"INT8", dropped}, column[time.Time]{"TIMESTAMPTZ", reported}, column[time.Time]{"TIMESTAMPTZ", received})
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

// insertPoints inserts points, each under a new time-ordered id.
func insertPoints(ctx context.Context, q querier, arrays bool, points []agentPoint, now time.Time) error {
	n := len(points)
	var (
		agents, ids            = make(uuidColumn, n), make(uuidColumn, n)
		names, labels, sources = make([]string, n), make([]string, n), make([]string, n)
		values                 = make([]float64, n)
		times, received        = make([]time.Time, n), make([]time.Time, n)
		lastAgent              string
		lastAgentID            uuid.UUID
	)
	for i, p := range points {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("point id: %w", err)
		}
		if i == 0 || p.agentID != lastAgent { // a batch's points are together
			u, err := uuids("agent id", []string{p.agentID})
			if err != nil {
				return fmt.Errorf("insert metric points: %w", err)
			}
			lastAgent, lastAgentID = p.agentID, u[0]
		}
		t := p.Time
		if t.IsZero() {
			t = now
		}
		agents[i], ids[i], names[i], labels[i], values[i], sources[i], times[i], received[i] = lastAgentID, id, p.Name,
			encodeLabels(p.Labels), p.Value, p.Source, t.UTC(), now
	}
	err := insertRows(ctx, q, arrays, `INSERT INTO agent_metric_points (agent_id, id, name, labels, value, source, point_time, receive_time)`,
		"", agents, ids, column[string]{"TEXT", names},
		column[string]{"TEXT", labels}, column[float64]{"FLOAT8", values}, column[string]{"TEXT", sources},
		column[time.Time]{"TIMESTAMPTZ", times}, column[time.Time]{"TIMESTAMPTZ", received})
	if err != nil {
		return fmt.Errorf("insert metric points: %w", err)
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
