// Package waves plans upgrade rollouts: it divides the clusters a rollout
// selected into ordered waves and says, for each wave, how long to soak
// after it, how many of its clusters may upgrade at once and how many may
// fail before the rollout halts.
//
// It is planning arithmetic only, shared by the rollout engine (which saves
// the plan when a rollout starts) and Preview (which shows the same plan
// without starting). It must not read a clock, the store or anything else:
// Compute is a pure function of its arguments, so a Preview and a Start
// given the same candidates, shape, policy and seed produce identical plans.
//
// # Model
//
// Compute takes the candidates (the clusters the selector resolved to), a
// Shape, a Policy and a seed, typically the rollout's ID:
//
//   - Order. Candidates are ordered by SHA-256 of the seed and their ID, not
//     by their order in the argument or by name, so every rollout spreads
//     risk differently (a different seed puts different clusters first) while
//     the same seed always gives the same order.
//   - Reservation. With Policy.ReserveSensitive, sensitive candidates are taken
//     out first. The Shape plans the others; the sensitive ones follow in waves
//     of their own (one wave, or chunks of Policy.SensitiveBatchSize), so a
//     sensitive cluster never shares a wave with, or precedes, another cluster.
//   - Sizes. The Shape turns a number of clusters n into wave sizes that are at
//     least 1 and sum to n: Linear, Exponential, SCurve or Custom (see each).
//   - Soak. Each wave has a soak: how long the engine watches the wave's
//     clusters before it starts the next wave. It is Policy.BaseSoak for every
//     shape except SCurve, whose soaks shrink as confidence grows. The last
//     wave of the plan has no soak; the wave before the first sensitive wave
//     soaks at least BaseSoak.
//   - Concurrency. Policy.Concurrency caps the clusters of a wave that upgrade
//     at the same time; each Wave carries the cap resolved for its size.
//   - Failure budgets. A budget is the number of failed clusters that may be
//     tolerated; one failure more halts the rollout. Policy.FailureBudget
//     applies to each wave and Policy.GlobalFailureBudget to the whole
//     rollout. Both are given as a count or a percentage and resolved to a
//     count (see Budget).
//
// # Errors
//
// Invalid shapes and policies are reported as FieldErrors: every problem
// found, each a *FieldError naming the field in the API's snake_case path
// ("shape.linear.batch_size", "policy.failure_budget.percent"), so the API
// can return them as InvalidArgument field violations. A Custom shape whose
// sizes add up to more than the clusters to plan is also a FieldError, on
// "shape.custom.sizes". An empty candidate list is ErrNoCandidates; an empty
// or duplicate candidate ID is ErrInvalidCandidates, which is the caller's
// bug rather than the API user's.
package waves
