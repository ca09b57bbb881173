package cairnctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
)

// fakeRollouts is a RolloutService that answers GetRollout with a script
// of rollouts (the last one repeats) and records every request.
type fakeRollouts struct {
	adminv1connect.UnimplementedRolloutServiceHandler
	mu     sync.Mutex
	script []*adminv1.Rollout
	gets   int
	reqs   []proto.Message
}

func (f *fakeRollouts) record(m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, m)
}

func (f *fakeRollouts) requests() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.reqs...)
}

func (f *fakeRollouts) GetRollout(_ context.Context, req *connect.Request[adminv1.GetRolloutRequest]) (*connect.Response[adminv1.GetRolloutResponse], error) {
	f.record(req.Msg)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.script) == 0 {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	r := f.script[min(f.gets, len(f.script)-1)]
	f.gets++
	return connect.NewResponse(&adminv1.GetRolloutResponse{Rollout: r}), nil
}

func (f *fakeRollouts) StartRollout(_ context.Context, req *connect.Request[adminv1.StartRolloutRequest]) (*connect.Response[adminv1.StartRolloutResponse], error) {
	f.record(req.Msg)
	r := fixture(adminv1.RolloutState_ROLLOUT_STATE_RUNNING, "", 0, &adminv1.RolloutCounts{Pending: 1})
	r.Spec = req.Msg.Spec
	return connect.NewResponse(&adminv1.StartRolloutResponse{Rollout: r}), nil
}

func (f *fakeRollouts) UpdateRolloutPolicy(_ context.Context, req *connect.Request[adminv1.UpdateRolloutPolicyRequest]) (*connect.Response[adminv1.UpdateRolloutPolicyResponse], error) {
	f.record(req.Msg)
	return connect.NewResponse(&adminv1.UpdateRolloutPolicyResponse{Rollout: fixture(adminv1.RolloutState_ROLLOUT_STATE_RUNNING, "", 0,
		&adminv1.RolloutCounts{Pending: 1})}), nil
}

func (f *fakeRollouts) ListRolloutClusters(_ context.Context, req *connect.Request[adminv1.ListRolloutClustersRequest]) (*connect.Response[adminv1.ListRolloutClustersResponse], error) {
	f.record(req.Msg)
	return connect.NewResponse(&adminv1.ListRolloutClustersResponse{}), nil
}

