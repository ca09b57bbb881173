// Package deploy holds the files that run Cairn in production: Kubernetes
// manifests for the control plane (kubernetes/) and for CockroachDB
// (cockroachdb/), and a systemd unit (systemd/). Its test is the CI check
// that keeps them in step with cairn-controlplane's real flags.
//
// It has no code and nothing imports it; it must not grow any. Operator
// tooling belongs under cmd/.
package deploy
