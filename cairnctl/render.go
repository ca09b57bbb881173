package cairnctl

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// Rendering is pure: a response (and the time, for what is relative to
// it) in, text out, so that it can be table-tested. Waves are numbered from
// 1 (the API's index + 1), as in plans' summaries.

// barWidth is the number of cells in a progress bar.
const barWidth = 10

// progressBar draws done of total as "[####......]". A cell fills only when
// its whole share is done, so a bar is full only when everything is.
func progressBar(done, total int32) string {
	filled := barWidth
	if total > 0 {
		filled = int(int64(max(done, 0)) * barWidth / int64(total))
	}
	filled = min(filled, barWidth)
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled) + "]"
}

// countsOf are the sums the views show.
type countsOf struct{ *adminv1.RolloutCounts }

func (c countsOf) total() int32 {
	return c.GetPending() + c.GetEligible() + c.GetDispatched() + c.GetVerifying() + c.GetSucceeded() +
		c.GetFailed() + c.GetUnreachable() + c.GetSkipped() + c.GetExcluded()
}

// done counts clusters in a final state.
func (c countsOf) done() int32 {
	return c.GetSucceeded() + c.GetFailed() + c.GetUnreachable() + c.GetSkipped() + c.GetExcluded()
}

// inFlight counts clusters dispatched and not yet verified.
func (c countsOf) inFlight() int32 { return c.GetDispatched() + c.GetVerifying() }

// waiting counts clusters not yet dispatched: in a wave that has not
// started, or eligible (waiting for a slot or a maintenance window).
func (c countsOf) waiting() int32 { return c.GetPending() + c.GetEligible() }

// broken counts what failure budgets count.
func (c countsOf) broken() int32 { return c.GetFailed() + c.GetUnreachable() }

func (c countsOf) String() string {
	return fmt.Sprintf("%d succeeded, %d failed, %d unreachable, %d in flight, %d pending, %d skipped, %d excluded",
		c.GetSucceeded(), c.GetFailed(), c.GetUnreachable(), c.inFlight(), c.waiting(), c.GetSkipped(), c.GetExcluded())
}

func rolloutStateName(s adminv1.RolloutState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "ROLLOUT_STATE_"))
}

func clusterStateName(c *adminv1.RolloutCluster) string {
	s := strings.ToLower(strings.TrimPrefix(c.State.String(), "ROLLOUT_CLUSTER_STATE_"))
	if c.State == adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_FAILED && c.Unreachable {
		s += " (unreachable)"
	}
	return s
}

func waveName(index int32, sensitive bool) string {
	if index < 0 {
		return "-"
	}
	s := strconv.Itoa(int(index) + 1)
	if sensitive {
		s += " (sensitive)"
	}
	return s
}

