package compat

import (
	"testing"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

func TestCheck(t *testing.T) {
	rel := func(cons ...store.Constraint) store.Release {
		return store.Release{Product: "kafka", Version: "1.3.0", Constraints: cons}
	}
	host := func(r string) store.Constraint { return store.Constraint{Component: Host, Range: r} }
	for _, tc := range []struct {
		name    string
		rel     store.Release
		host    string
		refused bool
	}{
		{"no constraints", rel(), "", false},
		{"host in range", rel(host(">=3.4.0")), "3.5.1", false},
		{"host below", rel(host(">=3.4.0")), "3.3.9", true},
		{"partial version is a wildcard", rel(host(">3.4")), "3.4.7", true},
		{"two constraints, second fails", rel(host(">=3.0.0"), host("<4.0.0")), "4.1.0", true},
		{"unknown host version", rel(host(">=3.4.0")), "", true},
		{"host not semver", rel(host(">=3.4.0")), "jammy", true},
		{"untracked component", rel(store.Constraint{Component: "kernel", Range: ">=6.0.0"}), "3.5.0", true},
	} {
		got := Check(tc.rel, store.Cluster{HostVersion: tc.host})
		if (got != nil) != tc.refused {
			t.Errorf("%s: got %v; want refused=%v", tc.name, got, tc.refused)
		}
		if got != nil && got.String() == "" {
			t.Errorf("%s: refusal without a description", tc.name)
		}
	}
}
