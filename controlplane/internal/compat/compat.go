// Package compat decides whether a release may run on a cluster: every
// compatibility constraint of the release must hold for the cluster's
// component versions (today the host's). Rollouts check it when planning
// and again before dispatching each cluster. It reads no store.
package compat

import (
	"fmt"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/versions"
)

// Host is the component name of a cluster's host version.
const Host = "host"

// Refusal says which constraint a cluster fails, for the rollout plan's
// list of skipped clusters.
type Refusal struct {
	Constraint store.Constraint
	// Have is the cluster's version of the component; "" if unknown.
	Have   string
	Reason string
}

func (r Refusal) String() string {
	return fmt.Sprintf("%s %s: %s", r.Constraint.Component, r.Constraint.Range, r.Reason)
}

// Check returns nil when rel may run on c, or the first constraint it
// fails. A cluster whose host version is unknown or not semver fails any
// host constraint: an upgrade is not dispatched on a guess. A constraint
// on a component Cairn does not track fails the same way.
func Check(rel store.Release, c store.Cluster) *Refusal {
	for _, con := range rel.Constraints {
		r, err := versions.ParseRange(con.Range)
		if err != nil {
			return &Refusal{Constraint: con, Reason: "the release's range does not parse: " + err.Error()}
		}
		if con.Component != Host {
			return &Refusal{Constraint: con, Reason: "Cairn does not track component " + con.Component}
		}
		if c.HostVersion == "" {
			return &Refusal{Constraint: con, Reason: "the cluster's host version is unknown"}
		}
		v, err := versions.Parse(c.HostVersion)
		if err != nil {
			return &Refusal{Constraint: con, Have: c.HostVersion, Reason: "the cluster's host version is not semver"}
		}
		if !r.Contains(v) {
			return &Refusal{Constraint: con, Have: c.HostVersion, Reason: "host " + c.HostVersion + " is outside the range"}
		}
	}
	return nil
}
