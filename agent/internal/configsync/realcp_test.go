package configsync_test

// A real control plane for the tamper test: cairn-controlplane built from
// this module and run as a process on embedded SQLite, driven through its
// admin API, with agents enrolled by agent/internal/identity and config
// streams run by the real Syncer over real mTLS. Agent code must not import
// control-plane code, so the process is the only way to get the control
// plane's envelopes here; what it streams is recorded for tamper_test.go.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/agent/internal/identity"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// realTimeout bounds each wait on the control plane process: start, a
// stream reaching what the test waits for (a heartbeat comes every 10s),
// shutdown.
const realTimeout = 90 * time.Second

// buildControlPlane builds cairn-controlplane into a temporary directory
// and returns the binary's path.
func buildControlPlane(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/cairnhq/cairn/cmd/cairn-controlplane").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build cairn-controlplane: %v\n%s", err, out)
	}
	return filepath.Join(dir, "cairn-controlplane")
}

// lockedBuffer collects a process's output; safe to read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// realCP is one cairn-controlplane process: plaintext admin API, agent API
// with its own CA and signing keys, SQLite in dir.
type realCP struct {
	name      string
	dir       string
	adminAddr string
	agentAddr string
	cmd       *exec.Cmd
	out       *lockedBuffer
	done      chan struct{} // closed when the process has exited
	conn      *grpc.ClientConn
	token     string
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startRealCP starts the control plane on dir (created or reused: the
// SQLite database, CA, signing keys and bootstrap token all live there)
// and waits until it is ready.
func startRealCP(tb testing.TB, bin, name, dir string) *realCP {
	tb.Helper()
	cp := launchRealCP(tb, bin, name, dir)
	cp.waitReady(tb)
	return cp
}

// launchRealCP starts the control plane on dir without waiting for it.
func launchRealCP(tb testing.TB, bin, name, dir string) *realCP {
	tb.Helper()
	cp := &realCP{name: name, dir: dir, adminAddr: freeAddr(tb), agentAddr: freeAddr(tb), out: &lockedBuffer{}, done: make(chan struct{})}
	cp.cmd = exec.Command(bin,
		"--insecure", "--admin-addr", cp.adminAddr, "--agent-addr", cp.agentAddr, "--data-dir", dir,
		"--trust-domain", "tamper.test", "--bootstrap-token-file", filepath.Join(dir, "admin.token"),
		"--log-format", "text")
	cp.cmd.Stdout, cp.cmd.Stderr = cp.out, cp.out
	if err := cp.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cp.cmd.Wait()
		close(cp.done)
	}()
	tb.Cleanup(func() {
		_ = cp.cmd.Process.Kill()
		<-cp.done
		if tb.Failed() {
			out := cp.out.String()
			if len(out) > 4096 {
				out = "…" + out[len(out)-4096:]
			}
			tb.Logf("%s output:\n%s", name, out)
		}
	})
	return cp
}

// waitReady waits until the control plane answers /readyz and connects
// the admin client.
func (cp *realCP) waitReady(tb testing.TB) {
	tb.Helper()
	name, dir := cp.name, cp.dir
	// No keep-alive: an idle connection would outlive the test (goleak).
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(realTimeout)
	for {
		resp, err := client.Get("http://" + cp.adminAddr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-cp.done:
			tb.Fatalf("%s exited before it was ready:\n%s", name, cp.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not ready within %v:\n%s", name, realTimeout, cp.out)
		}
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	cp.token = strings.TrimSpace(string(tok))
	conn, err := grpc.NewClient(cp.adminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	cp.conn = conn
	tb.Cleanup(func() { _ = conn.Close() })
}

// stop stops the process with SIGINT and waits for a clean exit, so that
// its directory can be copied.
func (cp *realCP) stop(tb testing.TB) {
	tb.Helper()
	_ = cp.conn.Close()
	if err := cp.cmd.Process.Signal(syscall.SIGINT); err != nil {
		tb.Fatalf("stop %s: %v", cp.name, err)
	}
	select {
	case <-cp.done:
		if !cp.cmd.ProcessState.Success() {
			tb.Fatalf("%s exited with %v after SIGINT:\n%s", cp.name, cp.cmd.ProcessState, cp.out)
		}
	case <-time.After(realTimeout):
		tb.Fatalf("%s did not stop within %v of SIGINT", cp.name, realTimeout)
	}
}

// ctx carries the bootstrap operator token.
func (cp *realCP) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+cp.token)
}

func (cp *realCP) createTenant(tb testing.TB, name string) string {
	tb.Helper()
	resp, err := adminv1.NewTenantServiceClient(cp.conn).CreateTenant(cp.ctx(), &adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: name}})
	if err != nil {
		tb.Fatalf("CreateTenant: %v", err)
	}
	return resp.Tenant.Id
}

