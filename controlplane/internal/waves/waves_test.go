package waves

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// fleet returns n candidates "c0", "c1", …; every sensitiveEvery-th one
// (from c0) is sensitive, none if sensitiveEvery is 0.
func fleet(n, sensitiveEvery int) []Candidate {
	cs := make([]Candidate, n)
	for i := range cs {
		cs[i] = Candidate{ID: "c" + strconv.Itoa(i), Sensitive: sensitiveEvery > 0 && i%sensitiveEvery == 0}
	}
	return cs
}

func sizesOf(waves []Wave) []int {
	out := make([]int, len(waves))
	for i, w := range waves {
		out[i] = len(w.ClusterIDs)
	}
	return out
}

func soaksOf(waves []Wave) []time.Duration {
	out := make([]time.Duration, len(waves))
	for i, w := range waves {
		out[i] = w.Soak
	}
	return out
}

// mustCompute computes a plan and checks the invariants every plan keeps.
func mustCompute(tb testing.TB, cs []Candidate, shape Shape, policy Policy, seed string) Plan {
	tb.Helper()
	p, err := Compute(cs, shape, policy, seed)
	if err != nil {
		tb.Fatalf("Compute: %v", err)
	}
	checkPlan(tb, p, cs, policy)
	return p
}

// checkPlan checks what holds for every plan: each candidate in exactly one
// wave, no empty wave, indexes in order, sensitive clusters only in the
// trailing sensitive waves, no soak after the last wave, and concurrency and
// budgets within the wave's size.
func checkPlan(tb testing.TB, p Plan, cs []Candidate, policy Policy) {
	tb.Helper()
	sensitive := make(map[string]bool, len(cs))
	for _, c := range cs {
		sensitive[c.ID] = c.Sensitive
	}
	seen := make(map[string]int, len(cs))
	inSensitive := false
	for i, w := range p.Waves {
		if w.Index != i {
			tb.Errorf("wave %d: got Index %d; want %d", i, w.Index, i)
		}
		if len(w.ClusterIDs) == 0 {
			tb.Errorf("wave %d: empty", i)
		}
		if w.Concurrency < 1 || w.Concurrency > len(w.ClusterIDs) {
			tb.Errorf("wave %d: got concurrency %d; want 1 to %d", i, w.Concurrency, len(w.ClusterIDs))
		}
		if w.FailureBudget < 0 || w.FailureBudget > len(w.ClusterIDs) {
			tb.Errorf("wave %d: got budget %d; want 0 to %d", i, w.FailureBudget, len(w.ClusterIDs))
		}
		if w.Soak < 0 {
			tb.Errorf("wave %d: got soak %v; want ≥ 0", i, w.Soak)
		}
		if inSensitive && !w.Sensitive {
			tb.Errorf("wave %d: not sensitive, after a sensitive wave", i)
		}
		inSensitive = w.Sensitive
		if w.Sensitive && !policy.ReserveSensitive {
			tb.Errorf("wave %d: sensitive without ReserveSensitive", i)
		}
		for _, id := range w.ClusterIDs {
			s, ok := sensitive[id]
			if !ok {
				tb.Errorf("wave %d: cluster %q is not a candidate", i, id)
			}
			if j, dup := seen[id]; dup {
				tb.Errorf("cluster %q in waves %d and %d", id, j, i)
			}
			seen[id] = i
			if policy.ReserveSensitive && s != w.Sensitive {
				tb.Errorf("wave %d (sensitive %v): got cluster %q with sensitive %v", i, w.Sensitive, id, s)
			}
		}
	}
	if len(seen) != len(cs) {
		tb.Errorf("got %d clusters planned; want %d", len(seen), len(cs))
	}
	if p.Clusters() != len(cs) {
		tb.Errorf("got Clusters() %d; want %d", p.Clusters(), len(cs))
	}
	if n := len(p.Waves); n > 0 && p.Waves[n-1].Soak != 0 {
		tb.Errorf("last wave: got soak %v; want 0", p.Waves[n-1].Soak)
	}
	if p.GlobalFailureBudget < 0 || p.GlobalFailureBudget > len(cs) {
		tb.Errorf("got global budget %d; want 0 to %d", p.GlobalFailureBudget, len(cs))
	}
}