func serveFake(t *testing.T, f *fakeRollouts) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(adminv1connect.NewRolloutServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// runCtl runs cairnctl against url and returns its exit code and output.
func runCtl(ctx context.Context, url string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if k == "CAIRN_TOKEN" {
			return "t0ken"
		}
		return ""
	}
	code = Run(ctx, append([]string{"--server", url}, args...), getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrorsSendNothing(t *testing.T) {
	f := &fakeRollouts{}
	url := serveFake(t, f)
	for _, args := range [][]string{
		{"rollout"},
		{"rollout", "launch"},
		{"rollout", "start", "--product", "kafka", "--version", "1.1.0"},
		{"rollout", "start", "--product", "kafka", "--version", "1.1.0", "--shape", "linear", "--batch-size", "1", "--failure-budget", "lots"},
		{"rollout", "preview", "--product", "kafka", "--version", "1.1.0", "--shape", "custom", "--sizes", "1,x"},
		{"rollout", "status"},
		{"rollout", "status", "r-1", "r-2"},
		{"rollout", "status", "r-1", "--interval", "1s"},
		{"rollout", "status", "r-1", "--watch", "--interval", "1ms"},
		{"rollout", "list", "--state", "stuck"},
		{"rollout", "clusters", "r-1", "--state", "gone"},
		{"rollout", "clusters", "r-1", "--wave", "0"},
		{"rollout", "pause", "r-1"},
		{"rollout", "pause", "r-1", "--reason", "  "},
		{"rollout", "pause-all"},
		{"rollout", "expedite", "r-1"},
		{"rollout", "edit", "r-1"},
		{"rollout", "edit", "r-1", "--concurrency", "-2"},
		{"rollout", "edit", "r-1", "--global-failure-budget", "200%"},
		{"exclusions", "create", "--scope", "region", "--id", "x", "--reason", "r", "--until", "1h"},
		{"exclusions", "create", "--scope", "cluster", "--id", "x", "--reason", "r", "--until", "soon"},
		{"exclusions", "create", "--scope", "cluster", "--id", "x", "--until", "1h"},
		{"exclusions", "create", "--scope", "cluster", "--reason", "r", "--until", "1h"},
		{"exclusions", "delete"},
		{"clusters", "list", "--query", "a=b", "--selector", "c=d"},
	} {
		code, _, stderr := runCtl(context.Background(), url, args...)
		if code != 2 {
			t.Errorf("cairnctl %s: exit %d; want 2\n%s", strings.Join(args, " "), code, stderr)
		}
	}
	if reqs := f.requests(); len(reqs) != 0 {
		t.Fatalf("usage errors sent %d requests; want none: %v", len(reqs), reqs)
	}
}

func TestHelpExitsZero(t *testing.T) {
	code, _, stderr := runCtl(context.Background(), "http://127.0.0.1:1", "rollout", "start", "-h")
	if code != 0 || !strings.Contains(stderr, "usage: cairnctl rollout start [flags]") || !strings.Contains(stderr, "-failure-budget") {
		t.Fatalf("rollout start -h: exit %d; want 0 with the flags\n%s", code, stderr)
	}
}

func TestStartSendsSpec(t *testing.T) {
	f := &fakeRollouts{}
	url := serveFake(t, f)
	code, out, stderr := runCtl(context.Background(), url, "rollout", "start", "--product", "kafka", "--version", "1.1.0",
		"--shape", "linear", "--batch-size", "2", "--failure-budget", "10%")
	if code != 0 || !strings.HasPrefix(out, "rollout r-1 started: kafka 1.1.0, every kafka cluster; 1 cluster in 1 wave") {
		t.Fatalf("exit %d, output %q; want 0 and the summary\n%s", code, out, stderr)
	}
	want := &adminv1.StartRolloutRequest{Spec: &adminv1.RolloutSpec{Product: "kafka", TargetVersion: "1.1.0", Shape: linear(2),
		Policy: &adminv1.RolloutPolicy{FailureBudget: percent(10)}}}
	if diff := cmp.Diff([]proto.Message{want}, f.requests(), protocmp.Transform()); diff != "" {
		t.Fatalf("requests (-want +got):\n%s", diff)
	}
}

func TestEditAndClustersRequests(t *testing.T) {
	f := &fakeRollouts{}
	url := serveFake(t, f)
	if code, _, stderr := runCtl(context.Background(), url, "rollout", "edit", "r-1", "--concurrency", "0", "--global-failure-budget", "3"); code != 0 {
		t.Fatalf("edit: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCtl(context.Background(), url, "rollout", "clusters", "--state", "failed,verifying", "r-1", "--wave", "2"); code != 0 {
		t.Fatalf("clusters: exit %d\n%s", code, stderr)
	}
	zero, index := int32(0), int32(1)
	want := []proto.Message{
		&adminv1.UpdateRolloutPolicyRequest{Id: "r-1", Concurrency: &zero, GlobalFailureBudget: count(3)},
		&adminv1.ListRolloutClustersRequest{RolloutId: "r-1", PageSize: 1000, Wave: &index, States: []adminv1.RolloutClusterState{
			adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_FAILED, adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_VERIFYING}},
	}
	if diff := cmp.Diff(want, f.requests(), protocmp.Transform()); diff != "" {
		t.Fatalf("requests (-want +got):\n%s", diff)
	}
}

func TestWatch(t *testing.T) {
	type rc = adminv1.RolloutCounts
	running := fixture(adminv1.RolloutState_ROLLOUT_STATE_RUNNING, "", 0, &rc{Dispatched: 1}, &rc{Pending: 2}, &rc{Pending: 2})
	paused := fixture(adminv1.RolloutState_ROLLOUT_STATE_PAUSED, "wave 0 failure budget exceeded", 0, &rc{Failed: 1}, &rc{Pending: 2}, &rc{Pending: 2})
	completed := fixture(adminv1.RolloutState_ROLLOUT_STATE_COMPLETED, "done", 3, &rc{Failed: 1}, &rc{Succeeded: 2}, &rc{Succeeded: 2})
	cancelled := fixture(adminv1.RolloutState_ROLLOUT_STATE_CANCELLED, "customer asked", 1, &rc{Succeeded: 1}, &rc{Skipped: 2}, &rc{Skipped: 2})
	for _, tc := range []struct {
		name       string
		script     []*adminv1.Rollout
		args       []string
		wantCode   int
		wantBlocks int    // status blocks (or JSON lines) printed
		wantErr    string // in stderr
	}{
		{"completes after a pause", []*adminv1.Rollout{running, paused, running, completed}, nil, 0, 4, ""},
		{"cancelled", []*adminv1.Rollout{running, cancelled}, nil, 1, 2, "rollout r-1 was cancelled: customer asked"},
		{"already completed", []*adminv1.Rollout{completed}, nil, 0, 1, ""},
		{"json lines", []*adminv1.Rollout{paused, completed}, []string{"--json"}, 0, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := serveFake(t, &fakeRollouts{script: tc.script})
			args := append([]string{"rollout", "status", "r-1", "--watch", "--interval", "100ms"}, tc.args...)
			code, out, stderr := runCtl(context.Background(), url, args...)
			if code != tc.wantCode || !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tc.wantCode, tc.wantErr)
			}
			if strings.Contains(out, "\x1b") {
				t.Fatalf("ANSI escapes in output that is not a terminal: %q", out)
			}
			blocks := strings.Count(out, "Rollout:   r-1\n")
			if len(tc.args) > 0 {
				blocks = 0
				for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
					var m map[string]any
					if err := json.Unmarshal([]byte(l), &m); err != nil || m["rollout"] == nil {
						t.Fatalf("JSON line %q: %v", l, err)
					}
					blocks++
				}
			}
			if blocks != tc.wantBlocks {
				t.Fatalf("%d blocks; want %d:\n%s", blocks, tc.wantBlocks, out)
			}
		})
	}
}

