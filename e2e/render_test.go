package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
)

// adminClients are admin API clients for a control plane started by
// startAgentCP, which does not keep its admin address or token: they are
// read back from its command line and token file.
type adminClients struct {
	configs  adminv1connect.ConfigServiceClient
	clusters adminv1connect.ClusterServiceClient
	releases adminv1connect.ReleaseServiceClient
}

func admin(t *testing.T, cp *agentCP) adminClients {
	t.Helper()
	args := cp.p.cmd.Args
	flagValue := func(name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("control plane started without %s", name)
		}
		return args[i+1]
	}
	b, err := os.ReadFile(flagValue("--bootstrap-token-file"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	bearer := withToken(tok)
	base := "http://" + flagValue("--admin-addr")
	return adminClients{
		configs:  adminv1connect.NewConfigServiceClient(http.DefaultClient, base, bearer),
		clusters: adminv1connect.NewClusterServiceClient(http.DefaultClient, base, bearer),
		releases: adminv1connect.NewReleaseServiceClient(http.DefaultClient, base, bearer),
	}
}

// waitFile polls until cond holds for path's content (nil when the file
// does not exist), failing if the agent exits or after d.
func waitFile(t *testing.T, a *agentProc, path, what string, d time.Duration, cond func(content []byte) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			b = nil
		}
		if cond(b) {
			return
		}
		if !a.running() {
			t.Fatalf("%s exited (%v) before %s:\n%s", a.name, a.err, what, a.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; %s holds %q:\n%s", what, d, path, b, a.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reloads counts the lines the test's reload command appended.
func reloads(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// TestAgentRendersFiles runs cairn-agent with --render rules and a reload
// command against the real control plane: documents become files, changes
// replace them and run the reload, a deleted document takes its file
// away, and a restarted agent renders its cache while the control plane
// is down.
func TestAgentRendersFiles(t *testing.T) {
	cp := startAgentCP(t, "")
	ac := admin(t, cp)
	ctx := context.Background()

	cl, err := ac.clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
		DataPlaneId: cp.dataPlaneID, Name: "db1"}}))
	if err != nil {
		t.Fatalf("CreateCluster: %v", err)
	}
	port, err := structpb.NewStruct(map[string]any{"port": 443})
	if err != nil {
		t.Fatal(err)
	}
	ingress, err := ac.configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: cp.dataPlaneID}},
		Kind:  "cairn.dev/ingress", Name: "main", Content: &adminv1.ConfigDocument_Structured{Structured: port},
	}}))
	if err != nil {
		t.Fatalf("CreateConfigDocument: %v", err)
	}
	motd, err := ac.configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_ClusterId{ClusterId: cl.Msg.Cluster.Id}},
		Kind:  "cairn.dev/motd", Name: "hello",
		Content: &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: []byte("welcome to db1\n"), MediaType: "text/plain"}},
	}}))
	if err != nil {
		t.Fatalf("CreateConfigDocument: %v", err)
	}

	out := t.TempDir()
	ingressPath, motdPath := filepath.Join(out, "ingress.json"), filepath.Join(out, "motd", "db1.txt")
	counter := filepath.Join(t.TempDir(), "reloads")
	reloadJSON, err := json.Marshal([]string{"/bin/sh", "-c", `echo reloaded >> "$0"`, counter})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--render", "cairn.dev/ingress/main=" + ingressPath + ":0640",
		"--render", "cairn.dev/motd/hello@" + cl.Msg.Cluster.Id + "=" + motdPath,
		"--reload-command", string(reloadJSON),
	}
	dataDir := filepath.Join(t.TempDir(), "agent")
	a := startAgent(t, cp, "agent", agentOpts{dataDir: dataDir, token: cp.joinToken(t), pin: cp.pin, extraArgs: args})

	jsonIs := func(want map[string]any) func([]byte) bool {
		return func(b []byte) bool {
			var got map[string]any
			return json.Unmarshal(b, &got) == nil && reflect.DeepEqual(got, want)
		}
	}
	waitFile(t, a, ingressPath, "the structured document rendered", time.Minute, jsonIs(map[string]any{"port": 443.0}))
	waitFile(t, a, motdPath, "the cluster's raw document rendered", time.Minute, func(b []byte) bool { return string(b) == "welcome to db1\n" })
	if fi, err := os.Stat(ingressPath); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("ingress.json: %v, mode %v; want 0640", err, fi.Mode().Perm())
	}
	a.waitLog(t, "reload command ran", 30*time.Second)
	before := reloads(counter)

	port.Fields["port"] = structpb.NewNumberValue(8443)
	if _, err := ac.configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
		Id: ingress.Msg.Document.Id, Content: &adminv1.UpdateConfigDocumentRequest_Structured{Structured: port}})); err != nil {
		t.Fatalf("UpdateConfigDocument: %v", err)
	}
	waitFile(t, a, ingressPath, "the update rendered", time.Minute, jsonIs(map[string]any{"port": 8443.0}))
	waitFile(t, a, counter, "a reload after the update", 30*time.Second, func([]byte) bool { return reloads(counter) > before })

	if _, err := ac.configs.DeleteConfigDocument(ctx, connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: motd.Msg.Document.Id})); err != nil {
		t.Fatalf("DeleteConfigDocument: %v", err)
	}
	waitFile(t, a, motdPath, "the deleted document's file removed", time.Minute, func(b []byte) bool { return b == nil })
	a.waitLog(t, "removed rendered file: its document is gone", 10*time.Second)

	// With the control plane down, a restarted agent renders from its cache.
	if code := a.interrupt(t); code != 0 {
		t.Fatalf("agent exit code %d after SIGINT; want 0", code)
	}
	cp.stop(t)
	if err := os.Remove(ingressPath); err != nil {
		t.Fatal(err)
	}
	a = startAgent(t, cp, "agent restarted", agentOpts{dataDir: dataDir, extraArgs: args})
	waitFile(t, a, ingressPath, "the cache rendered without a control plane", time.Minute, jsonIs(map[string]any{"port": 8443.0}))
	if _, err := os.Stat(motdPath); err == nil {
		t.Fatal("the deleted document's file came back")
	}
	if code := a.interrupt(t); code != 0 {
		t.Fatalf("agent exit code %d after SIGINT; want 0", code)
	}
	if strings.Contains(a.out.String(), `"level":"ERROR"`) {
		t.Errorf("agent logged errors:\n%s", a.out)
	}
}