// formatDuration is time.Duration.String without zero units at the end
// ("2h", "1h30m", "7m30s"), or "-" for none.
func formatDuration(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func formatSoak(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return formatDuration(d.AsDuration())
}

func formatTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

// target describes what a rollout does: "kafka 1.1.0, clusters matching
// env=prod".
func target(s *adminv1.RolloutSpec) string {
	if s.GetQuery() == "" {
		return fmt.Sprintf("%s %s, every %s cluster", s.GetProduct(), s.GetTargetVersion(), s.GetProduct())
	}
	return fmt.Sprintf("%s %s, clusters matching %s", s.GetProduct(), s.GetTargetVersion(), s.GetQuery())
}

// waveStatus says where a wave stands: waiting, running, paused,
// cancelled, soaking (with the time left) or done.
func waveStatus(r *adminv1.Rollout, w *adminv1.RolloutWave, now time.Time) string {
	ended := r.State == adminv1.RolloutState_ROLLOUT_STATE_CANCELLED || r.State == adminv1.RolloutState_ROLLOUT_STATE_COMPLETED
	switch {
	case w.StartTime == nil && r.State == adminv1.RolloutState_ROLLOUT_STATE_CANCELLED:
		return "not started"
	case w.StartTime == nil:
		return "waiting"
	case w.DoneTime == nil && r.State == adminv1.RolloutState_ROLLOUT_STATE_RUNNING:
		return "running"
	case w.DoneTime == nil:
		return rolloutStateName(r.State)
	case w.SoakUntil != nil && now.Before(w.SoakUntil.AsTime()) && !ended:
		return "soaking, " + formatDuration(w.SoakUntil.AsTime().Sub(now).Round(time.Second)) + " left"
	}
	return "done"
}

// renderStatus is the status view of a rollout: a header, then a row per
// wave with a progress bar and counts. now is the time soaks count down to.
func renderStatus(r *adminv1.Rollout, now time.Time) string {
	var b strings.Builder
	all := countsOf{r.Counts}
	line := func(key, format string, a ...any) { fmt.Fprintf(&b, "%-10s %s\n", key+":", fmt.Sprintf(format, a...)) }
	line("Rollout", "%s", r.Id)
	line("Target", "%s", target(r.Spec))
	state := rolloutStateName(r.State)
	if r.Reason != "" {
		state += ": " + r.Reason
	}
	line("State", "%s", state)
	n := int32(len(r.Waves))
	var where string
	switch {
	case n == 0:
		where = "no waves"
	case r.State == adminv1.RolloutState_ROLLOUT_STATE_COMPLETED:
		where = "every wave done"
	default:
		where = fmt.Sprintf("wave %d of %d", min(r.CurrentWave, n-1)+1, n)
	}
	line("Progress", "%s %d/%d clusters done, %s", progressBar(all.done(), all.total()), all.done(), all.total(), where)
	line("Clusters", "%s", all)
	if r.Spec.GetPolicy().GetGlobalFailureBudget() != nil {
		line("Failures", "%d (the rollout tolerates %d)", all.broken(), r.GlobalFailureBudget)
	} else {
		line("Failures", "%d (per-wave budgets only)", all.broken())
	}
	if r.OverdueClusters > 0 {
		line("Overdue", "%d clusters past their state's deadline (see cairnctl rollout clusters %s)", r.OverdueClusters, r.Id)
	} else {
		line("Overdue", "0")
	}
	line("Created", "%s by %s", formatTime(r.CreateTime), dash(r.CreatedBy))
	if r.RollbackOf != "" {
		line("Rollback", "of rollout %s", r.RollbackOf)
	}
	if r.RolledBackBy != "" {
		line("Reverted", "by rollout %s", r.RolledBackBy)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tPROGRESS\tDONE\tSUCCEEDED\tFAILED\tUNREACHABLE\tIN FLIGHT\tPENDING\tSKIPPED\tEXCLUDED\tBUDGET\tSTATUS")
	for _, w := range r.Waves {
		c := countsOf{w.Counts}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d/%d\t%s\n", waveName(w.Index, w.Sensitive),
			progressBar(c.done(), w.Size), c.done(), w.Size, c.GetSucceeded(), c.GetFailed(), c.GetUnreachable(), c.inFlight(),
			c.waiting(), c.GetSkipped(), c.GetExcluded(), c.broken(), w.FailureBudget, waveStatus(r, w, now))
	}
	tw.Flush()
	return b.String()
}

// writeWaves writes a plan's waves as a table.
func writeWaves(w io.Writer, waves []*adminv1.RolloutWave) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tSIZE\tCONCURRENCY\tBUDGET\tSOAK\tSENSITIVE")
	for _, wv := range waves {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\t%s\n", wv.Index+1, wv.Size, wv.Concurrency, wv.FailureBudget, formatSoak(wv.Soak), yesNo(wv.Sensitive))
	}
	tw.Flush()
}

// writeLeftOut writes clusters a plan leaves out (or flags), with why,
// under a heading; "none" when there are none.
func writeLeftOut(w io.Writer, heading string, list []*adminv1.PlannedCluster) {
	if len(list) == 0 {
		fmt.Fprintf(w, "%s: none\n", heading)
		return
	}
	fmt.Fprintf(w, "%s: %d\n", heading, len(list))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tCURRENT\tWHY\tID")
	for _, c := range list {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Name, dash(c.CurrentVersion), c.Detail, c.ClusterId)
	}
	tw.Flush()
}