func (cp *realCP) createDataPlane(tb testing.TB, tenantID, name string) string {
	tb.Helper()
	resp, err := adminv1.NewDataPlaneServiceClient(cp.conn).CreateDataPlane(cp.ctx(), &adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
		TenantId: tenantID, Name: name, Region: "eu-west-1", Cloud: adminv1.Cloud_CLOUD_GCP,
	}})
	if err != nil {
		tb.Fatalf("CreateDataPlane: %v", err)
	}
	return resp.DataPlane.Id
}

// pin returns the agent CA's pin for enrollment.
func (cp *realCP) pin(tb testing.TB) string {
	tb.Helper()
	resp, err := adminv1.NewAgentServiceClient(cp.conn).GetTrustBundle(cp.ctx(), &adminv1.GetTrustBundleRequest{})
	if err != nil || len(resp.Pins) == 0 {
		tb.Fatalf("GetTrustBundle: %v, %v", resp, err)
	}
	return resp.Pins[0]
}

// enroll makes a join token for the data plane and enrolls an agent with
// it, as the daemon does, persisting its identity in dir.
func (cp *realCP) enroll(tb testing.TB, dataPlaneID, dir string) *identity.Source {
	tb.Helper()
	tok, err := adminv1.NewAgentServiceClient(cp.conn).CreateJoinToken(cp.ctx(), &adminv1.CreateJoinTokenRequest{DataPlaneId: dataPlaneID})
	if err != nil {
		tb.Fatalf("CreateJoinToken: %v", err)
	}
	cfg := identity.EnrollConfig{Addr: cp.agentAddr, Dir: dir, JoinToken: tok.JoinToken, Trust: identity.Trust{Pin: cp.pin(tb)}, Version: "tamper-test"}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), realTimeout)
		src, err := identity.Enroll(ctx, cfg)
		cancel()
		if err == nil {
			if src.Info().DataPlaneID != dataPlaneID || len(src.SigningRoot()) == 0 {
				tb.Fatalf("enrolled into data plane %q with signing root %x; want %q and a root", src.Info().DataPlaneID, src.SigningRoot(), dataPlaneID)
			}
			return src
		}
		if status.Code(err) != codes.Unavailable || attempt == 20 {
			tb.Fatalf("enroll: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// putStructured creates a structured document in the data plane and
// returns its id.
func (cp *realCP) putStructured(tb testing.TB, dataPlaneID, kind, name string, content map[string]any) string {
	tb.Helper()
	s, err := structpb.NewStruct(content)
	if err != nil {
		tb.Fatal(err)
	}
	return cp.create(tb, &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: dataPlaneID}},
		Kind:  kind, Name: name, Labels: map[string]string{"test": "tamper"},
		Content: &adminv1.ConfigDocument_Structured{Structured: s},
	})
}

// putRaw creates a raw document in the data plane and returns its id.
func (cp *realCP) putRaw(tb testing.TB, dataPlaneID, kind, name, mediaType, data string) string {
	tb.Helper()
	return cp.create(tb, &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: dataPlaneID}},
		Kind:  kind, Name: name,
		Content: &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: []byte(data), MediaType: mediaType}},
	})
}

func (cp *realCP) create(tb testing.TB, doc *adminv1.ConfigDocument) string {
	tb.Helper()
	resp, err := adminv1.NewConfigServiceClient(cp.conn).CreateConfigDocument(cp.ctx(), &adminv1.CreateConfigDocumentRequest{Document: doc})
	if err != nil {
		tb.Fatalf("CreateConfigDocument %s: %v", doc.Name, err)
	}
	return resp.Document.Id
}

