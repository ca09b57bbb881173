package agentapi_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/h2frames"
)

// TestNoFlowControlPings: the agent API's HTTP/2 windows are static, so
// what an agent sends is not answered with grpc-go's bandwidth-delay PINGs
// (a window update and a PING after the first data frame of every
// measurement, which the agent must answer: writes and reads on both
// sides, at every agent). The test client records what the server sends.
func TestNoFlowControlPings(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	var rec h2frames.Recorder
	conn, err := grpc.NewClient(e.Addr, grpc.WithTransportCredentials(rec.Creds(credentials.NewTLS(mtlsTLS(a.Src)))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := agentv1.NewReportServiceClient(conn)
	for i := range int64(5) {
		req := &agentv1.ReportRequest{QueueId: "q1", Reports: []*agentv1.Report{statusItem(i+1, i)}}
		if _, err := client.Report(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	pings, err := rec.Pings()
	if err != nil {
		t.Fatal(err)
	}
	if pings != 0 {
		t.Fatalf("the control plane sent %d PING frames over 5 Report calls; want 0 (static flow-control windows)", pings)
	}
}