// renderPreview is the plan a preview returns: the waves, then the
// clusters left out and why; withClusters lists the planned clusters too.
func renderPreview(p *adminv1.PreviewRolloutResponse, withClusters bool) string {
	var b strings.Builder
	if len(p.Waves) == 0 {
		b.WriteString("nothing to do: no selected cluster needs the target\n\n")
	} else {
		fmt.Fprintf(&b, "%s in %s, global failure budget %d\n\n", plural(len(p.Clusters), "cluster"), plural(len(p.Waves), "wave"),
			p.GlobalFailureBudget)
		writeWaves(&b, p.Waves)
		b.WriteString("\n")
	}
	if withClusters && len(p.Clusters) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tWAVE\tCURRENT\tDATA PLANE\tID")
		for _, c := range p.Clusters {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", c.Name, c.Wave+1, dash(c.CurrentVersion), c.DataPlaneId, c.ClusterId)
		}
		tw.Flush()
		b.WriteString("\n")
	}
	writeLeftOut(&b, "Skipped (incompatible or already on the target)", p.Skipped)
	writeLeftOut(&b, "Excluded (planned; an exclusion covers them now)", p.Excluded)
	writeLeftOut(&b, "Busy (another rollout holds them; not planned)", p.Busy)
	return b.String()
}

// renderStarted is what start prints: the new rollout's ID and a summary,
// then the busy clusters it left out.
func renderStarted(resp *adminv1.StartRolloutResponse) string {
	var b strings.Builder
	r := resp.Rollout
	var planned int32
	for _, w := range r.Waves {
		planned += w.Size
	}
	fmt.Fprintf(&b, "rollout %s started: %s; %s in %s", r.Id, target(r.Spec), plural(int(planned), "cluster"), plural(len(r.Waves), "wave"))
	if s := r.Counts.GetSkipped(); s > 0 {
		fmt.Fprintf(&b, " (%d skipped)", s)
	}
	fmt.Fprintf(&b, ", global failure budget %d\n", r.GlobalFailureBudget)
	if len(resp.Busy) > 0 {
		writeLeftOut(&b, "Busy (another rollout holds them; not in this one)", resp.Busy)
	}
	return b.String()
}

// renderRollouts is the table of rollout list.
func renderRollouts(list []*adminv1.Rollout) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPRODUCT\tTARGET\tSTATE\tWAVE\tPROGRESS\tDONE\tFAILED\tOVERDUE\tCREATED\tREASON")
	for _, r := range list {
		c := countsOf{r.Counts}
		wave := fmt.Sprintf("%d/%d", min(r.CurrentWave+1, int32(len(r.Waves))), len(r.Waves))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\t%s\n", r.Id, r.Spec.GetProduct(), r.Spec.GetTargetVersion(),
			rolloutStateName(r.State), wave, progressBar(c.done(), c.total()), c.done(), c.total(), c.broken(), r.OverdueClusters,
			formatTime(r.CreateTime), dash(firstLine(r.Reason)))
	}
	tw.Flush()
	return b.String()
}

// renderRolloutClusters is the table of rollout clusters.
func renderRolloutClusters(list []*adminv1.RolloutCluster) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tWAVE\tSTATE\tDETAIL\tTARGET\tPREVIOUS\tOVERDUE\tID")
	for _, c := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, waveName(c.Wave, false), clusterStateName(c), dash(c.Detail),
			dash(c.TargetVersion), dash(c.PreviousVersion), yesNo(c.Overdue), c.ClusterId)
	}
	tw.Flush()
	return b.String()
}

// renderExclusions is the table of exclusions list.
func renderExclusions(list []*adminv1.Exclusion) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSCOPE\tSCOPE ID\tUNTIL\tREASON\tCREATED BY")
	for _, e := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Id, e.ScopeType, e.ScopeId, formatTime(e.ExpireTime), firstLine(e.Reason), dash(e.CreatedBy))
	}
	tw.Flush()
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
