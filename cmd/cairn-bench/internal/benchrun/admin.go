package benchrun

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
	"github.com/cairnhq/cairn/internal/wait"
)

// admin calls the control plane's admin API (Connect over plaintext HTTP,
// as --insecure serves it) with the bootstrap token.
type admin struct {
	tenants    adminv1connect.TenantServiceClient
	dataPlanes adminv1connect.DataPlaneServiceClient
	configs    adminv1connect.ConfigServiceClient
	agents     adminv1connect.AgentServiceClient
}

// callTimeout bounds each admin call; a loaded control plane answers
// slowly, but an answer that takes this long is a failure.
const callTimeout = 2 * time.Minute

func newAdmin(base, token string) *admin {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}}
	bearer := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
	return &admin{
		tenants:    adminv1connect.NewTenantServiceClient(client, base, bearer),
		dataPlanes: adminv1connect.NewDataPlaneServiceClient(client, base, bearer),
		configs:    adminv1connect.NewConfigServiceClient(client, base, bearer),
		agents:     adminv1connect.NewAgentServiceClient(client, base, bearer),
	}
}

func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

// setup creates the benchmark's tenant and data planes, one document in
// each (revision 1), and returns the CA pin.
func (a *admin) setup(ctx context.Context, names []string, value []byte) (dataPlanes, docs []string, pin string, err error) {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	tenant, err := a.tenants.CreateTenant(cctx, connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "bench"}}))
	if err != nil {
		return nil, nil, "", fmt.Errorf("create tenant: %w", err)
	}
	for _, name := range names {
		dp, err := a.dataPlanes.CreateDataPlane(cctx, connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{
			TenantId: tenant.Msg.Tenant.Id, Name: name, Region: "bench-1", Cloud: adminv1.Cloud_CLOUD_AWS,
		}}))
		if err != nil {
			return nil, nil, "", fmt.Errorf("create data plane %s: %w", name, err)
		}
		doc, err := a.configs.CreateConfigDocument(cctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
			Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: dp.Msg.DataPlane.Id}},
			Kind:  "cairn.dev/bench", Name: "value",
			Content: &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: value, MediaType: "text/plain"}},
		}}))
		if err != nil {
			return nil, nil, "", fmt.Errorf("create config document in %s: %w", name, err)
		}
		dataPlanes = append(dataPlanes, dp.Msg.DataPlane.Id)
		docs = append(docs, doc.Msg.Document.Id)
	}
	tb, err := a.agents.GetTrustBundle(cctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
	if err != nil {
		return nil, nil, "", fmt.Errorf("get trust bundle: %w", err)
	}
	if len(tb.Msg.Pins) == 0 {
		return nil, nil, "", fmt.Errorf("trust bundle without pins")
	}
	return dataPlanes, docs, tb.Msg.Pins[0], nil
}

// joinTokens creates n join tokens for a data plane, conc at a time.
func (a *admin) joinTokens(ctx context.Context, dataPlane string, n, conc int) ([]string, error) {
	tokens := make([]string, n)
	idx := make(chan int)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(conc, n) {
		wg.Go(func() {
			for i := range idx {
				cctx, ccancel := callCtx(ctx)
				resp, err := a.agents.CreateJoinToken(cctx, connect.NewRequest(&adminv1.CreateJoinTokenRequest{
					DataPlaneId: dataPlane, Ttl: durationpb.New(24 * time.Hour)}))
				ccancel()
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("create join token %d: %w", i, err); cancel() })
					continue
				}
				tokens[i] = resp.Msg.JoinToken
			}
		})
	}
feed:
	for i := range n {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return tokens, firstErr
}

// write replaces a document's content: one new revision of its data plane.
func (a *admin) write(ctx context.Context, doc string, value []byte) error {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	_, err := a.configs.UpdateConfigDocument(cctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
		Id: doc, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: &adminv1.RawContent{Data: value, MediaType: "text/plain"}}}))
	if err != nil {
		return fmt.Errorf("update config document: %w", err)
	}
	return nil
}

// behind reports whether the control plane still has an agent of the data
// plane that it has not recorded at revision rev (ListAgents
// behind_revision), and names one.
func (a *admin) behind(ctx context.Context, dataPlane string, rev int64) (bool, string, error) {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	resp, err := a.agents.ListAgents(cctx, connect.NewRequest(&adminv1.ListAgentsRequest{
		DataPlaneId: dataPlane, BehindRevision: rev, ActiveOnly: true, PageSize: 1}))
	if err != nil {
		return false, "", fmt.Errorf("list agents behind revision %d: %w", rev, err)
	}
	if len(resp.Msg.Agents) == 0 {
		return false, "", nil
	}
	ag := resp.Msg.Agents[0]
	return true, fmt.Sprintf("%s (sync %v)", ag.Id, strings.TrimSpace(fmt.Sprint(ag.GetSync()))), nil
}

// waitRecorded polls until the control plane has recorded every agent of
// the data plane at revision rev, and returns when it saw that.
func (a *admin) waitRecorded(ctx context.Context, dataPlane string, rev int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		some, which, err := a.behind(ctx, dataPlane, rev)
		if err != nil {
			return time.Time{}, err
		}
		if !some {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the control plane has not recorded every agent at revision %d after %v; e.g. %s", rev, timeout, which)
		}
		if err := wait.Sleep(ctx, ackPoll); err != nil {
			return time.Time{}, err
		}
	}
}

// ackPoll is how often waitRecorded asks; it starts only once every agent
// has applied, so it adds no load while the change fans out.
const ackPoll = 20 * time.Millisecond
