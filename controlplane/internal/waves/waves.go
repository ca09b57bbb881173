package waves

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/cairnhq/cairn/controlplane/internal/fielderr"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxBaseSoak bounds Policy.BaseSoak: a longer soak is far more likely a
// typo than an intent, and the bound keeps the S-curve's doubled soak far
// from overflow.
const MaxBaseSoak = 30 * 24 * time.Hour

var (
	// ErrNoCandidates means there is nothing to plan: the selector matched
	// no clusters.
	ErrNoCandidates = errors.New("no clusters to plan")
	// ErrInvalidCandidates means a candidate has an empty ID or the same ID
	// as another. Candidates come from the store, so this is a bug in the
	// caller, not bad input from the API user.
	ErrInvalidCandidates = errors.New("invalid candidates")
)

// FieldError is one problem with one field of a shape or policy; Field is
// relative to them ("shape.custom.percents[2]").
type FieldError = fielderr.FieldError

// FieldErrors is every problem Compute found with a shape and policy, in
// field order. errors.As finds the list, or its first *FieldError.
type FieldErrors = fielderr.FieldErrors

// Candidate is a cluster the rollout selected.
type Candidate struct {
	// ID identifies the cluster: non-empty, and unique among the candidates.
	ID string
	// Sensitive marks a cluster to upgrade after all the others when
	// Policy.ReserveSensitive is set; otherwise it is ignored.
	Sensitive bool
}

// Budget is a number of failed clusters that may be tolerated: a count, or
// a percentage of the clusters it applies to. At most one may be set; the
// zero Budget tolerates no failure.
//
// A percentage is resolved to a count by rounding down (to four decimal
// places of a percent first), with no minimum: a rounded budget never
// tolerates more than the fraction asked for, so 10% of a one-cluster canary
// wave is 0 and the canary has to succeed, which is what a canary is for. A
// count larger than the clusters it applies to resolves to their number.
type Budget struct {
	// Count is the number of failures tolerated; 0 means none, unless
	// Percent is set.
	Count int
	// Percent is the share of failures tolerated, between 0 and 100; 0 means
	// Count applies.
	Percent float64
}

func (b Budget) validate(field string) FieldErrors {
	var errs FieldErrors
	if b.Count < 0 {
		errs.Add(field+".count", "must not be negative")
	}
	if math.IsNaN(b.Percent) || b.Percent < 0 || b.Percent > 100 {
		errs.Add(field+".percent", "must be between 0 and 100")
	}
	if b.Count > 0 && b.Percent > 0 {
		errs.Add(field, "set count or percent, not both")
	}
	return errs
}

// Resolve returns the budget as a count for n clusters.
func (b Budget) Resolve(n int) int {
	if b.Percent > 0 {
		return toPPM(b.Percent) * n / ppmWhole
	}
	return min(b.Count, n)
}

// Policy is how a rollout moves through its waves. The zero Policy upgrades
// each whole wave at once with no soak and halts on the first failure.
type Policy struct {
	// BaseSoak is how long to watch a wave before starting the next; shapes
	// other than SCurve use it as is, SCurve scales it (see SCurve). It must
	// be between 0 and MaxBaseSoak; 0 means no soak.
	BaseSoak time.Duration
	// Concurrency is the most clusters of one wave that upgrade at the same
	// time; 0 means the whole wave at once.
	Concurrency int
	// FailureBudget applies to each wave on its own, a percentage to the
	// wave's size; the zero Budget tolerates no failure.
	FailureBudget Budget
	// GlobalFailureBudget applies to the whole rollout, a percentage to all
	// the candidates. nil means no global budget: only the per-wave budgets
	// halt the rollout.
	GlobalFailureBudget *Budget
	// ReserveSensitive keeps sensitive candidates out of the shape: they are
	// planned after all the others, in waves of their own. By then the
	// version has been through the rest of the fleet, so they do not get a
	// shape of their own: they go in one wave, or in chunks of
	// SensitiveBatchSize, each soaking BaseSoak, and the wave before them
	// soaks at least BaseSoak.
	ReserveSensitive bool
	// SensitiveBatchSize is the size of the sensitive waves, the last taking
	// the remainder; 0 means one wave. Setting it needs ReserveSensitive.
	SensitiveBatchSize int
}

