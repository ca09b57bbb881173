package cairnctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// minWatchInterval keeps a watch from hammering the API.
const minWatchInterval = 100 * time.Millisecond

// clearScreen moves the cursor home and clears the screen: a watch on a
// terminal redraws in place.
const clearScreen = "\x1b[H\x1b[2J"

func (c *client) print(s string) error {
	_, err := io.WriteString(c.out, s)
	return err
}

func (c *client) previewRollout(ctx context.Context, args []string, stderr io.Writer) error {
	var withClusters bool
	spec, err := c.specArgs("rollout preview", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&withClusters, "clusters", false, "list the planned clusters with their waves too")
	})
	if err != nil {
		return err
	}
	resp, err := c.rollouts.PreviewRollout(ctx, connect.NewRequest(&adminv1.PreviewRolloutRequest{Spec: spec}))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	return c.print(renderPreview(resp.Msg, withClusters))
}

func (c *client) startRollout(ctx context.Context, args []string, stderr io.Writer) error {
	spec, err := c.specArgs("rollout start", args, stderr, nil)
	if err != nil {
		return err
	}
	resp, err := c.rollouts.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: spec}))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	fmt.Fprintf(stderr, "follow it: cairnctl rollout status %s --watch\n", resp.Msg.Rollout.GetId())
	return c.print(renderStarted(resp.Msg))
}

// rolloutStatus shows a rollout once, or with --watch until it ends:
// exit 0 once it completed, 1 if it was cancelled. A paused rollout is
// watched on (an operator may resume it).
func (c *client) rolloutStatus(ctx context.Context, args []string, stderr io.Writer) error {
	var watch bool
	var interval time.Duration
	p, err := c.flags("rollout status", args, stderr, []string{"ID"}, func(fs *flag.FlagSet) {
		fs.BoolVar(&watch, "watch", false, "redraw every --interval until the rollout completes (exit 0) or is cancelled (exit 1)")
		fs.DurationVar(&interval, "interval", 2*time.Second, "how often --watch asks")
	})
	if err != nil {
		return err
	}
	if interval < minWatchInterval {
		return usageError{fmt.Errorf("rollout status: --interval must be at least %v", minWatchInterval)}
	}
	if p.set["interval"] && !watch {
		return usageError{errors.New("rollout status: --interval needs --watch")}
	}
	id := p.args[0]
	if !watch {
		resp, err := c.rollouts.GetRollout(ctx, connect.NewRequest(&adminv1.GetRolloutRequest{Id: id}))
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(resp.Msg)
		}
		return c.print(renderStatus(resp.Msg.Rollout, c.now()))
	}
	return c.watch(ctx, id, interval, stderr)
}

// watch polls a rollout every interval and shows it: redrawn in place on a
// terminal, else as a new block (or JSON line) each time.
func (c *client) watch(ctx context.Context, id string, interval time.Duration, stderr io.Writer) error {
	for first := true; ; first = false {
		resp, err := c.rollouts.GetRollout(ctx, connect.NewRequest(&adminv1.GetRolloutRequest{Id: id}))
		switch {
		case ctx.Err() != nil:
			return exitError{code: 130}
		case err != nil && connect.CodeOf(err) == connect.CodeUnavailable && !first:
			// The control plane restarting or a replica going away is no
			// reason to stop watching.
			fmt.Fprintln(stderr, "cairnctl:", err, "(retrying)")
		case err != nil:
			return err
		default:
			if err := c.showWatched(resp.Msg, interval, first); err != nil {
				return err
			}
			r := resp.Msg.Rollout
			switch r.GetState() {
			case adminv1.RolloutState_ROLLOUT_STATE_COMPLETED:
				return nil
			case adminv1.RolloutState_ROLLOUT_STATE_CANCELLED:
				msg := "rollout " + id + " was cancelled"
				if r.Reason != "" {
					msg += ": " + r.Reason
				}
				return exitError{code: 1, msg: msg}
			}
		}
		select {
		case <-ctx.Done():
			return exitError{code: 130}
		case <-time.After(interval):
		}
	}
}

