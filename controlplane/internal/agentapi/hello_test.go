package agentapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cairnhq/cairn/certs/sign"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// A config stream's handler waits in Recv, for the Hello and then for
// Acks, which only the gRPC stream's own end unblocks; the context that
// revocation and shutdown cancel (streamAuth's wrapped context) is not
// consulted there. So a revocation ends the stream by closing the agent's
// connection, also for a stream admitted that has not sent its Hello yet
// (it once survived the revocation, held its admission and made shutdown
// sit out GracefulStop's 10 s fallback). The agent sees its stream end
// and every later call refused.
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
	wantCode(t, err, codes.Unavailable) // the connection closed
	stream, err = agentv1.NewConfigServiceClient(e.dialMTLS(t, a.Src)).Stream(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.PermissionDenied)
}

// TestRevocationEndsConfigStream: a revoked agent's config stream ends
// (its connection closed) within the revocation poll, and its next stream
// is refused.
func TestRevocationEndsConfigStream(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	c := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, ver)
	if _, typ := c.next(); typ != sign.KeySetPayloadType {
		t.Fatalf("first message %s; want the key set", typ)
	}
	if _, err := e.Store.RevokeAgent(context.Background(), admin, "", a.Resp.AgentId, "compromised"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err := c.stream.Recv()
	t.Logf("stream ended %v after the revocation with %v", time.Since(began), err)
	wantCode(t, err, codes.Unavailable)
	waitFor(t, "the stream's handler to return", func() bool { return e.Server.OpenStreams() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	stream, err := agentv1.NewConfigServiceClient(e.dialMTLS(t, a.Src)).Stream(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.PermissionDenied)
}