func (p Policy) validate() FieldErrors {
	var errs FieldErrors
	if p.BaseSoak < 0 || p.BaseSoak > MaxBaseSoak {
		errs.Add("policy.base_soak", "must be between 0 and "+formatDuration(MaxBaseSoak))
	}
	if p.Concurrency < 0 {
		errs.Add("policy.concurrency", "must not be negative (0 means a whole wave at once)")
	}
	errs = append(errs, p.FailureBudget.validate("policy.failure_budget")...)
	if p.GlobalFailureBudget != nil {
		errs = append(errs, p.GlobalFailureBudget.validate("policy.global_failure_budget")...)
	}
	switch {
	case p.SensitiveBatchSize < 0:
		errs.Add("policy.sensitive_batch_size", "must not be negative (0 means one wave)")
	case p.SensitiveBatchSize > 0 && !p.ReserveSensitive:
		errs.Add("policy.sensitive_batch_size", "needs reserve_sensitive")
	}
	return errs
}

// Plan is the waves of a rollout, in order.
type Plan struct {
	// Waves holds every candidate exactly once; no wave is empty.
	Waves []Wave
	// GlobalFailureBudget is the number of failed clusters the whole
	// rollout tolerates. With no global budget in the policy it is the
	// number of clusters, which can never be exceeded.
	GlobalFailureBudget int
}

// Wave is one step of a Plan.
type Wave struct {
	// Index is the wave's position in Plan.Waves, from 0.
	Index int
	// ClusterIDs are the wave's clusters, in the order to start them.
	ClusterIDs []string
	// Soak is how long to watch the wave after its last cluster upgraded,
	// before starting the next wave; 0 for the last wave.
	Soak time.Duration
	// Concurrency is the most clusters of the wave to upgrade at the same
	// time, between 1 and the wave's size.
	Concurrency int
	// FailureBudget is the number of failed clusters the wave tolerates; one
	// more halts the rollout.
	FailureBudget int
	// Sensitive is set on the waves that hold the reserved sensitive
	// clusters, which are the last waves of the plan.
	Sensitive bool
}

