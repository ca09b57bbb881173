package agentapi_test

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// TestReportUnstorableValuesDoNotBlockTheQueue sends batches that pass
// every check of the ReportService (and of the agent's Push, which shares
// internal/metricpoint) but that a database cannot store. The agent resends
// a batch answered UNAVAILABLE forever, so such a batch blocks its whole
// queue for good; it must be stored or refused as INVALID_ARGUMENT (which
// the agent drops and counts).
func TestReportUnstorableValuesDoNotBlockTheQueue(t *testing.T) {
	point := func(seq int64, p *agentv1.MetricPoint) *agentv1.Report {
		return &agentv1.Report{Seq: seq, Time: timestamppb.Now(), Body: &agentv1.Report_Metrics{Metrics: &agentv1.MetricBatch{Points: []*agentv1.MetricPoint{p}}}}
	}
	withLastError := func(seq int64, s string) *agentv1.Report {
		r := statusItem(seq, 1)
		r.GetStatus().LastError = s
		return r
	}
	for _, tc := range []struct {
		name    string
		backend string
		url     func(testing.TB) string
		report  *agentv1.Report
	}{
		{"NaN value", "sqlite", storetest.SQLiteURL, point(1, &agentv1.MetricPoint{Name: "queue_depth", Value: math.NaN(), Source: "svc"})},
		{"NaN value", "postgres", storetest.PostgresURL, point(1, &agentv1.MetricPoint{Name: "queue_depth", Value: math.NaN(), Source: "svc"})},
		{"NUL in source", "sqlite", storetest.SQLiteURL, point(1, &agentv1.MetricPoint{Name: "up", Value: 1, Source: "svc\x00"})},
		{"NUL in source", "postgres", storetest.PostgresURL, point(1, &agentv1.MetricPoint{Name: "up", Value: 1, Source: "svc\x00"})},
		{"NUL in last_error", "postgres", storetest.PostgresURL, withLastError(1, "open /x\x00: invalid argument")},
	} {
		t.Run(tc.name+"/"+tc.backend, func(t *testing.T) {
			t.Parallel()
			e := start(t, options{StoreURL: tc.url(t)})
			a := e.enrollAgent(t, e.DP.ID)
			client := agentv1.NewReportServiceClient(e.dialMTLS(t, a.Src))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := client.Report(ctx, &agentv1.ReportRequest{QueueId: "q", Reports: []*agentv1.Report{tc.report}})
			switch {
			case status.Code(err) == codes.InvalidArgument:
				// Refused as a bad batch: the agent drops it and counts it.
			case err != nil:
				t.Fatalf("got %v; want the batch stored or refused as InvalidArgument (UNAVAILABLE makes the agent resend it forever)", err)
			case resp.AckedSeq != 1:
				t.Fatalf("acked %d; want 1", resp.AckedSeq)
			}
		})
	}
}
