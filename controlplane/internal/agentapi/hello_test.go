package agentapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// serve waits for the Hello with stream.Recv(), which only the gRPC
// stream's own end unblocks; the context that revocation and shutdown
// cancel (streamAuth's wrapped context) is not consulted. So a config
// stream that has been admitted but has not sent its Hello yet survives
// the agent's revocation (docs/security.md: revoked agents' streams close
// within a second on every replica), stays in streams_open holding its
// admission, and makes shutdown sit out GracefulStop's 10 s fallback. The
// real agent sends its Hello at once, so this needs a slow or hostile
// client; it still breaks the revocation guarantee.
func TestRevocationEndsStreamBeforeHello(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
	defer cancel()
	stream, err := agentv1.NewConfigServiceClient(e.dialMTLS(t, a.Src)).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream admitted", func() bool { return e.Server.OpenStreams() == 1 })
	if _, err := e.Store.RevokeAgent(context.Background(), admin, "", a.Resp.AgentId, "compromised"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = stream.Recv()
	t.Logf("stream ended %v after the revocation with %v", time.Since(began), err)
	wantCode(t, err, codes.PermissionDenied)
}
