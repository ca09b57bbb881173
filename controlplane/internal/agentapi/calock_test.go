package agentapi_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cairnhq/cairn/certs"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// Run serves revocation polls, the reconcile tick, shutdown and the CA
// maintenance from one select loop, and maintainCA calls CA.MaybeRotate,
// which waits up to 30 s (lockTimeout) for the shared --ca-dir lock
// (and then renewServing may wait another 30 s in SignServingSVID). While
// another replica holds that lock (docs/security.md, "Running several
// replicas": "a stuck lock ... logs an error each tick and keeps serving
// what it has"), this replica polls no revocations for 30 s of every
// minute: a revoked agent keeps its streams (and its config) for up to
// half a minute instead of "within a second on every replica", and a
// shutdown waits as long. The test holds the CA directory's lock as a
// stuck replica would, waits for Run's first CA tick (a minute after
// start), then revokes an agent. It takes about 75 s.
func TestStuckCALockDelaysRevocation(t *testing.T) {
	e := start(t, options{})
	began := time.Now()
	// start's CA lives in <one of this test's temp dirs>/ca.
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(t.TempDir()), "*", "ca", "authority.json"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("CA directory: %v, %v", matches, err)
	}
	caDir := filepath.Dir(matches[0])
	a := e.enrollAgent(t, e.DP.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 65*time.Second+waitLimit)
	defer cancel()
	stream, _, err := watchFirst(ctx, agentv1.NewIdentityServiceClient(e.dialMTLS(t, a.Src)))
	if err != nil {
		t.Fatal(err)
	}

	// Another replica takes the CA directory's lock and is stuck.
	unlock, err := certs.LockDir(context.Background(), caDir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	time.Sleep(time.Until(began.Add(65 * time.Second))) // Run's CA tick came at 60 s

	if _, err := e.Store.RevokeAgent(context.Background(), admin, "", a.Resp.AgentId, "compromised"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	_, err = stream.Recv()
	t.Logf("stream ended %v after the revocation with %v", time.Since(revoked), err)
	wantCode(t, err, codes.PermissionDenied)
}