func TestWatchRedrawsOnATerminal(t *testing.T) {
	f := &fakeRollouts{script: []*adminv1.Rollout{
		fixture(adminv1.RolloutState_ROLLOUT_STATE_RUNNING, "", 0, &adminv1.RolloutCounts{Dispatched: 1}),
		fixture(adminv1.RolloutState_ROLLOUT_STATE_COMPLETED, "", 1, &adminv1.RolloutCounts{Succeeded: 1}),
	}}
	url := serveFake(t, f)
	var out, errOut bytes.Buffer
	c := &client{rollouts: adminv1connect.NewRolloutServiceClient(http.DefaultClient, url), out: &out, tty: true, now: time.Now}
	if code := c.run(context.Background(), []string{"rollout", "status", "r-1", "--watch", "--interval", "100ms"}, &errOut, func() {}); code != 0 {
		t.Fatalf("exit %d; want 0\n%s", code, errOut.String())
	}
	if n := strings.Count(out.String(), clearScreen); n != 2 {
		t.Fatalf("%d redraws; want 2:\n%q", n, out.String())
	}
}

func TestWatchInterrupted(t *testing.T) {
	f := &fakeRollouts{script: []*adminv1.Rollout{
		fixture(adminv1.RolloutState_ROLLOUT_STATE_PAUSED, "by hand", 0, &adminv1.RolloutCounts{Pending: 1})}}
	url := serveFake(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code int
		out  string
	}
	done := make(chan result)
	go func() {
		code, out, _ := runCtl(ctx, url, "rollout", "status", "r-1", "--watch", "--interval", "100ms")
		done <- result{code, out}
	}()
	// A paused rollout is watched on: wait for a few polls, then interrupt.
	for {
		f.mu.Lock()
		gets := f.gets
		f.mu.Unlock()
		if gets >= 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	res := <-done
	if res.code != 130 {
		t.Fatalf("exit %d; want 130", res.code)
	}
	if !strings.Contains(res.out, "State:     paused: by hand") {
		t.Fatalf("output:\n%s", res.out)
	}
}

func TestWatchStopsOnNotFound(t *testing.T) {
	url := serveFake(t, &fakeRollouts{})
	code, _, stderr := runCtl(context.Background(), url, "rollout", "status", "r-9", "--watch")
	if code != 1 || !strings.Contains(stderr, "not_found") {
		t.Fatalf("exit %d, stderr %q; want 1 and not_found", code, stderr)
	}
}
