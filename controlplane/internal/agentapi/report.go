package agentapi

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/metricpoint"
)

// Report limits: a batch is one transaction, so it stays small; an agent
// with more queued sends several.
const (
	maxReportsPerBatch = 500
	maxPointsPerBatch  = 5000
	maxQueueID         = 64
	maxStatusText      = 1024
	maxChecks          = 64
	maxClusters        = 1000
	maxVersionText     = 64
)

type reportService struct {
	agentv1.UnimplementedReportServiceServer
	s *Server
}

// Report stores a batch of an agent's status and metric reports, each
// once, and answers the newest sequence number stored. The agent and data
// plane come from the caller's certificate, never from the request.
func (rs *reportService) Report(ctx context.Context, req *agentv1.ReportRequest) (*agentv1.ReportResponse, error) {
	c, ok := callerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no caller")
	}
	batch, err := reportsFromRequest(req)
	if err != nil {
		return nil, err
	}
	batch.AgentID, batch.DataPlaneID = c.AgentID, c.DataPlaneID
	acked, err := rs.s.reports.ingest(ctx, batch)
	if err != nil {
		if status.Code(err) == codes.Unavailable || ctx.Err() != nil {
			return nil, err
		}
		rs.s.log.WarnContext(ctx, "store reports", "agent_id", c.AgentID, "error", err)
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	return &agentv1.ReportResponse{AckedSeq: acked}, nil
}

// reportsFromRequest validates a batch; the whole batch is refused with
// InvalidArgument and field details when any part is bad, so nothing of
// it is written.
func reportsFromRequest(req *agentv1.ReportRequest) (store.Reports, error) {
	var bad []*errdetails.BadRequest_FieldViolation
	add := func(field, format string, args ...any) {
		if len(bad) < 20 {
			bad = append(bad, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
		}
	}
	if req.QueueId == "" || len(req.QueueId) > maxQueueID {
		add("queue_id", "must be 1 to %d characters", maxQueueID)
	}
	if len(req.Reports) > maxReportsPerBatch {
		add("reports", "at most %d per batch", maxReportsPerBatch)
	}
	out := store.Reports{QueueID: req.QueueId}
	var prev int64
	points := 0
	for i, r := range req.Reports {
		f := fmt.Sprintf("reports[%d]", i)
		if r.Seq <= prev {
			add(f+".seq", "must be positive and increasing")
		}
		prev = r.Seq
		item := store.Report{Seq: r.Seq}
		switch body := r.Body.(type) {
		case *agentv1.Report_Status:
			st := body.Status
			if len(st.Checks) > maxChecks {
				add(f+".status.checks", "at most %d", maxChecks)
			}
			for _, s := range []struct{ name, v string }{{"state_hash", st.StateHash}, {"agent_version", st.AgentVersion},
				{"host_version", st.HostVersion}, {"product_version", st.ProductVersion}, {"last_error", st.LastError}} {
				if len(s.v) > maxStatusText {
					add(f+".status."+s.name, "at most %d bytes", maxStatusText)
				} else if err := metricpoint.CheckText(s.v); err != nil {
					add(f+".status."+s.name, "%v", err)
				}
			}
			item.Status = &store.AgentStatus{AppliedRevision: st.AppliedRevision, StateHash: st.StateHash,
				AgentVersion: st.AgentVersion, HostVersion: st.HostVersion, ProductVersion: st.ProductVersion,
				LastError: st.LastError, Stale: st.Stale, DroppedReports: st.DroppedReports, ReportTime: reportTime(r)}
			for j, ch := range st.Checks {
				if ch.Name == "" || len(ch.Name) > 64 || len(ch.Detail) > maxStatusText ||
					metricpoint.CheckText(ch.Name) != nil || metricpoint.CheckText(ch.Detail) != nil {
					add(fmt.Sprintf("%s.status.checks[%d]", f, j), "name must be 1 to 64 bytes, detail at most %d, both without control characters", maxStatusText)
				}
				item.Status.Checks = append(item.Status.Checks, store.Check{Name: ch.Name, Healthy: ch.Healthy, Detail: ch.Detail})
			}
			if len(st.Clusters) > maxClusters {
				add(f+".status.clusters", "at most %d", maxClusters)
			}
			for j, cv := range st.Clusters {
				cf := fmt.Sprintf("%s.status.clusters[%d]", f, j)
				if _, err := uuid.Parse(cv.ClusterId); err != nil {
					add(cf+".cluster_id", "must be a cluster id")
				}
				for _, v := range []struct{ name, v string }{{"version", cv.Version}, {"desired_version", cv.DesiredVersion}} {
					if len(v.v) > maxVersionText || metricpoint.CheckText(v.v) != nil {
						add(cf+"."+v.name, "at most %d characters, no control characters", maxVersionText)
					}
				}
				if len(cv.Detail) > maxStatusText || metricpoint.CheckText(cv.Detail) != nil {
					add(cf+".detail", "at most %d bytes, no control characters", maxStatusText)
				}
				item.Status.Clusters = append(item.Status.Clusters, store.ClusterReport{ClusterID: cv.ClusterId,
					Version: cv.Version, DesiredVersion: cv.DesiredVersion, Healthy: cv.Healthy, Detail: cv.Detail})
			}
		case *agentv1.Report_Metrics:
			for j, p := range body.Metrics.GetPoints() {
				pf := fmt.Sprintf("%s.metrics.points[%d]", f, j)
				points++
				if err := metricpoint.CheckName(p.Name); err != nil {
					add(pf+".name", "%v", err)
				}
				if err := metricpoint.CheckLabels(p.Labels); err != nil {
					add(pf+".labels", "%v", err)
				}
				if err := metricpoint.CheckSource(p.Source); err != nil {
					add(pf+".source", "%v", err)
				}
				if err := metricpoint.CheckValue(p.Value); err != nil {
					add(pf+".value", "%v", err)
				}
				t := reportTime(r)
				if p.Time != nil && p.Time.CheckValid() == nil {
					t = p.Time.AsTime()
				}
				item.Metrics = append(item.Metrics, store.MetricPoint{Name: p.Name, Labels: p.Labels, Value: p.Value, Source: p.Source, Time: t})
			}
		default:
			add(f, "must carry a status or metrics")
		}
		out.Items = append(out.Items, item)
	}
	if points > maxPointsPerBatch {
		add("reports", "at most %d metric points per batch", maxPointsPerBatch)
	}
	if len(bad) > 0 {
		return store.Reports{}, invalidArgument("invalid report batch", bad)
	}
	return out, nil
}

// invalidArgument is the InvalidArgument error for a request with the
// field violations bad (at least one): the first in the message, all of
// them as a google.rpc.BadRequest detail.
func invalidArgument(what string, bad []*errdetails.BadRequest_FieldViolation) error {
	st := status.New(codes.InvalidArgument, what+": "+bad[0].Field+": "+bad[0].Description)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: bad}); err == nil {
		st = d
	}
	return st.Err()
}

func reportTime(r *agentv1.Report) time.Time {
	if r.Time != nil && r.Time.CheckValid() == nil {
		return r.Time.AsTime()
	}
	return time.Time{}
}
