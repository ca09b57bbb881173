package agentapi_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

func statusItem(seq, applied int64) *agentv1.Report {
	return &agentv1.Report{Seq: seq, Time: timestamppb.Now(), Body: &agentv1.Report_Status{Status: &agentv1.AgentStatus{
		AppliedRevision: applied, StateHash: "h", AgentVersion: "1.2.3", HostVersion: "linux 6.1",
		Checks: []*agentv1.Check{{Name: "config", Healthy: true}}}}}
}

func metricsItem(seq int64, names ...string) *agentv1.Report {
	var pts []*agentv1.MetricPoint
	for _, n := range names {
		pts = append(pts, &agentv1.MetricPoint{Name: n, Value: 1, Source: "agent", Labels: map[string]string{"k": "v"}})
	}
	return &agentv1.Report{Seq: seq, Time: timestamppb.Now(), Body: &agentv1.Report_Metrics{Metrics: &agentv1.MetricBatch{Points: pts}}}
}

func TestReportStoresOnceUnderTheCertificatesIdentity(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	client := agentv1.NewReportServiceClient(e.dialMTLS(t, a.Src))
	ctx := context.Background()
	req := &agentv1.ReportRequest{QueueId: "q1", Reports: []*agentv1.Report{statusItem(1, 7), metricsItem(2, "cairn_agent_lag", "app_requests_total")}}
	for range 2 { // the second is a redelivery after a lost response
		resp, err := client.Report(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.AckedSeq != 2 {
			t.Fatalf("acked %d; want 2", resp.AckedSeq)
		}
	}
	agentID := a.Resp.AgentId
	st, err := e.Store.GetAgentStatus(ctx, agentID)
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedRevision != 7 || st.AgentVersion != "1.2.3" || st.DataPlaneID != e.DP.ID {
		t.Fatalf("status %+v", st)
	}
	pts, _, err := e.Store.ListAgentMetrics(ctx, store.MetricFilter{AgentID: agentID}, store.Page{Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 {
		t.Fatalf("got %d points; want 2 (stored once)", len(pts))
	}
}

func TestReportRefusesBadBatchesWhole(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	client := agentv1.NewReportServiceClient(e.dialMTLS(t, a.Src))
	many := make([]*agentv1.Report, 501)
	for i := range many {
		many[i] = metricsItem(int64(i+1), "m")
	}
	for _, tc := range []struct {
		name, field string
		req         *agentv1.ReportRequest
	}{
		{"no queue id", "queue_id", &agentv1.ReportRequest{Reports: []*agentv1.Report{statusItem(1, 1)}}},
		{"queue id too long", "queue_id", &agentv1.ReportRequest{QueueId: strings.Repeat("q", 65)}},
		{"seq not increasing", "reports[1].seq", &agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{statusItem(2, 1), statusItem(2, 1)}}},
		{"seq zero", "reports[0].seq", &agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{statusItem(0, 1)}}},
		{"empty report", "reports[1]", &agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{statusItem(1, 1), {Seq: 2}}}},
		{"bad metric name", "reports[1].metrics.points[0].name", &agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{statusItem(1, 1), metricsItem(2, "9bad name")}}},
		{"too many reports", "reports", &agentv1.ReportRequest{QueueId: "q", Reports: many}},
		{"long last error", "reports[0].status.last_error", &agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{{Seq: 1,
			Body: &agentv1.Report_Status{Status: &agentv1.AgentStatus{LastError: strings.Repeat("e", 1025)}}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Report(context.Background(), tc.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v; want InvalidArgument", err)
			}
			var fields []string
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.FieldViolations {
						fields = append(fields, v.Field)
					}
				}
			}
			found := false
			for _, f := range fields {
				found = found || f == tc.field
			}
			if !found {
				t.Fatalf("field violations %q; want %q", fields, tc.field)
			}
		})
	}
	if _, err := e.Store.GetAgentStatus(context.Background(), a.Resp.AgentId); err == nil {
		t.Fatal("a refused batch wrote a status")
	}
}

func TestReportNeedsAnSVID(t *testing.T) {
	e := start(t, options{})
	_, err := agentv1.NewReportServiceClient(e.dialServerAuth(t)).Report(context.Background(),
		&agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{statusItem(1, 1)}})
	if c := status.Code(err); c != codes.Unauthenticated {
		t.Fatalf("got %v; want Unauthenticated", err)
	}
}
