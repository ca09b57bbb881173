package e2e

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// fleetDeadline bounds every wait of the fleet tests: generous, for a
// loaded two-core machine; nothing is asserted about how fast things are.
const fleetDeadline = time.Minute

// pollUntil polls cond until it holds, failing after d with the last
// state cond described.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, d, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cpFlag is the value of a flag the control plane was started with.
func cpFlag(t *testing.T, cp *agentCP, name string) string {
	t.Helper()
	args := cp.p.cmd.Args
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("control plane started without %s", name)
	}
	return args[i+1]
}

// restartControlPlane starts the control plane again, after cp.stop, with the
// arguments and environment of the previous run: the same data directory,
// database, CA, signing keys, token file and ports.
func restartControlPlane(t *testing.T, cp *agentCP) {
	t.Helper()
	var env []string
	for _, e := range cp.p.cmd.Env {
		if strings.HasPrefix(e, "CAIRN_") {
			env = append(env, e)
		}
	}
	cp.p = start(t, binaries(t), env, cp.p.cmd.Args[1:]...)
	waitReady(t, cp.p, http.DefaultClient, "http://"+cpFlag(t, cp, "--admin-addr"))
}

// cpMetric reads the control plane's admin /metrics and returns the sum of
// the samples of the metric name, and whether it was there at all.
func cpMetric(t *testing.T, cp *agentCP, name string) (value float64, found bool) {
	t.Helper()
	resp, err := http.Get("http://" + cpFlag(t, cp, "--admin-addr") + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if !strings.HasPrefix(rest, " ") && !strings.HasPrefix(rest, "{") {
			continue // a longer name with this prefix
		}
		fields := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(fields) == 0 {
			t.Fatalf("/metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			t.Fatalf("/metrics: %q: %v", line, err)
		}
		value += v
		found = true
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return value, found
}

// snapshotBytesMetric is the control plane's counter of snapshot bytes
// sent on config streams.
const snapshotBytesMetric = "cairn_agent_stream_snapshot_bytes_total"

// streamMetricsServed reports whether the admin /metrics carries the agent
// API's config stream metrics at all: registered counters are exposed even
// at zero, so their absence means they are not served there.
func streamMetricsServed(t *testing.T, cp *agentCP) bool {
	t.Helper()
	_, found := cpMetric(t, cp, snapshotBytesMetric)
	return found
}

// localClients are clients of an agent's local API on its Unix socket
// (<data-dir>/agent.sock). The connection follows the socket across
// restarts of the agent.
type localClients struct {
	config  agentv1.LocalConfigServiceClient
	metrics agentv1.LocalMetricsServiceClient
}

func dialLocalAPI(t *testing.T, dataDir string) localClients {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dataDir, "agent.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return localClients{config: agentv1.NewLocalConfigServiceClient(conn), metrics: agentv1.NewLocalMetricsServiceClient(conn)}
}

// list reads every document from the agent's local API.
func (l localClients) list() (*agentv1.ListDocumentsResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return l.config.ListDocuments(ctx, &agentv1.ListDocumentsRequest{})
}

// waitLocalRevision waits until the agent's local API serves revision rev
// and returns what it served, failing if the agent exits first.
func waitLocalRevision(t *testing.T, a *agentProc, l localClients, rev int64) *agentv1.ListDocumentsResponse {
	t.Helper()
	var got *agentv1.ListDocumentsResponse
	pollUntil(t, fleetDeadline, a.name+" serves revision "+strconv.FormatInt(rev, 10)+" on its local API", func() (bool, string) {
		if !a.running() {
			t.Fatalf("%s exited (%v):\n%s", a.name, a.err, a.out)
		}
		resp, err := l.list()
		if err != nil {
			return false, err.Error()
		}
		got = resp
		return resp.Revision == rev, "revision " + strconv.FormatInt(resp.Revision, 10)
	})
	return got
}

// localDoc finds a document in a local API answer by kind and name.
func localDoc(resp *agentv1.ListDocumentsResponse, kind, name string) *agentv1.Document {
	for _, d := range resp.Documents {
		if d.Kind == kind && d.Name == name {
			return d
		}
	}
	return nil
}

// configWriter writes a data plane's config documents through the admin
// API and counts the data plane's head revision: the data plane starts
// with none, and every document write appends exactly one revision.
type configWriter struct {
	t    *testing.T
	ac   adminClients
	dp   string
	head int64
}

func newConfigWriter(t *testing.T, cp *agentCP) *configWriter {
	return &configWriter{t: t, ac: admin(t, cp), dp: cp.dataPlaneID}
}

func structOf(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (w *configWriter) create(kind, name string, content map[string]any) *adminv1.ConfigDocument {
	w.t.Helper()
	resp, err := w.ac.configs.CreateConfigDocument(context.Background(), connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
		Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: w.dp}},
		Kind:  kind, Name: name, Content: &adminv1.ConfigDocument_Structured{Structured: structOf(w.t, content)},
	}}))
	if err != nil {
		w.t.Fatalf("CreateConfigDocument %s/%s: %v", kind, name, err)
	}
	w.head++
	return resp.Msg.Document
}