// checkCurve checks S-curve sizes: at least 1 each, summing to n, rising to
// the middle wave and falling after it.
func checkCurve(tb testing.TB, sizes []int, n int) {
	tb.Helper()
	if got := sum(sizes); got != n {
		tb.Errorf("%v: got sum %d; want %d", sizes, got, n)
	}
	if len(sizes) == 0 || len(sizes) > 10 {
		tb.Errorf("%v: got %d waves; want 1 to 10", sizes, len(sizes))
		return
	}
	peak := len(sizes) / 2
	for i, s := range sizes {
		if s < 1 {
			tb.Errorf("%v: wave %d has %d clusters; want at least 1", sizes, i, s)
		}
		if i > 0 && i <= peak && s < sizes[i-1] {
			tb.Errorf("%v: falls at wave %d, before the peak at %d", sizes, i, peak)
		}
		if i > peak && s > sizes[i-1] {
			tb.Errorf("%v: rises at wave %d, after the peak at %d", sizes, i, peak)
		}
	}
	if m := slices.Max(sizes); sizes[peak] != m {
		tb.Errorf("%v: got middle wave %d; want the largest, %d", sizes, sizes[peak], m)
	}
}

func TestSCurveSizes(t *testing.T) {
	tests := []struct {
		n    int
		want []int
	}{
		{1, []int{1}},
		{2, []int{1, 1}},
		{3, []int{1, 2}},
		{4, []int{2, 2}},
		{5, []int{1, 1, 2, 1}},
		{6, []int{1, 1, 3, 1}},
		{7, []int{1, 1, 3, 2}},
		{8, []int{1, 2, 3, 2}},
		{9, []int{2, 2, 3, 2}},
		{10, []int{1, 1, 2, 3, 2, 1}},
		{17, []int{2, 2, 3, 5, 3, 2}},
		{18, []int{1, 1, 2, 3, 5, 3, 2, 1}},
		{30, []int{2, 2, 3, 5, 8, 5, 3, 2}},
		{31, []int{1, 1, 2, 3, 5, 8, 5, 3, 2, 1}},
		{32, []int{1, 1, 2, 3, 5, 9, 5, 3, 2, 1}},
		{62, []int{2, 2, 4, 6, 10, 16, 10, 6, 4, 2}},
		{100, []int{3, 3, 6, 10, 16, 26, 16, 10, 7, 3}},
		{10_000, []int{322, 322, 645, 968, 1613, 2581, 1613, 968, 645, 323}},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			p := mustCompute(t, fleet(tt.n, 0), SCurve{}, Policy{}, "seed")
			got := sizesOf(p.Waves)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
			checkCurve(t, got, tt.n)
		})
	}
}

// TestSCurveShapeHolds checks the curve's properties for every n up to 2000
// and some larger ones.
func TestSCurveShapeHolds(t *testing.T) {
	ns := []int{4096, 9_999, 10_000, 10_001, 123_457, 1_000_000}
	for n := 1; n <= 2000; n++ {
		ns = append(ns, n)
	}
	for _, n := range ns {
		sizes, quarters, err := SCurve{}.layout(n)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(quarters) != len(sizes) {
			t.Fatalf("n=%d: got %d soaks for %d waves", n, len(quarters), len(sizes))
		}
		checkCurve(t, sizes, n)
		// The longest curve that fits: curves[k] has 2k waves (k > 0).
		k := len(sizes) / 2
		if sum(curves[k]) > n || k+1 < len(curves) && sum(curves[k+1]) <= n {
			t.Errorf("n=%d: got %d waves %v; want the longest curve whose sum is at most n", n, len(sizes), sizes)
		}
	}
}