func (c *client) showWatched(resp *adminv1.GetRolloutResponse, interval time.Duration, first bool) error {
	switch {
	case c.json:
		return c.printJSON(resp)
	case c.tty:
		return c.print(clearScreen + renderStatus(resp.Rollout, c.now()) +
			fmt.Sprintf("\nevery %v; Ctrl-C stops watching (the rollout goes on)\n", interval))
	case first:
		return c.print(renderStatus(resp.Rollout, c.now()))
	}
	return c.print("\n" + renderStatus(resp.Rollout, c.now()))
}

func (c *client) listRollouts(ctx context.Context, args []string, stderr io.Writer) error {
	var states string
	if _, err := c.flags("rollout list", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&states, "state", "", "only rollouts in these states: running, paused, completed, cancelled (comma-separated)")
	}); err != nil {
		return err
	}
	req := &adminv1.ListRolloutsRequest{PageSize: 1000}
	if states != "" {
		var err error
		if req.States, err = parseRolloutStates(states); err != nil {
			return usageError{fmt.Errorf("rollout list: %w", err)}
		}
	}
	all, err := listAll(c, func(token string) ([]*adminv1.Rollout, string, error) {
		req.PageToken = token
		resp, err := c.rollouts.ListRollouts(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, "", err
		}
		return resp.Msg.Rollouts, resp.Msg.NextPageToken, nil
	})
	if err != nil || c.json {
		return err
	}
	return c.print(renderRollouts(all))
}

func (c *client) rolloutClusters(ctx context.Context, args []string, stderr io.Writer) error {
	var states string
	var wave int
	p, err := c.flags("rollout clusters", args, stderr, []string{"ID"}, func(fs *flag.FlagSet) {
		fs.StringVar(&states, "state", "", "only clusters in these states: pending, eligible, dispatched, verifying, succeeded, failed, skipped, excluded (comma-separated)")
		fs.IntVar(&wave, "wave", 0, "only clusters of this wave (from 1)")
	})
	if err != nil {
		return err
	}
	req := &adminv1.ListRolloutClustersRequest{RolloutId: p.args[0], PageSize: 1000}
	if states != "" {
		if req.States, err = parseClusterStates(states); err != nil {
			return usageError{fmt.Errorf("rollout clusters: %w", err)}
		}
	}
	if p.set["wave"] {
		if wave < 1 || wave > 1<<30 {
			return usageError{errors.New("rollout clusters: --wave counts from 1")}
		}
		index := int32(wave - 1)
		req.Wave = &index
	}
	all, err := listAll(c, func(token string) ([]*adminv1.RolloutCluster, string, error) {
		req.PageToken = token
		resp, err := c.rollouts.ListRolloutClusters(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, "", err
		}
		return resp.Msg.Clusters, resp.Msg.NextPageToken, nil
	})
	if err != nil || c.json {
		return err
	}
	return c.print(renderRolloutClusters(all))
}

// reasonFlag defines --reason, required or not.
func reasonFlag(reason *string, required bool) func(*flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		help := "why (audited)"
		if required {
			help = "why (required; audited)"
		}
		fs.StringVar(reason, "reason", "", help)
	}
}

func needReason(cmd, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return usageError{fmt.Errorf("%s: --reason is required", cmd)}
	}
	return nil
}

// rolloutResponse is a response that carries a rollout.
type rolloutResponse interface {
	proto.Message
	GetRollout() *adminv1.Rollout
}

// stateChanged prints a rollout after pause, resume or cancel.
func (c *client) stateChanged(resp rolloutResponse) error {
	if c.json {
		return c.printJSON(resp)
	}
	r := resp.GetRollout()
	s := fmt.Sprintf("rollout %s %s", r.GetId(), rolloutStateName(r.GetState()))
	if r.GetReason() != "" {
		s += ": " + r.GetReason()
	}
	return c.print(s + "\n")
}

func (c *client) pauseRollout(ctx context.Context, args []string, stderr io.Writer) error {
	var reason string
	p, err := c.flags("rollout pause", args, stderr, []string{"ID"}, reasonFlag(&reason, true))
	if err != nil {
		return err
	}
	if err := needReason("rollout pause", reason); err != nil {
		return err
	}
	resp, err := c.rollouts.PauseRollout(ctx, connect.NewRequest(&adminv1.PauseRolloutRequest{Id: p.args[0], Reason: reason}))
	if err != nil {
		return err
	}
	return c.stateChanged(resp.Msg)
}