func (w *configWriter) update(id string, content map[string]any) {
	w.t.Helper()
	if _, err := w.ac.configs.UpdateConfigDocument(context.Background(), connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
		Id: id, Content: &adminv1.UpdateConfigDocumentRequest_Structured{Structured: structOf(w.t, content)}})); err != nil {
		w.t.Fatalf("UpdateConfigDocument %s: %v", id, err)
	}
	w.head++
}

func (w *configWriter) delete(id string) {
	w.t.Helper()
	if _, err := w.ac.configs.DeleteConfigDocument(context.Background(), connect.NewRequest(&adminv1.DeleteConfigDocumentRequest{Id: id})); err != nil {
		w.t.Fatalf("DeleteConfigDocument %s: %v", id, err)
	}
	w.head++
}

// agentByID reads one agent through the admin API.
func (cp *agentCP) agentByID(t *testing.T, id string) *adminv1.Agent {
	t.Helper()
	resp, err := cp.agents.GetAgent(context.Background(), connect.NewRequest(&adminv1.GetAgentRequest{Id: id}))
	if err != nil {
		t.Fatalf("GetAgent %s: %v", id, err)
	}
	return resp.Msg.Agent
}

// agentIDsWhere returns the ids ListAgents answers for the data plane with
// the filters of req, sorted.
func (cp *agentCP) agentIDsWhere(t *testing.T, req *adminv1.ListAgentsRequest) []string {
	t.Helper()
	req.DataPlaneId, req.PageSize = cp.dataPlaneID, 1000
	resp, err := cp.agents.ListAgents(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	var ids []string
	for _, a := range resp.Msg.Agents {
		ids = append(ids, a.Id)
	}
	slices.Sort(ids)
	return ids
}

// metricPoints returns every point of the metric name the agent reported,
// oldest first, reading all pages.
func (cp *agentCP) metricPoints(t *testing.T, agentID, name string) []*adminv1.AgentMetricPoint {
	t.Helper()
	var out []*adminv1.AgentMetricPoint
	token := ""
	for {
		resp, err := cp.agents.ListAgentMetrics(context.Background(), connect.NewRequest(&adminv1.ListAgentMetricsRequest{
			AgentId: agentID, Name: name, PageSize: 1000, PageToken: token}))
		if err != nil {
			t.Fatalf("ListAgentMetrics %s: %v", name, err)
		}
		out = append(out, resp.Msg.Points...)
		if token = resp.Msg.NextPageToken; token == "" {
			return out
		}
	}
}

// statusCheck returns the named check of a reported status, or nil.
func statusCheck(st *adminv1.AgentStatus, name string) *adminv1.AgentCheck {
	for _, c := range st.GetChecks() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// pushPoints pushes one point of name per label value i in [from, to)
// through the agent's LocalMetricsService, in batches.
func pushPoints(t *testing.T, l localClients, name string, from, to int) {
	t.Helper()
	const batch = 10
	for lo := from; lo < to; lo += batch {
		var points []*agentv1.MetricPoint
		for i := lo; i < min(lo+batch, to); i++ {
			points = append(points, &agentv1.MetricPoint{Name: name, Labels: map[string]string{"i": strconv.Itoa(i)}, Value: float64(i)})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := l.metrics.Push(ctx, &agentv1.PushRequest{Source: "e2e", Points: points})
		cancel()
		if err != nil {
			t.Fatalf("Push points %d..%d: %v", lo, lo+len(points)-1, err)
		}
		if int(resp.Accepted) != len(points) {
			t.Fatalf("Push accepted %d of %d points", resp.Accepted, len(points))
		}
	}
}

// labelCounts counts the points per value of label "i".
func labelCounts(points []*adminv1.AgentMetricPoint) map[string]int {
	n := map[string]int{}
	for _, p := range points {
		n[p.Labels["i"]]++
	}
	return n
}

// exactlyOnce checks that points hold each label value in [0, n) exactly
// once and nothing else, and describes what is wrong otherwise.
func exactlyOnce(points []*adminv1.AgentMetricPoint, n int) error {
	counts := labelCounts(points)
	var bad []string
	for i := range n {
		if c := counts[strconv.Itoa(i)]; c != 1 {
			bad = append(bad, "i="+strconv.Itoa(i)+" "+strconv.Itoa(c)+" times")
		}
	}
	if len(points) != n {
		bad = append(bad, strconv.Itoa(len(points))+" points in all")
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, ", "))
	}
	return nil
}