func TestSCurveSoaks(t *testing.T) {
	const h = time.Hour
	tests := []struct {
		n      int
		policy Policy
		want   []time.Duration
	}{
		{1, Policy{BaseSoak: h}, []time.Duration{0}},
		{2, Policy{BaseSoak: h}, []time.Duration{2 * h, 0}},
		{7, Policy{BaseSoak: h}, []time.Duration{2 * h, 2 * h, h / 2, 0}},
		{10, Policy{BaseSoak: h}, []time.Duration{2 * h, 2 * h, h, h / 2, h / 4, 0}},
		{18, Policy{BaseSoak: h}, []time.Duration{2 * h, 2 * h, h, h, h / 2, h / 4, h / 4, 0}},
		{100, Policy{BaseSoak: h}, []time.Duration{2 * h, 2 * h, h, h, h, h / 2, h / 4, h / 4, h / 4, 0}},
		{100, Policy{BaseSoak: 0}, make([]time.Duration, 10)},
		{100, Policy{BaseSoak: 3 * time.Second}, []time.Duration{
			6 * time.Second, 6 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second,
			1500 * time.Millisecond, 750 * time.Millisecond, 750 * time.Millisecond, 750 * time.Millisecond, 0,
		}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%v", tt.n, tt.policy.BaseSoak), func(t *testing.T) {
			p := mustCompute(t, fleet(tt.n, 0), SCurve{}, tt.policy, "seed")
			if got := soaksOf(p.Waves); !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestExponentialSizes(t *testing.T) {
	tests := []struct {
		shape Exponential
		n     int
		want  []int
	}{
		{Exponential{}, 1, []int{1}},
		{Exponential{}, 2, []int{1, 1}},
		{Exponential{}, 7, []int{1, 2, 4}},
		{Exponential{}, 10, []int{1, 2, 4, 3}},
		{Exponential{}, 100, []int{1, 2, 4, 8, 16, 32, 37}},
		{Exponential{Start: 1, Factor: 2}, 15, []int{1, 2, 4, 8}},
		{Exponential{Start: 5}, 100, []int{5, 10, 20, 40, 25}},
		{Exponential{Factor: 3}, 100, []int{1, 3, 9, 27, 60}},
		{Exponential{Start: 2, Factor: 10}, 1000, []int{2, 20, 200, 778}},
		{Exponential{Start: 50}, 10, []int{10}},
		{Exponential{Start: math.MaxInt, Factor: math.MaxInt}, 3, []int{3}},
		{Exponential{Start: 3, Factor: math.MaxInt}, 10, []int{3, 7}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v/%d", tt.shape, tt.n), func(t *testing.T) {
			p := mustCompute(t, fleet(tt.n, 0), tt.shape, Policy{BaseSoak: time.Hour}, "seed")
			if got := sizesOf(p.Waves); !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
			for i, w := range p.Waves[:len(p.Waves)-1] {
				if w.Soak != time.Hour {
					t.Errorf("wave %d: got soak %v; want 1h", i, w.Soak)
				}
			}
		})
	}
}

func TestLinearSizes(t *testing.T) {
	tests := []struct {
		batch, n int
		want     []int
	}{
		{1, 1, []int{1}},
		{1, 3, []int{1, 1, 1}},
		{5, 5, []int{5}},
		{5, 12, []int{5, 5, 2}},
		{10, 100, []int{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}},
		{100, 7, []int{7}},
		{math.MaxInt, 7, []int{7}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%d", tt.batch, tt.n), func(t *testing.T) {
			p := mustCompute(t, fleet(tt.n, 0), Linear{BatchSize: tt.batch}, Policy{BaseSoak: time.Minute}, "seed")
			if got := sizesOf(p.Waves); !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
			for i, w := range p.Waves[:len(p.Waves)-1] {
				if w.Soak != time.Minute {
					t.Errorf("wave %d: got soak %v; want 1m", i, w.Soak)
				}
			}
		})
	}
}

func TestCustomSizes(t *testing.T) {
	tests := []struct {
		name  string
		shape Custom
		n     int
		want  []int
	}{
		{"sizes exact", Custom{Sizes: []int{1, 2, 3}}, 6, []int{1, 2, 3}},
		{"sizes rest in a final wave", Custom{Sizes: []int{1, 10}}, 50, []int{1, 10, 39}},
		{"one size", Custom{Sizes: []int{1}}, 1, []int{1}},
		{"percents to 100", Custom{Percents: []float64{10, 40, 50}}, 100, []int{10, 40, 50}},
		{"percents last listed takes the rounding", Custom{Percents: []float64{50, 50}}, 7, []int{3, 4}},
		{"percents cumulative, no drift", Custom{Percents: []float64{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}}, 95,
			[]int{9, 10, 9, 10, 9, 10, 9, 10, 9, 10}},
		{"percents thirds", Custom{Percents: []float64{33.3, 33.3, 33.4}}, 10, []int{3, 3, 4}},
		{"percents under 100, rest in a final wave", Custom{Percents: []float64{1, 9}}, 200, []int{2, 18, 180}},
		{"percent rounding to 0 gets 1", Custom{Percents: []float64{1, 99}}, 7, []int{1, 6}},
		{"percents run out of clusters", Custom{Percents: []float64{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}}, 7,
			[]int{1, 1, 1, 1, 1, 1, 1}},
		{"percents fractional", Custom{Percents: []float64{0.001, 99.999}}, 100_000, []int{1, 99_999}},
		{"percent 100", Custom{Percents: []float64{100}}, 3, []int{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompute(t, fleet(tt.n, 0), tt.shape, Policy{BaseSoak: time.Hour}, "seed")
			if got := sizesOf(p.Waves); !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestCustomSizesTooMany(t *testing.T) {
	tests := []struct {
		name      string
		n, every  int
		reserve   bool
		wantError bool
	}{
		{"fits", 6, 0, false, false},
		{"one short", 5, 0, false, true},
		// 7 candidates, 3 sensitive: the 6 sizes must fit in the 4 others.
		{"sensitive reserved", 7, 3, true, true},
		{"sensitive not reserved", 7, 3, false, false},
		// Every candidate sensitive and reserved: the shape plans nothing.
		{"all sensitive", 5, 1, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compute(fleet(tt.n, tt.every), Custom{Sizes: []int{1, 2, 3}}, Policy{ReserveSensitive: tt.reserve}, "seed")
			if !tt.wantError {
				if err != nil {
					t.Fatalf("got %v; want no error", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "shape.custom.sizes" {
				t.Fatalf("got %v; want a FieldError on shape.custom.sizes", err)
			}
		})
	}
}

func TestReserveSensitive(t *testing.T) {
	const h = time.Hour
	tests := []struct {
		name        string
		n, every    int // every every-th candidate is sensitive
		shape       Shape
		policy      Policy
		wantRegular []int
		wantSens    []int
		wantSoaks   []time.Duration
	}{
		{
			name: "s-curve then one sensitive wave", n: 100, every: 10, shape: SCurve{},
			policy:      Policy{BaseSoak: h, ReserveSensitive: true},
			wantRegular: []int{3, 3, 6, 9, 14, 23, 14, 9, 6, 3}, // the curve for 90
			wantSens:    []int{10},
			wantSoaks:   []time.Duration{2 * h, 2 * h, h, h, h, h / 2, h / 4, h / 4, h / 4, h, 0},
		},
		{
			name: "linear then sensitive chunks", n: 23, every: 4, shape: Linear{BatchSize: 5},
			policy:      Policy{BaseSoak: h, ReserveSensitive: true, SensitiveBatchSize: 2},
			wantRegular: []int{5, 5, 5, 2},
			wantSens:    []int{2, 2, 2},
			wantSoaks:   []time.Duration{h, h, h, h, h, h, 0},
		},
		{
			name: "exponential, sensitive batch larger than the sensitive", n: 10, every: 5, shape: Exponential{},
			policy:      Policy{BaseSoak: h, ReserveSensitive: true, SensitiveBatchSize: 10},
			wantRegular: []int{1, 2, 4, 1},
			wantSens:    []int{2},
			wantSoaks:   []time.Duration{h, h, h, h, 0},
		},
		{
			name: "custom applies to the others", n: 12, every: 3, shape: Custom{Sizes: []int{1, 2}},
			policy:      Policy{BaseSoak: h, ReserveSensitive: true},
			wantRegular: []int{1, 2, 5},
			wantSens:    []int{4},
			wantSoaks:   []time.Duration{h, h, h, 0},
		},
		{
			name: "all sensitive", n: 5, every: 1, shape: SCurve{},
			policy:    Policy{BaseSoak: h, ReserveSensitive: true},
			wantSens:  []int{5},
			wantSoaks: []time.Duration{0},
		},
		{
			name: "none sensitive", n: 5, every: 0, shape: SCurve{},
			policy:      Policy{BaseSoak: h, ReserveSensitive: true},
			wantRegular: []int{1, 1, 2, 1},
			wantSoaks:   []time.Duration{2 * h, 2 * h, h / 2, 0},
		},
		{
			name: "not reserved: sensitive mixed in", n: 10, every: 2, shape: Linear{BatchSize: 5},
			policy:      Policy{BaseSoak: h},
			wantRegular: []int{5, 5},
			wantSoaks:   []time.Duration{h, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fleet(tt.n, tt.every)
			p := mustCompute(t, cs, tt.shape, tt.policy, "seed")
			want := append(slices.Clone(tt.wantRegular), tt.wantSens...)
			if got := sizesOf(p.Waves); !slices.Equal(got, want) {
				t.Errorf("got sizes %v; want %v", got, want)
			}
			for i, w := range p.Waves {
				if wantSens := i >= len(tt.wantRegular); w.Sensitive != wantSens {
					t.Errorf("wave %d: got Sensitive %v; want %v", i, w.Sensitive, wantSens)
				}
			}
			if got := soaksOf(p.Waves); !slices.Equal(got, tt.wantSoaks) {
				t.Errorf("got soaks %v; want %v", got, tt.wantSoaks)
			}
		})
	}
}

func TestDeterminism(t *testing.T) {
	cs := fleet(100, 7)
	policy := Policy{BaseSoak: time.Hour, Concurrency: 3, FailureBudget: Budget{Percent: 10}, ReserveSensitive: true}
	shapes := []Shape{SCurve{}, Linear{BatchSize: 7}, Exponential{}, Custom{Percents: []float64{5, 20}}}
	for _, shape := range shapes {
		t.Run(fmt.Sprintf("%T", shape), func(t *testing.T) {
			a := mustCompute(t, cs, shape, policy, "rollout-1")
			b := mustCompute(t, cs, shape, policy, "rollout-1")
			if !reflect.DeepEqual(a, b) {
				t.Errorf("same seed: got\n%v\nand\n%v", a.Waves, b.Waves)
			}

			// The order of the candidates does not matter: Preview and Start
			// may list them differently.
			shuffled := slices.Clone(cs)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) {
				shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
			})
			if c := mustCompute(t, shuffled, shape, policy, "rollout-1"); !reflect.DeepEqual(a, c) {
				t.Errorf("shuffled candidates: got\n%v\nwant\n%v", c.Waves, a.Waves)
			}

			// A different seed keeps the sizes but not the order.
			d := mustCompute(t, cs, shape, policy, "rollout-2")
			if !slices.Equal(sizesOf(a.Waves), sizesOf(d.Waves)) {
				t.Errorf("different seed: got sizes %v; want %v", sizesOf(d.Waves), sizesOf(a.Waves))
			}
			if slices.Equal(ids(a), ids(d)) {
				t.Errorf("different seed: got the same order %v", ids(a))
			}
		})
	}
}

// TestOrderPinned pins the hash order, so that a change to it, which would
// make a saved plan and a new Preview disagree, is deliberate.
func TestOrderPinned(t *testing.T) {
	p := mustCompute(t, fleet(5, 0), Linear{BatchSize: 5}, Policy{}, "rollout-1")
	want := []string{"c1", "c4", "c2", "c0", "c3"} // sorted by SHA-256("\x09rollout-1" + ID)
	if got := ids(p); !slices.Equal(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
}

func ids(p Plan) []string {
	var out []string
	for _, w := range p.Waves {
		out = append(out, w.ClusterIDs...)
	}
	return out
}

func TestEveryCandidateOnce(t *testing.T) {
	shapes := []Shape{SCurve{}, Linear{BatchSize: 1}, Linear{BatchSize: 33}, Exponential{Start: 3, Factor: 3},
		Custom{Sizes: []int{1, 1, 5}}, Custom{Percents: []float64{0.5, 2, 50}}}
	for _, shape := range shapes {
		for _, n := range []int{1, 2, 7, 10, 31, 100, 1000} {
			for _, every := range []int{0, 1, 3} {
				for _, reserve := range []bool{false, true} {
					name := fmt.Sprintf("%+v/n=%d/every=%d/reserve=%v", shape, n, every, reserve)
					t.Run(name, func(t *testing.T) {
						cs := fleet(n, every)
						p, err := Compute(cs, shape, Policy{ReserveSensitive: reserve}, name)
						if err != nil {
							var fe *FieldError
							if errors.As(err, &fe) && fe.Field == "shape.custom.sizes" {
								return // the sizes do not fit in n
							}
							t.Fatal(err)
						}
						checkPlan(t, p, cs, Policy{ReserveSensitive: reserve})
					})
				}
			}
		}
	}
}

func TestCandidateErrors(t *testing.T) {
	tests := []struct {
		name       string
		candidates []Candidate
		want       error
	}{
		{"nil", nil, ErrNoCandidates},
		{"empty", []Candidate{}, ErrNoCandidates},
		{"empty ID", []Candidate{{ID: "a"}, {ID: ""}}, ErrInvalidCandidates},
		{"duplicate ID", []Candidate{{ID: "a"}, {ID: "b"}, {ID: "a", Sensitive: true}}, ErrInvalidCandidates},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compute(tt.candidates, SCurve{}, Policy{}, "seed")
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
	_, err := Compute([]Candidate{{ID: "a"}, {ID: "b"}, {ID: "a"}}, SCurve{}, Policy{}, "seed")
	if want := `invalid candidates: candidates 0 and 2 have the same ID "a"`; err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
}

func TestFailureBudgets(t *testing.T) {
	tests := []struct {
		name       string
		n          int
		shape      Shape
		policy     Policy
		wantWaves  []int // budget of each wave
		wantGlobal int
	}{
		{"zero tolerates none", 10, Linear{BatchSize: 4}, Policy{},
			[]int{0, 0, 0}, 10},
		{"count", 10, Linear{BatchSize: 4}, Policy{FailureBudget: Budget{Count: 1}, GlobalFailureBudget: &Budget{Count: 2}},
			[]int{1, 1, 1}, 2},
		{"count capped at the size", 10, Linear{BatchSize: 4}, Policy{FailureBudget: Budget{Count: 3}, GlobalFailureBudget: &Budget{Count: 50}},
			[]int{3, 3, 2}, 10},
		{"percent rounds down", 10, Linear{BatchSize: 4}, Policy{FailureBudget: Budget{Percent: 50}, GlobalFailureBudget: &Budget{Percent: 15}},
			[]int{2, 2, 1}, 1},
		{"percent of a canary is 0", 100, SCurve{}, Policy{FailureBudget: Budget{Percent: 10}},
			[]int{0, 0, 0, 1, 1, 2, 1, 1, 0, 0}, 100},
		{"percent 100", 10, Linear{BatchSize: 4}, Policy{FailureBudget: Budget{Percent: 100}, GlobalFailureBudget: &Budget{Percent: 100}},
			[]int{4, 4, 2}, 10},
		{"percent four decimals", 10_000, Linear{BatchSize: 10_000}, Policy{FailureBudget: Budget{Percent: 0.0101}, GlobalFailureBudget: &Budget{Percent: 0.00994}},
			[]int{1}, 0},
		{"global zero tolerates none", 10, Linear{BatchSize: 4}, Policy{FailureBudget: Budget{Count: 1}, GlobalFailureBudget: &Budget{}},
			[]int{1, 1, 1}, 0},
		{"sensitive waves resolve on their size", 20, Linear{BatchSize: 10}, Policy{FailureBudget: Budget{Percent: 20}, ReserveSensitive: true, GlobalFailureBudget: &Budget{Percent: 10}},
			[]int{2, 1, 1}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			every := 0
			if tt.policy.ReserveSensitive {
				every = 4 // 5 of 20
			}
			p := mustCompute(t, fleet(tt.n, every), tt.shape, tt.policy, "seed")
			got := make([]int, len(p.Waves))
			for i, w := range p.Waves {
				got[i] = w.FailureBudget
			}
			if !slices.Equal(got, tt.wantWaves) {
				t.Errorf("got wave budgets %v; want %v (sizes %v)", got, tt.wantWaves, sizesOf(p.Waves))
			}
			if p.GlobalFailureBudget != tt.wantGlobal {
				t.Errorf("got global budget %d; want %d", p.GlobalFailureBudget, tt.wantGlobal)
			}
		})
	}
}

func TestConcurrency(t *testing.T) {
	tests := []struct {
		concurrency int
		want        []int
	}{
		{0, []int{1, 2, 4, 8, 5}},
		{1, []int{1, 1, 1, 1, 1}},
		{3, []int{1, 2, 3, 3, 3}},
		{100, []int{1, 2, 4, 8, 5}},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.concurrency), func(t *testing.T) {
			p := mustCompute(t, fleet(20, 0), Exponential{}, Policy{Concurrency: tt.concurrency}, "seed")
			got := make([]int, len(p.Waves))
			for i, w := range p.Waves {
				got[i] = w.Concurrency
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		shape  Shape
		policy Policy
		want   []string // fields, in order
	}{
		{"no shape", nil, Policy{}, []string{"shape"}},
		{"linear zero", Linear{}, Policy{}, []string{"shape.linear.batch_size"}},
		{"linear negative", Linear{BatchSize: -1}, Policy{}, []string{"shape.linear.batch_size"}},
		{"exponential negative start", Exponential{Start: -1}, Policy{}, []string{"shape.exponential.start"}},
		{"exponential factor 1", Exponential{Factor: 1}, Policy{}, []string{"shape.exponential.factor"}},
		{"exponential both", Exponential{Start: -2, Factor: -2}, Policy{},
			[]string{"shape.exponential.start", "shape.exponential.factor"}},
		{"custom empty", Custom{}, Policy{}, []string{"shape.custom"}},
		{"custom both", Custom{Sizes: []int{1}, Percents: []float64{1}}, Policy{}, []string{"shape.custom"}},
		{"custom size 0", Custom{Sizes: []int{1, 0, -3}}, Policy{},
			[]string{"shape.custom.sizes[1]", "shape.custom.sizes[2]"}},
		{"custom too many sizes", Custom{Sizes: make([]int, 1001)}, Policy{}, []string{"shape.custom.sizes"}},
		{"custom too many percents", Custom{Percents: make([]float64, 1001)}, Policy{}, []string{"shape.custom.percents"}},
		{"custom percents out of range", Custom{Percents: []float64{0, -1, 100.5, math.NaN(), math.Inf(1), 0.00001}}, Policy{},
			[]string{"shape.custom.percents[0]", "shape.custom.percents[1]", "shape.custom.percents[2]",
				"shape.custom.percents[3]", "shape.custom.percents[4]", "shape.custom.percents[5]"}},
		{"custom percents over 100", Custom{Percents: []float64{60, 40.001}}, Policy{}, []string{"shape.custom.percents"}},
		{"negative soak", SCurve{}, Policy{BaseSoak: -time.Second}, []string{"policy.base_soak"}},
		{"soak too long", SCurve{}, Policy{BaseSoak: MaxBaseSoak + 1}, []string{"policy.base_soak"}},
		{"negative concurrency", SCurve{}, Policy{Concurrency: -1}, []string{"policy.concurrency"}},
		{"budget negative count", SCurve{}, Policy{FailureBudget: Budget{Count: -1}}, []string{"policy.failure_budget.count"}},
		{"budget percent out of range", SCurve{}, Policy{FailureBudget: Budget{Percent: 101}}, []string{"policy.failure_budget.percent"}},
		{"budget percent NaN", SCurve{}, Policy{FailureBudget: Budget{Percent: math.NaN()}}, []string{"policy.failure_budget.percent"}},
		{"budget both", SCurve{}, Policy{FailureBudget: Budget{Count: 1, Percent: 1}}, []string{"policy.failure_budget"}},
		{"global budget", SCurve{}, Policy{GlobalFailureBudget: &Budget{Count: -1, Percent: -1}},
			[]string{"policy.global_failure_budget.count", "policy.global_failure_budget.percent"}},
		{"sensitive batch negative", SCurve{}, Policy{ReserveSensitive: true, SensitiveBatchSize: -1}, []string{"policy.sensitive_batch_size"}},
		{"sensitive batch without reserve", SCurve{}, Policy{SensitiveBatchSize: 2}, []string{"policy.sensitive_batch_size"}},
		{"shape and policy together", Linear{}, Policy{Concurrency: -1, BaseSoak: -1},
			[]string{"shape.linear.batch_size", "policy.base_soak", "policy.concurrency"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compute(fleet(3, 0), tt.shape, tt.policy, "seed")
			var errs FieldErrors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v; want FieldErrors", err)
			}
			var got []string
			for _, fe := range errs {
				got = append(got, fe.Field)
				if fe.Reason == "" {
					t.Errorf("%s: empty reason", fe.Field)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got fields %v; want %v (%v)", got, tt.want, err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.want[0] {
				t.Errorf("errors.As *FieldError: got %v; want field %s", fe, tt.want[0])
			}
		})
	}
}

func TestValidationMessages(t *testing.T) {
	tests := []struct {
		shape  Shape
		policy Policy
		want   string
	}{
		{Linear{}, Policy{}, "shape.linear.batch_size: must be at least 1"},
		{Custom{Percents: []float64{60, 40.5}}, Policy{}, "shape.custom.percents: add up to 100.5, more than 100"},
		{Custom{Sizes: []int{5}}, Policy{}, "shape.custom.sizes: add up to more than the 3 clusters to plan"},
		{SCurve{}, Policy{BaseSoak: -1, FailureBudget: Budget{Count: 1, Percent: 5}},
			"policy.base_soak: must be between 0 and 720h; policy.failure_budget: set count or percent, not both"},
	}
	for _, tt := range tests {
		_, err := Compute(fleet(3, 0), tt.shape, tt.policy, "seed")
		if err == nil || err.Error() != tt.want {
			t.Errorf("got %v; want %s", err, tt.want)
		}
	}
	_, err := Compute(fleet(6, 2), Custom{Sizes: []int{4}}, Policy{ReserveSensitive: true}, "seed")
	want := "shape.custom.sizes: add up to more than the 3 clusters to plan (the 3 sensitive ones are reserved for the last waves)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
}

func TestString(t *testing.T) {
	cs := fleet(12, 5) // c0, c5, c10 sensitive
	policy := Policy{
		BaseSoak:            90 * time.Minute,
		Concurrency:         2,
		FailureBudget:       Budget{Percent: 34},
		GlobalFailureBudget: &Budget{Count: 2},
		ReserveSensitive:    true,
	}
	p := mustCompute(t, cs, SCurve{}, policy, "seed")
	want := "12 clusters in 5 waves, global budget 2; " +
		"wave 1: 2 clusters, soak 3h, budget 0; " +
		"wave 2: 2 clusters, soak 3h, budget 0; " +
		"wave 3: 3 clusters, soak 45m, 2 at a time, budget 1; " +
		"wave 4: 2 clusters, soak 1h30m, budget 0; " +
		"wave 5 (sensitive): 3 clusters, 2 at a time, budget 1"
	if got := p.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got, want := (Plan{}).String(), "0 clusters in 0 waves, global budget 0"; got != want {
		t.Errorf("got %s; want %s", got, want)
	}
	one := mustCompute(t, fleet(1, 0), SCurve{}, Policy{}, "seed")
	if got, want := one.String(), "1 cluster in 1 wave, global budget 1; wave 1: 1 cluster, budget 0"; got != want {
		t.Errorf("got %s; want %s", got, want)
	}
}

func TestToPPM(t *testing.T) {
	tests := []struct {
		percent float64
		want    int
	}{
		{100, 1_000_000},
		{0.0001, 1},
		{0.00004, 0},
		{33.33333, 333_333},
		{33.3 + 33.3 + 33.4, 1_000_000},
	}
	for _, tt := range tests {
		if got := toPPM(tt.percent); got != tt.want {
			t.Errorf("toPPM(%v): got %d; want %d", tt.percent, got, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{10 * time.Second, "10s"},
		{time.Minute, "1m"},
		{7*time.Minute + 30*time.Second, "7m30s"},
		{2 * time.Hour, "2h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + 10*time.Second, "1h0m10s"},
		{1500 * time.Millisecond, "1.5s"},
		{MaxBaseSoak, "720h"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v): got %s; want %s", int64(tt.d), got, tt.want)
		}
	}
}