func (cp *realCP) update(tb testing.TB, id string, content map[string]any) {
	tb.Helper()
	s, err := structpb.NewStruct(content)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := adminv1.NewConfigServiceClient(cp.conn).UpdateConfigDocument(cp.ctx(), &adminv1.UpdateConfigDocumentRequest{
		Id: id, Content: &adminv1.UpdateConfigDocumentRequest_Structured{Structured: s},
	}); err != nil {
		tb.Fatalf("UpdateConfigDocument %s: %v", id, err)
	}
}

func (cp *realCP) delete(tb testing.TB, id string) {
	tb.Helper()
	if _, err := adminv1.NewConfigServiceClient(cp.conn).DeleteConfigDocument(cp.ctx(), &adminv1.DeleteConfigDocumentRequest{Id: id}); err != nil {
		tb.Fatalf("DeleteConfigDocument %s: %v", id, err)
	}
}

// copyTree copies the files under src to dst, keeping their modes (the
// CA and signing keys are 0600).
func copyTree(tb testing.TB, src, dst string) {
	tb.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("copy %s: %v", src, err)
	}
}

// recordingStream is a config stream that keeps a copy of everything
// received and sent.
type recordingStream struct {
	agentv1.ConfigService_StreamClient
	mu   sync.Mutex
	recv []*agentv1.StreamResponse
	sent []*agentv1.StreamRequest
}

func (r *recordingStream) Recv() (*agentv1.StreamResponse, error) {
	m, err := r.ConfigService_StreamClient.Recv()
	if err == nil {
		r.mu.Lock()
		r.recv = append(r.recv, proto.CloneOf(m))
		r.mu.Unlock()
	}
	return m, err
}

func (r *recordingStream) Send(m *agentv1.StreamRequest) error {
	r.mu.Lock()
	r.sent = append(r.sent, proto.CloneOf(m))
	r.mu.Unlock()
	return r.ConfigService_StreamClient.Send(m)
}

func (r *recordingStream) received() []*agentv1.StreamResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*agentv1.StreamResponse(nil), r.recv...)
}

