package cairnctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// specFlags are the flags of rollout preview and start. They are checked
// for form here (a usage error before any call); the API checks the rest
// (limits, the release, the query).
type specFlags struct {
	product, version, query, seed   string
	shape, sizes, percents          string
	failureBudget, globalBudget     string
	batchSize, start, factor        int
	concurrency, sensitiveBatchSize int
	soak, verifyTimeout             time.Duration
	reserveSensitive                bool
}

func (f *specFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.product, "product", "", "the product to upgrade (required)")
	fs.StringVar(&f.version, "version", "", "the target release (required)")
	fs.StringVar(&f.query, "query", "", "inventory query selecting clusters of the product (default: all of them)")
	fs.StringVar(&f.query, "selector", "", "the same as --query")
	fs.StringVar(&f.shape, "shape", "", "waves: linear, exponential, s-curve or custom (required)")
	fs.IntVar(&f.batchSize, "batch-size", 0, "linear: clusters per wave (required)")
	fs.IntVar(&f.start, "start", 0, "exponential: the first wave's size (default 1)")
	fs.IntVar(&f.factor, "factor", 0, "exponential: growth from wave to wave, at least 2 (default 2)")
	fs.StringVar(&f.sizes, "sizes", "", "custom: wave sizes, e.g. 1,2,5 (the last wave takes the rest)")
	fs.StringVar(&f.percents, "percents", "", "custom: wave sizes as percentages of the fleet, e.g. 1,10,50")
	fs.IntVar(&f.concurrency, "concurrency", 0, "the most clusters of a wave upgrading at once (default: a whole wave)")
	fs.DurationVar(&f.soak, "soak", 0, "how long to watch a wave before the next starts (s-curve scales it per wave)")
	fs.StringVar(&f.failureBudget, "failure-budget", "", `failures tolerated per wave: a count ("2") or a percentage ("10%"); default none`)
	fs.StringVar(&f.globalBudget, "global-failure-budget", "", "failures tolerated across the rollout: a count or a percentage (default: per-wave budgets only)")
	fs.BoolVar(&f.reserveSensitive, "reserve-sensitive", false, "plan clusters labelled sensitive=true last, in waves of their own")
	fs.IntVar(&f.sensitiveBatchSize, "sensitive-batch-size", 0, "with --reserve-sensitive: clusters per sensitive wave (default: one wave)")
	fs.DurationVar(&f.verifyTimeout, "verify-timeout", 0, "how long a dispatched cluster has to report the target and healthy (default 30m)")
	fs.StringVar(&f.seed, "seed", "", "orders clusters in the plan; preview and start with one seed plan alike (default: the rollout's ID)")
}

// shapeFlags are the flags that belong to one shape only.
var shapeFlags = map[string]string{"batch-size": "linear", "start": "exponential", "factor": "exponential", "sizes": "custom", "percents": "custom"}

// spec turns the flags into a RolloutSpec; set holds the flags given.
func (f *specFlags) spec(set map[string]bool) (*adminv1.RolloutSpec, error) {
	switch {
	case set["query"] && set["selector"]:
		return nil, errors.New("--selector is --query; give one")
	case strings.TrimSpace(f.product) == "":
		return nil, errors.New("--product is required")
	case strings.TrimSpace(f.version) == "":
		return nil, errors.New("--version (the target release) is required")
	}
	spec := &adminv1.RolloutSpec{Product: f.product, TargetVersion: f.version, Query: f.query, Seed: f.seed,
		Shape: &adminv1.RolloutShape{}, Policy: &adminv1.RolloutPolicy{ReserveSensitive: f.reserveSensitive}}
	shape := strings.ReplaceAll(strings.ToLower(f.shape), "_", "-")
	for name, want := range shapeFlags {
		if set[name] && shape != want {
			return nil, fmt.Errorf("--%s applies to --shape %s only", name, want)
		}
	}
	switch shape {
	case "linear":
		if f.batchSize < 1 {
			return nil, errors.New("--shape linear needs --batch-size of at least 1")
		}
		n, err := int32Flag("batch-size", f.batchSize)
		if err != nil {
			return nil, err
		}
		spec.Shape.Shape = &adminv1.RolloutShape_Linear{Linear: &adminv1.LinearShape{BatchSize: n}}
	case "exponential":
		if set["start"] && f.start < 1 {
			return nil, errors.New("--start must be at least 1")
		}
		if set["factor"] && f.factor < 2 {
			return nil, errors.New("--factor must be at least 2 (for waves of one size, use --shape linear)")
		}
		start, err := int32Flag("start", f.start)
		if err != nil {
			return nil, err
		}
		factor, err := int32Flag("factor", f.factor)
		if err != nil {
			return nil, err
		}
		spec.Shape.Shape = &adminv1.RolloutShape_Exponential{Exponential: &adminv1.ExponentialShape{Start: start, Factor: factor}}
	case "s-curve", "scurve":
		spec.Shape.Shape = &adminv1.RolloutShape_SCurve{SCurve: &adminv1.SCurveShape{}}
	case "custom":
		custom, err := customShape(f.sizes, f.percents)
		if err != nil {
			return nil, err
		}
		spec.Shape.Shape = &adminv1.RolloutShape_Custom{Custom: custom}
	case "":
		return nil, errors.New("--shape is required: linear, exponential, s-curve or custom")
	default:
		return nil, fmt.Errorf("--shape %q: want linear, exponential, s-curve or custom", f.shape)
	}

	p := spec.Policy
	var err error
	if p.Concurrency, err = int32Flag("concurrency", f.concurrency); err != nil {
		return nil, err
	}
	if set["soak"] {
		if f.soak < 0 {
			return nil, errors.New("--soak must not be negative")
		}
		p.BaseSoak = durationpb.New(f.soak)
	}
	if set["verify-timeout"] {
		if f.verifyTimeout <= 0 {
			return nil, errors.New("--verify-timeout must be positive")
		}
		p.VerifyTimeout = durationpb.New(f.verifyTimeout)
	}
	if set["failure-budget"] {
		if p.FailureBudget, err = parseBudget(f.failureBudget); err != nil {
			return nil, fmt.Errorf("--failure-budget: %w", err)
		}
	}
	if set["global-failure-budget"] {
		if p.GlobalFailureBudget, err = parseBudget(f.globalBudget); err != nil {
			return nil, fmt.Errorf("--global-failure-budget: %w", err)
		}
	}
	if set["sensitive-batch-size"] && !f.reserveSensitive {
		return nil, errors.New("--sensitive-batch-size needs --reserve-sensitive")
	}
	if p.SensitiveBatchSize, err = int32Flag("sensitive-batch-size", f.sensitiveBatchSize); err != nil {
		return nil, err
	}
	return spec, nil
}