func (c *client) resumeRollout(ctx context.Context, args []string, stderr io.Writer) error {
	p, err := c.flags("rollout resume", args, stderr, []string{"ID"}, nil)
	if err != nil {
		return err
	}
	resp, err := c.rollouts.ResumeRollout(ctx, connect.NewRequest(&adminv1.ResumeRolloutRequest{Id: p.args[0]}))
	if err != nil {
		return err
	}
	return c.stateChanged(resp.Msg)
}

func (c *client) cancelRollout(ctx context.Context, args []string, stderr io.Writer) error {
	var reason string
	p, err := c.flags("rollout cancel", args, stderr, []string{"ID"}, reasonFlag(&reason, false))
	if err != nil {
		return err
	}
	resp, err := c.rollouts.CancelRollout(ctx, connect.NewRequest(&adminv1.CancelRolloutRequest{Id: p.args[0], Reason: reason}))
	if err != nil {
		return err
	}
	return c.stateChanged(resp.Msg)
}

func (c *client) rollbackRollout(ctx context.Context, args []string, stderr io.Writer) error {
	var reason string
	p, err := c.flags("rollout rollback", args, stderr, []string{"ID"}, reasonFlag(&reason, false))
	if err != nil {
		return err
	}
	resp, err := c.rollouts.RollbackRollout(ctx, connect.NewRequest(&adminv1.RollbackRolloutRequest{Id: p.args[0], Reason: reason}))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	r := resp.Msg.Rollout
	var planned int32
	for _, w := range r.Waves {
		planned += w.Size
	}
	fmt.Fprintf(stderr, "follow it: cairnctl rollout status %s --watch\n", r.Id)
	return c.print(fmt.Sprintf("rollout %s started: rolls back %s; %s in %s to their previous versions\n",
		r.Id, p.args[0], plural(int(planned), "cluster"), plural(len(r.Waves), "wave")))
}

func (c *client) pauseAll(ctx context.Context, args []string, stderr io.Writer) error {
	var reason string
	if _, err := c.flags("rollout pause-all", args, stderr, nil, reasonFlag(&reason, true)); err != nil {
		return err
	}
	if err := needReason("rollout pause-all", reason); err != nil {
		return err
	}
	resp, err := c.rollouts.PauseAllRollouts(ctx, connect.NewRequest(&adminv1.PauseAllRolloutsRequest{Reason: reason}))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	if len(resp.Msg.PausedIds) == 0 {
		return c.print("no rollout was running\n")
	}
	return c.print(fmt.Sprintf("paused %s: %s\n", plural(len(resp.Msg.PausedIds), "rollout"), strings.Join(resp.Msg.PausedIds, " ")))
}

func (c *client) expedite(ctx context.Context, args []string, stderr io.Writer) error {
	p, err := c.flags("rollout expedite", args, stderr, []string{"ID", "CLUSTER_ID"}, nil)
	if err != nil {
		return err
	}
	resp, err := c.rollouts.ExpediteCluster(ctx, connect.NewRequest(&adminv1.ExpediteClusterRequest{RolloutId: p.args[0], ClusterId: p.args[1]}))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	rc := resp.Msg.Cluster
	return c.print(fmt.Sprintf("cluster %s (%s) expedited: wave %s, %s\n", rc.GetName(), rc.GetClusterId(), waveName(rc.GetWave(), false),
		clusterStateName(rc)))
}