// recordSession runs one real Session of an agent with identity src and
// cache c against the control plane at addr, over mTLS, until done says
// the recording is complete; it returns what the control plane sent. The
// agent must have acknowledged every update.
func recordSession(tb testing.TB, src *identity.Source, addr string, c *cache.Cache, done func(c *cache.Cache, got []*agentv1.StreamResponse) bool) []*agentv1.StreamResponse {
	tb.Helper()
	s, err := configsync.New(configsync.Config{
		DataPlaneID: src.Info().DataPlaneID, Root: src.SigningRoot(), Cache: c, Logger: testLogger(tb),
	})
	if err != nil {
		tb.Fatalf("configsync.New: %v", err)
	}
	conn, err := src.Dial(addr)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := agentv1.NewConfigServiceClient(conn).Stream(ctx)
	if err != nil {
		tb.Fatalf("open config stream: %v", err)
	}
	rs := &recordingStream{ConfigService_StreamClient: stream}
	errc := make(chan error, 1)
	go func() { errc <- s.Session(ctx, rs) }()
	deadline := time.After(realTimeout)
	for !done(c, rs.received()) {
		select {
		case err := <-errc:
			tb.Fatalf("Session ended early: %v", err)
		case <-deadline:
			tb.Fatalf("recording incomplete after %v; cache %+v; got %d messages", realTimeout, c.State(), len(rs.received()))
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		tb.Fatalf("Session returned %v; want context.Canceled", err)
	}
	for _, m := range rs.sent {
		if n := m.GetNack(); n != nil {
			tb.Fatalf("the real agent refused a real update: %v", n)
		}
	}
	return rs.received()
}

// openCache opens a fresh cache file in a temporary directory.
func openCache(tb testing.TB) (*cache.Cache, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "cache.db")
	c, err := cache.Open(path)
	if err != nil {
		tb.Fatalf("cache.Open: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c, path
}

// recording is what real control planes streamed to real agents.
type recording struct {
	dp1, dp2 string
	root     ed25519.PublicKey // the signing root both agents enrolled with
	// main: data plane 1's stream from revision 0: the key set, deltas 1-5
	// (three puts, an update, a delete) and at least one heartbeat.
	main []*agentv1.StreamResponse
	// other: data plane 2's stream: the key set and deltas 1-2.
	other []*agentv1.StreamResponse
	// fork: data plane 1's stream from a control plane restored from a
	// backup taken before data plane 1 had config, which then took other
	// writes: the key set and deltas 1'-2', a history diverging from main.
	fork []*agentv1.StreamResponse
	// snapshot: what the real control plane sent the agent that had
	// followed fork when it came back: its state is not on the log, so a
	// reset, snapshot chunks and the end, at revision 5.
	snapshot []*agentv1.StreamResponse
	// foreign: the stream of an agent of another control plane (its own
	// signing root and data plane): its key set and delta 1.
	foreign     []*agentv1.StreamResponse
	foreignDP   string
	foreignRoot ed25519.PublicKey
}

// recordRealStreams runs the real control plane and agents and records
// their config streams:
//
//  1. a control plane makes a tenant with two data planes and enrolls an
//     agent in each, then stops;
//  2. its directory is copied: the copy is a backup from before any config;
//  3. the original and the backup run side by side and take different
//     config writes for data plane 1, so they share signing keys, CA,
//     agents and data plane ids but not history; a third control plane,
//     with its own directory, enrolls an agent of its own;
//  4. the agents stream from them (see recording's fields).
func recordRealStreams(t *testing.T) *recording {
	t.Helper()
	bin := buildControlPlane(t)
	dir, forkDir := filepath.Join(t.TempDir(), "cp"), filepath.Join(t.TempDir(), "cp-restored")

	setup := startRealCP(t, bin, "setup control plane", dir)
	tenant := setup.createTenant(t, "acme")
	rec := &recording{dp1: setup.createDataPlane(t, tenant, "edge-1"), dp2: setup.createDataPlane(t, tenant, "edge-2")}
	agent1 := setup.enroll(t, rec.dp1, filepath.Join(t.TempDir(), "agent1"))
	agent2 := setup.enroll(t, rec.dp2, filepath.Join(t.TempDir(), "agent2"))
	if !bytes.Equal(agent1.SigningRoot(), agent2.SigningRoot()) {
		t.Fatal("the two agents enrolled with different signing roots")
	}
	rec.root = agent1.SigningRoot()
	setup.stop(t)
	copyTree(t, dir, forkDir)

	cp := launchRealCP(t, bin, "control plane", dir)
	restored := launchRealCP(t, bin, "restored control plane", forkDir)
	foreign := launchRealCP(t, bin, "another control plane", filepath.Join(t.TempDir(), "cp-other"))
	cp.waitReady(t)
	restored.waitReady(t)
	foreign.waitReady(t)
	rec.foreignDP = foreign.createDataPlane(t, foreign.createTenant(t, "acme"), "edge-1")
	agent3 := foreign.enroll(t, rec.foreignDP, filepath.Join(t.TempDir(), "agent3"))
	rec.foreignRoot = agent3.SigningRoot()
	if bytes.Equal(rec.foreignRoot, rec.root) {
		t.Fatal("two control planes with their own data directories have the same signing root")
	}

	const kind = "cairn.dev/ingress"
	ingress := cp.putStructured(t, rec.dp1, kind, "ingress", map[string]any{"port": 443, "hosts": []any{"a.example.com"}})
	routes := cp.putRaw(t, rec.dp1, "cairn.dev/routes", "routes", "application/yaml", "routes:\n  - path: /api\n    backend: api\n")
	cp.update(t, ingress, map[string]any{"port": 8443, "hosts": []any{"a.example.com", "b.example.com"}})
	cp.delete(t, routes)
	cp.putStructured(t, rec.dp1, "cairn.dev/limits", "limits", map[string]any{"rps": 100})
	cp.putStructured(t, rec.dp2, kind, "ingress", map[string]any{"port": 80})
	cp.putRaw(t, rec.dp2, "cairn.dev/routes", "routes", "text/plain", "/ -> web")
	restored.putStructured(t, rec.dp1, kind, "ingress", map[string]any{"port": 9443})
	restored.putRaw(t, rec.dp1, "cairn.dev/canary", "canary", "application/json", `{"weight":5}`)
	foreign.putStructured(t, rec.foreignDP, kind, "ingress", map[string]any{"port": 443, "hosts": []any{"a.example.com"}})

	hasHeartbeat := func(got []*agentv1.StreamResponse) bool {
		for _, m := range got {
			if m.GetHeartbeat() != nil {
				return true
			}
		}
		return false
	}
	at := func(rev int64) func(*cache.Cache, []*agentv1.StreamResponse) bool {
		return func(c *cache.Cache, _ []*agentv1.StreamResponse) bool { return c.State().Revision == rev }
	}
	// Heartbeats come every 10s, so the streams are recorded side by side.
	t.Run("record", func(t *testing.T) {
		t.Run("main", func(t *testing.T) {
			t.Parallel()
			c, _ := openCache(t)
			rec.main = recordSession(t, agent1, cp.agentAddr, c, func(c *cache.Cache, got []*agentv1.StreamResponse) bool {
				return c.State().Revision == 5 && hasHeartbeat(got)
			})
		})
		t.Run("other", func(t *testing.T) {
			t.Parallel()
			c, _ := openCache(t)
			rec.other = recordSession(t, agent2, cp.agentAddr, c, at(2))
		})
		t.Run("foreign", func(t *testing.T) {
			t.Parallel()
			c, _ := openCache(t)
			rec.foreign = recordSession(t, agent3, foreign.agentAddr, c, at(1))
		})
		t.Run("fork then snapshot", func(t *testing.T) {
			t.Parallel()
			c, _ := openCache(t)
			rec.fork = recordSession(t, agent1, restored.agentAddr, c, at(2))
			forkState := c.State()
			rec.snapshot = recordSession(t, agent1, cp.agentAddr, c, at(5))
			if st := c.State(); st.StateHash == forkState.StateHash {
				t.Errorf("after the snapshot the state hash is still the fork's %s", st.StateHash)
			}
		})
	})
	if t.Failed() {
		t.FailNow()
	}
	cp.stop(t)
	restored.stop(t)
	foreign.stop(t)
	checkShape(t, "main", rec.main, "keyset", "delta", "delta", "delta", "delta", "delta", "heartbeat+")
	checkShape(t, "other", rec.other, "keyset", "delta", "delta")
	checkShape(t, "fork", rec.fork, "keyset", "delta", "delta")
	checkShape(t, "snapshot", rec.snapshot, "reset", "chunk+", "end")
	checkShape(t, "foreign", rec.foreign, "keyset", "delta")
	return rec
}

// kindOf names a stream message by its envelope's payload type.
func kindOf(m *agentv1.StreamResponse) string {
	switch {
	case m.GetKeySet() != nil:
		return "keyset"
	case m.GetHeartbeat() != nil:
		return "heartbeat"
	}
	switch m.GetUpdate().GetPayloadType() {
	case configsync.DeltaType:
		return "delta"
	case configsync.ResetType:
		return "reset"
	case configsync.SnapshotChunkType:
		return "chunk"
	case configsync.SnapshotEndType:
		return "end"
	}
	return "unknown"
}

// checkShape checks a recorded stream is the kinds in want, in order; a
// kind ending in "+" stands for one or more.
func checkShape(tb testing.TB, name string, got []*agentv1.StreamResponse, want ...string) {
	tb.Helper()
	var kinds []string
	for _, m := range got {
		kinds = append(kinds, kindOf(m))
	}
	i := 0
	for _, w := range want {
		k, many := strings.CutSuffix(w, "+")
		if i >= len(kinds) || kinds[i] != k {
			tb.Fatalf("%s stream: got %v; want %v", name, kinds, want)
		}
		for i++; many && i < len(kinds) && kinds[i] == k; i++ {
		}
	}
	if i != len(kinds) {
		tb.Fatalf("%s stream: got %v; want %v", name, kinds, want)
	}
}

// String is for failure messages.
func (r *recording) String() string {
	return fmt.Sprintf("main %d, other %d, fork %d, snapshot %d, foreign %d messages",
		len(r.main), len(r.other), len(r.fork), len(r.snapshot), len(r.foreign))
}