// specArgs parses the flags of rollout preview and start.
func (c *client) specArgs(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*adminv1.RolloutSpec, error) {
	var f specFlags
	p, err := c.flags(name, args, stderr, nil, func(fs *flag.FlagSet) {
		f.define(fs)
		if extra != nil {
			extra(fs)
		}
	})
	if err != nil {
		return nil, err
	}
	spec, err := f.spec(p.set)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", name, err)}
	}
	return spec, nil
}

// int32Flag checks that a count flag fits the API's int32 and is not
// negative.
func int32Flag(name string, n int) (int32, error) {
	if n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("--%s must be between 0 and %d", name, math.MaxInt32)
	}
	return int32(n), nil
}

func customShape(sizes, percents string) (*adminv1.CustomShape, error) {
	switch {
	case sizes != "" && percents != "":
		return nil, errors.New("--shape custom takes --sizes or --percents, not both")
	case sizes == "" && percents == "":
		return nil, errors.New("--shape custom needs --sizes (e.g. 1,2,5) or --percents (e.g. 1,10,50)")
	}
	out := &adminv1.CustomShape{}
	if sizes != "" {
		for s := range strings.SplitSeq(sizes, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("--sizes: %q is not a wave size (a whole number, at least 1)", s)
			}
			out.Sizes = append(out.Sizes, int32(n))
		}
		return out, nil
	}
	for s := range strings.SplitSeq(percents, ",") {
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
		if err != nil || math.IsNaN(v) || v <= 0 || v > 100 {
			return nil, fmt.Errorf("--percents: %q is not a percentage (above 0, at most 100)", s)
		}
		out.Percents = append(out.Percents, v)
	}
	return out, nil
}

// parseBudget reads a failure budget: a count of clusters ("2") or a
// percentage ("10%").
func parseBudget(s string) (*adminv1.FailureBudget, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > 100 {
			return nil, fmt.Errorf("%q: a percentage is between 0%% and 100%%", s)
		}
		return &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Percent{Percent: v}}, nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%q: want a count of clusters (2) or a percentage (10%%)", s)
	}
	return &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Count{Count: int32(n)}}, nil
}

// parseUntil reads an exclusion's expiry: an RFC 3339 time, or a duration
// from now ("72h", "90m", or whole days: "3d").
func parseUntil(s string, now time.Time) (*timestamppb.Timestamp, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return timestamppb.New(t), nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n > 10_000 {
			return nil, fmt.Errorf("--until %q: want an RFC 3339 time (2026-11-23T09:00:00Z) or a duration (72h, 3d)", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return nil, fmt.Errorf("--until %q: want an RFC 3339 time (2026-11-23T09:00:00Z) or a duration (72h, 3d)", s)
		}
	}
	if d <= 0 {
		return nil, fmt.Errorf("--until %q: a duration from now must be positive", s)
	}
	return timestamppb.New(now.Add(d)), nil
}

// parseRolloutStates reads --state of rollout list: running,paused.
func parseRolloutStates(s string) ([]adminv1.RolloutState, error) {
	var out []adminv1.RolloutState
	for name := range strings.SplitSeq(s, ",") {
		v, ok := adminv1.RolloutState_value["ROLLOUT_STATE_"+strings.ToUpper(strings.TrimSpace(name))]
		if !ok || v == 0 {
			return nil, fmt.Errorf("--state %q: want running, paused, completed or cancelled (comma-separated)", name)
		}
		out = append(out, adminv1.RolloutState(v))
	}
	return out, nil
}

// parseClusterStates reads --state of rollout clusters: failed,dispatched.
func parseClusterStates(s string) ([]adminv1.RolloutClusterState, error) {
	var out []adminv1.RolloutClusterState
	for name := range strings.SplitSeq(s, ",") {
		v, ok := adminv1.RolloutClusterState_value["ROLLOUT_CLUSTER_STATE_"+strings.ToUpper(strings.TrimSpace(name))]
		if !ok || v == 0 {
			return nil, fmt.Errorf("--state %q: want pending, eligible, dispatched, verifying, succeeded, failed, skipped or excluded (comma-separated)", name)
		}
		out = append(out, adminv1.RolloutClusterState(v))
	}
	return out, nil
}

// exclusionScopes are the scope types of exclusions, by their flag names.
var exclusionScopes = map[string]string{"cluster": "cluster", "data_plane": "data_plane", "data-plane": "data_plane", "tenant": "tenant"}