func (c *client) editRollout(ctx context.Context, args []string, stderr io.Writer) error {
	var concurrency int
	var budget, global string
	p, err := c.flags("rollout edit", args, stderr, []string{"ID"}, func(fs *flag.FlagSet) {
		fs.IntVar(&concurrency, "concurrency", 0, "the most clusters of a wave upgrading at once; 0 means a whole wave")
		fs.StringVar(&budget, "failure-budget", "", `failures tolerated per wave: a count ("2") or a percentage ("10%")`)
		fs.StringVar(&global, "global-failure-budget", "", "failures tolerated across the rollout: a count or a percentage")
	})
	if err != nil {
		return err
	}
	req := &adminv1.UpdateRolloutPolicyRequest{Id: p.args[0]}
	if p.set["concurrency"] {
		n, err := int32Flag("concurrency", concurrency)
		if err != nil {
			return usageError{fmt.Errorf("rollout edit: %w", err)}
		}
		req.Concurrency = &n
	}
	if p.set["failure-budget"] {
		if req.FailureBudget, err = parseBudget(budget); err != nil {
			return usageError{fmt.Errorf("rollout edit: --failure-budget: %w", err)}
		}
	}
	if p.set["global-failure-budget"] {
		if req.GlobalFailureBudget, err = parseBudget(global); err != nil {
			return usageError{fmt.Errorf("rollout edit: --global-failure-budget: %w", err)}
		}
	}
	if req.Concurrency == nil && req.FailureBudget == nil && req.GlobalFailureBudget == nil {
		return usageError{errors.New("rollout edit: give --concurrency, --failure-budget or --global-failure-budget")}
	}
	resp, err := c.rollouts.UpdateRolloutPolicy(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	r := resp.Msg.Rollout
	var b strings.Builder
	fmt.Fprintf(&b, "rollout %s updated (waves already done keep theirs); global failure budget %d\n\n", r.Id, r.GlobalFailureBudget)
	writeWaves(&b, r.Waves)
	return c.print(b.String())
}

func (c *client) listExclusions(ctx context.Context, args []string, stderr io.Writer) error {
	if _, err := c.flags("exclusions list", args, stderr, nil, nil); err != nil {
		return err
	}
	resp, err := c.rollouts.ListExclusions(ctx, connect.NewRequest(&adminv1.ListExclusionsRequest{}))
	if err != nil {
		return err
	}
	if c.json {
		for _, e := range resp.Msg.Exclusions {
			if err := c.printJSON(e); err != nil {
				return err
			}
		}
		return nil
	}
	return c.print(renderExclusions(resp.Msg.Exclusions))
}

func (c *client) createExclusion(ctx context.Context, args []string, stderr io.Writer) error {
	var scope, id, reason, until string
	if _, err := c.flags("exclusions create", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&scope, "scope", "", "what it covers: cluster, data_plane or tenant (required)")
		fs.StringVar(&id, "id", "", "the cluster, data plane or tenant ID (required)")
		fs.StringVar(&reason, "reason", "", `why, e.g. "customer freeze until Monday" (required; audited)`)
		fs.StringVar(&until, "until", "", "when it expires: an RFC 3339 time or a duration from now, e.g. 72h or 3d (required; at most 90 days)")
	}); err != nil {
		return err
	}
	e := &adminv1.Exclusion{ScopeType: exclusionScopes[scope], ScopeId: id, Reason: reason}
	switch {
	case e.ScopeType == "":
		return usageError{fmt.Errorf("exclusions create: --scope %q: want cluster, data_plane or tenant", scope)}
	case strings.TrimSpace(id) == "":
		return usageError{errors.New("exclusions create: --id is required")}
	case strings.TrimSpace(until) == "":
		return usageError{errors.New("exclusions create: --until is required")}
	}
	if err := needReason("exclusions create", reason); err != nil {
		return err
	}
	var err error
	if e.ExpireTime, err = parseUntil(until, c.now()); err != nil {
		return usageError{fmt.Errorf("exclusions create: %w", err)}
	}
	resp, err := c.rollouts.CreateExclusion(ctx, connect.NewRequest(&adminv1.CreateExclusionRequest{Exclusion: e}))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	x := resp.Msg.Exclusion
	return c.print(fmt.Sprintf("exclusion %s: no rollout touches %s %s until %s\n", x.GetId(), strings.ReplaceAll(x.GetScopeType(), "_", " "),
		x.GetScopeId(), formatTime(x.GetExpireTime())))
}

func (c *client) deleteExclusion(ctx context.Context, args []string, stderr io.Writer) error {
	p, err := c.flags("exclusions delete", args, stderr, []string{"ID"}, nil)
	if err != nil {
		return err
	}
	resp, err := c.rollouts.DeleteExclusion(ctx, connect.NewRequest(&adminv1.DeleteExclusionRequest{Id: p.args[0]}))
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.Msg)
	}
	return c.print("exclusion " + p.args[0] + " deleted\n")
}