// Validate reports what is wrong with a shape and policy whatever the
// candidates, as FieldErrors; nil when nothing is.
func Validate(shape Shape, policy Policy) error {
	var errs FieldErrors
	if shape == nil {
		errs.Add("shape", "required")
	} else {
		errs = append(errs, shape.validate()...)
	}
	errs = append(errs, policy.validate()...)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Compute plans the rollout of candidates in waves of the given shape with
// the given policy. The order of candidates does not matter: they are
// ordered by SHA-256 of seed and ID (see the package doc), so the same
// arguments give the same plan and a different seed a different order.
//
// Errors are FieldErrors for a bad shape or policy, ErrNoCandidates, or
// ErrInvalidCandidates.
func Compute(candidates []Candidate, shape Shape, policy Policy, seed string) (Plan, error) {
	if err := Validate(shape, policy); err != nil {
		return Plan{}, err
	}
	ordered, err := order(candidates, seed)
	if err != nil {
		return Plan{}, err
	}
	var regular, sensitive []string
	for _, c := range ordered {
		if policy.ReserveSensitive && c.Sensitive {
			sensitive = append(sensitive, c.ID)
		} else {
			regular = append(regular, c.ID)
		}
	}

	var p Plan
	if len(regular) > 0 {
		sizes, quarters, err := shape.layout(len(regular))
		if errs, ok := err.(FieldErrors); ok && len(sensitive) > 0 {
			for _, fe := range errs {
				fe.Reason += fmt.Sprintf(" (the %d sensitive ones are reserved for the last waves)", len(sensitive))
			}
		}
		if err != nil {
			return Plan{}, err
		}
		p.add(regular, sizes, quarters, policy, false)
	}
	if len(sensitive) > 0 {
		if len(p.Waves) > 0 {
			gate := &p.Waves[len(p.Waves)-1]
			gate.Soak = max(gate.Soak, policy.BaseSoak)
		}
		batch := policy.SensitiveBatchSize
		if batch == 0 {
			batch = len(sensitive)
		}
		sizes := chunks(len(sensitive), batch)
		p.add(sensitive, sizes, full(len(sizes)), policy, true)
	}
	p.Waves[len(p.Waves)-1].Soak = 0

	p.GlobalFailureBudget = len(ordered)
	if policy.GlobalFailureBudget != nil {
		p.GlobalFailureBudget = policy.GlobalFailureBudget.Resolve(len(ordered))
	}
	return p, nil
}

// add appends waves of the given sizes and soaks (in quarters of the base
// soak) holding ids in order.
func (p *Plan) add(ids []string, sizes, soakQuarters []int, policy Policy, sensitive bool) {
	for i, size := range sizes {
		concurrency := size
		if policy.Concurrency > 0 {
			concurrency = min(policy.Concurrency, size)
		}
		p.Waves = append(p.Waves, Wave{
			Index:         len(p.Waves),
			ClusterIDs:    ids[:size:size],
			Soak:          policy.BaseSoak * time.Duration(soakQuarters[i]) / fullSoak,
			Concurrency:   concurrency,
			FailureBudget: policy.FailureBudget.Resolve(size),
			Sensitive:     sensitive,
		})
		ids = ids[size:]
	}
}

// order checks the candidates and sorts them by SHA-256 of the seed's
// length, the seed and the ID; the length keeps seed "a" with ID "bc" apart
// from seed "ab" with ID "c".
func order(candidates []Candidate, seed string) ([]Candidate, error) {
	if len(candidates) == 0 {
		return nil, ErrNoCandidates
	}
	type keyed struct {
		key [sha256.Size]byte
		c   Candidate
	}
	ks := make([]keyed, len(candidates))
	seen := make(map[string]int, len(candidates))
	buf := binary.AppendUvarint(nil, uint64(len(seed)))
	buf = append(buf, seed...)
	prefix := len(buf)
	for i, c := range candidates {
		if c.ID == "" {
			return nil, fmt.Errorf("%w: candidate %d has an empty ID", ErrInvalidCandidates, i)
		}
		if j, dup := seen[c.ID]; dup {
			return nil, fmt.Errorf("%w: candidates %d and %d have the same ID %q", ErrInvalidCandidates, j, i, c.ID)
		}
		seen[c.ID] = i
		buf = append(buf[:prefix], c.ID...)
		ks[i] = keyed{key: sha256.Sum256(buf), c: c}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if c := bytes.Compare(a.key[:], b.key[:]); c != 0 {
			return c
		}
		return strings.Compare(a.c.ID, b.c.ID)
	})
	out := make([]Candidate, len(ks))
	for i, k := range ks {
		out[i] = k.c
	}
	return out, nil
}

// Clusters returns the number of clusters in the plan.
func (p Plan) Clusters() int {
	n := 0
	for _, w := range p.Waves {
		n += len(w.ClusterIDs)
	}
	return n
}

// String returns a one-line summary, e.g. "3 clusters in 2 waves, global
// budget 1; wave 1: 1 cluster, soak 2h, budget 0; wave 2: 2 clusters, 1 at a
// time, budget 0".
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s in %s, global budget %d", plural(p.Clusters(), "cluster"), plural(len(p.Waves), "wave"), p.GlobalFailureBudget)
	for _, w := range p.Waves {
		b.WriteString("; ")
		b.WriteString(w.String())
	}
	return b.String()
}

// String returns a summary such as "wave 3 (sensitive): 4 clusters, soak
// 1h30m, 2 at a time, budget 1". The number is Index+1; soak and
// concurrency are left out when there is none and the whole wave at once.
func (w Wave) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wave %d", w.Index+1)
	if w.Sensitive {
		b.WriteString(" (sensitive)")
	}
	b.WriteString(": " + plural(len(w.ClusterIDs), "cluster"))
	if w.Soak > 0 {
		b.WriteString(", soak " + formatDuration(w.Soak))
	}
	if w.Concurrency < len(w.ClusterIDs) {
		fmt.Fprintf(&b, ", %d at a time", w.Concurrency)
	}
	fmt.Fprintf(&b, ", budget %d", w.FailureBudget)
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// formatDuration is time.Duration.String without the zero units at the end:
// "2h", "1h30m", "15m", "7m30s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
