package cairnctl

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

func count(n int32) *adminv1.FailureBudget {
	return &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Count{Count: n}}
}

func percent(p float64) *adminv1.FailureBudget {
	return &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Percent{Percent: p}}
}

func linear(n int32) *adminv1.RolloutShape {
	return &adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Linear{Linear: &adminv1.LinearShape{BatchSize: n}}}
}

func TestSpecArgs(t *testing.T) {
	base := []string{"--product", "kafka", "--version", "1.1.0"}
	spec := func(shape *adminv1.RolloutShape, policy *adminv1.RolloutPolicy) *adminv1.RolloutSpec {
		if policy == nil {
			policy = &adminv1.RolloutPolicy{}
		}
		return &adminv1.RolloutSpec{Product: "kafka", TargetVersion: "1.1.0", Shape: shape, Policy: policy}
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    *adminv1.RolloutSpec
		wantErr string // a part of the usage error
	}{
		{name: "linear", args: []string{"--shape", "linear", "--batch-size", "5"}, want: spec(linear(5), nil)},
		{name: "exponential defaults", args: []string{"--shape", "exponential"},
			want: spec(&adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Exponential{Exponential: &adminv1.ExponentialShape{}}}, nil)},
		{name: "exponential", args: []string{"--shape", "exponential", "--start", "2", "--factor", "3"},
			want: spec(&adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Exponential{Exponential: &adminv1.ExponentialShape{Start: 2, Factor: 3}}}, nil)},
		{name: "s-curve", args: []string{"--shape", "s-curve"},
			want: spec(&adminv1.RolloutShape{Shape: &adminv1.RolloutShape_SCurve{SCurve: &adminv1.SCurveShape{}}}, nil)},
		{name: "s_curve as the API spells it", args: []string{"--shape", "S_CURVE"},
			want: spec(&adminv1.RolloutShape{Shape: &adminv1.RolloutShape_SCurve{SCurve: &adminv1.SCurveShape{}}}, nil)},
		{name: "custom sizes", args: []string{"--shape", "custom", "--sizes", "1, 2,5"},
			want: spec(&adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Custom{Custom: &adminv1.CustomShape{Sizes: []int32{1, 2, 5}}}}, nil)},
		{name: "custom percents", args: []string{"--shape", "custom", "--percents", "1,10%,50"},
			want: spec(&adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Custom{Custom: &adminv1.CustomShape{Percents: []float64{1, 10, 50}}}}, nil)},
		{name: "every policy flag", args: []string{"--shape", "linear", "--batch-size", "1", "--query", "env=prod", "--seed", "s1",
			"--concurrency", "2", "--soak", "10m", "--failure-budget", "2", "--global-failure-budget", "10%",
			"--reserve-sensitive", "--sensitive-batch-size", "3", "--verify-timeout", "1h"},
			want: &adminv1.RolloutSpec{Product: "kafka", TargetVersion: "1.1.0", Query: "env=prod", Seed: "s1", Shape: linear(1),
				Policy: &adminv1.RolloutPolicy{Concurrency: 2, BaseSoak: durationpb.New(10 * time.Minute), FailureBudget: count(2),
					GlobalFailureBudget: percent(10), ReserveSensitive: true, SensitiveBatchSize: 3, VerifyTimeout: durationpb.New(time.Hour)}}},
		{name: "selector is query", args: []string{"--shape", "linear", "--batch-size", "1", "--selector", "tier=gold"},
			want: &adminv1.RolloutSpec{Product: "kafka", TargetVersion: "1.1.0", Query: "tier=gold", Shape: linear(1), Policy: &adminv1.RolloutPolicy{}}},
		{name: "zero budgets are explicit", args: []string{"--shape", "linear", "--batch-size", "1", "--failure-budget", "0", "--global-failure-budget", "0%"},
			want: spec(linear(1), &adminv1.RolloutPolicy{FailureBudget: count(0), GlobalFailureBudget: percent(0)})},
		{name: "zero soak is explicit", args: []string{"--shape", "linear", "--batch-size", "1", "--soak", "0s"},
			want: spec(linear(1), &adminv1.RolloutPolicy{BaseSoak: durationpb.New(0)})},

		{name: "no shape", args: nil, wantErr: "--shape is required"},
		{name: "unknown shape", args: []string{"--shape", "zigzag"}, wantErr: `--shape "zigzag"`},
		{name: "linear without batch", args: []string{"--shape", "linear"}, wantErr: "--batch-size of at least 1"},
		{name: "flag of another shape", args: []string{"--shape", "linear", "--batch-size", "1", "--factor", "3"}, wantErr: "--factor applies to --shape exponential"},
		{name: "sizes on s-curve", args: []string{"--shape", "s-curve", "--sizes", "1,2"}, wantErr: "--sizes applies to --shape custom"},
		{name: "factor 1", args: []string{"--shape", "exponential", "--factor", "1"}, wantErr: "--factor must be at least 2"},
		{name: "start 0", args: []string{"--shape", "exponential", "--start", "0"}, wantErr: "--start must be at least 1"},
		{name: "custom with both", args: []string{"--shape", "custom", "--sizes", "1", "--percents", "5"}, wantErr: "not both"},
		{name: "custom with neither", args: []string{"--shape", "custom"}, wantErr: "needs --sizes"},
		{name: "bad size", args: []string{"--shape", "custom", "--sizes", "1,0"}, wantErr: `--sizes: "0"`},
		{name: "bad percent", args: []string{"--shape", "custom", "--percents", "50,150"}, wantErr: `--percents: "150"`},
		{name: "budget not a number", args: []string{"--shape", "s-curve", "--failure-budget", "two"}, wantErr: `--failure-budget: "two"`},
		{name: "budget fraction", args: []string{"--shape", "s-curve", "--failure-budget", "1.5"}, wantErr: "--failure-budget"},
		{name: "budget negative", args: []string{"--shape", "s-curve", "--failure-budget", "-1"}, wantErr: "--failure-budget"},
		{name: "budget over 100%", args: []string{"--shape", "s-curve", "--global-failure-budget", "101%"}, wantErr: "--global-failure-budget"},
		{name: "negative concurrency", args: []string{"--shape", "s-curve", "--concurrency", "-1"}, wantErr: "--concurrency must be"},
		{name: "negative soak", args: []string{"--shape", "s-curve", "--soak", "-1m"}, wantErr: "--soak must not be negative"},
		{name: "bad soak", args: []string{"--shape", "s-curve", "--soak", "a while"}, wantErr: "invalid value"},
		{name: "zero verify timeout", args: []string{"--shape", "s-curve", "--verify-timeout", "0s"}, wantErr: "--verify-timeout must be positive"},
		{name: "sensitive batch alone", args: []string{"--shape", "s-curve", "--sensitive-batch-size", "2"}, wantErr: "needs --reserve-sensitive"},
		{name: "query and selector", args: []string{"--shape", "s-curve", "--query", "a=b", "--selector", "a=b"}, wantErr: "give one"},
		{name: "stray argument", args: []string{"--shape", "s-curve", "now"}, wantErr: "unexpected arguments: now"},
		{name: "unknown flag", args: []string{"--shape", "s-curve", "--canary"}, wantErr: "not defined: -canary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := (&client{}).specArgs("rollout start", append(append([]string{}, base...), tc.args...), io.Discard, nil)
			if tc.wantErr != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v; want a usage error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Fatalf("spec (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSpecArgsNeedProductAndVersion(t *testing.T) {
	for _, args := range [][]string{
		{"--version", "1.1.0", "--shape", "s-curve"},
		{"--product", "kafka", "--shape", "s-curve"},
	} {
		if _, err := (&client{}).specArgs("rollout preview", args, io.Discard, nil); !errors.As(err, new(usageError)) {
			t.Errorf("%v: got %v; want a usage error", args, err)
		}
	}
}

func TestParseBudget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *adminv1.FailureBudget
	}{
		{"2", count(2)}, {" 0 ", count(0)}, {"10%", percent(10)}, {"2.5%", percent(2.5)}, {"100%", percent(100)},
		{"", nil}, {"x", nil}, {"%", nil}, {"-1", nil}, {"-1%", nil}, {"NaN%", nil}, {"2.5", nil}, {"99999999999", nil},
	} {
		got, err := parseBudget(tc.in)
		if (err != nil) != (tc.want == nil) {
			t.Errorf("parseBudget(%q): got error %v; want error %v", tc.in, err, tc.want == nil)
			continue
		}
		if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
			t.Errorf("parseBudget(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestParseUntil(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time // zero: an error
	}{
		{"72h", now.Add(72 * time.Hour)},
		{"90m", now.Add(90 * time.Minute)},
		{"3d", now.Add(72 * time.Hour)},
		{"2026-11-23T09:00:00Z", time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)},
		{"2026-11-23T09:00:00+01:00", time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)},
		{"0s", time.Time{}}, {"-1h", time.Time{}}, {"Monday", time.Time{}}, {"d", time.Time{}}, {"2026-11-23", time.Time{}},
	} {
		got, err := parseUntil(tc.in, now)
		if tc.want.IsZero() {
			if err == nil {
				t.Errorf("parseUntil(%q): got %v; want an error", tc.in, got.AsTime())
			}
			continue
		}
		if err != nil || !got.AsTime().Equal(tc.want) {
			t.Errorf("parseUntil(%q): got %v, %v; want %v", tc.in, got.AsTime(), err, tc.want)
		}
	}
}

func TestParseStates(t *testing.T) {
	rs, err := parseRolloutStates("running, PAUSED")
	if err != nil || len(rs) != 2 || rs[0] != adminv1.RolloutState_ROLLOUT_STATE_RUNNING || rs[1] != adminv1.RolloutState_ROLLOUT_STATE_PAUSED {
		t.Fatalf("got %v, %v; want running, paused", rs, err)
	}
	for _, bad := range []string{"", "unspecified", "done", "running,"} {
		if _, err := parseRolloutStates(bad); err == nil {
			t.Errorf("parseRolloutStates(%q): got no error", bad)
		}
	}
	cs, err := parseClusterStates("failed,dispatched")
	if err != nil || len(cs) != 2 || cs[0] != adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_FAILED {
		t.Fatalf("got %v, %v; want failed, dispatched", cs, err)
	}
	if _, err := parseClusterStates("unreachable"); err == nil {
		t.Error("parseClusterStates(unreachable): got no error; unreachable is failed")
	}
}
