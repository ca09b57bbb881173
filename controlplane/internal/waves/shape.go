package waves

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// maxCustomWaves bounds Custom lists, and so the fields an error can name.
const maxCustomWaves = 1000

// ppmWhole is 100% in millionths: percentages are taken to four decimal
// places and computed on integers, so that rounding is exact and the same on
// every platform.
const ppmWhole = 1_000_000

// A Shape turns a number of clusters into wave sizes: Linear, Exponential,
// SCurve or Custom. Shapes are plain values; the zero value of each is
// described with its type.
type Shape interface {
	// validate reports what is wrong with the shape regardless of n.
	validate() FieldErrors
	// layout returns, for n ≥ 1 clusters, the size of each wave (each at
	// least 1, summing to n) and its soak in quarters of the base soak.
	// Its only error is a FieldError for a shape that cannot hold n.
	layout(n int) (sizes, soakQuarters []int, err error)
}

// Every shape but SCurve soaks BaseSoak after each wave.
const fullSoak = 4 // quarters

// Linear upgrades BatchSize clusters per wave; the last wave takes the
// remainder.
type Linear struct {
	// BatchSize is the size of each wave; it must be at least 1.
	BatchSize int
}

func (s Linear) validate() FieldErrors {
	if s.BatchSize < 1 {
		return FieldErrors{{Field: "shape.linear.batch_size", Reason: "must be at least 1"}}
	}
	return nil
}

func (s Linear) layout(n int) ([]int, []int, error) {
	return chunks(n, s.BatchSize), full(ceilDiv(n, s.BatchSize)), nil
}

// Exponential grows the waves by Factor: Start, Start×Factor,
// Start×Factor², …; the last wave takes the remainder, so no wave is larger
// than the clusters left for it.
type Exponential struct {
	// Start is the size of the first wave; 0 means 1.
	Start int
	// Factor is the growth from one wave to the next; 0 means 2. It must be
	// at least 2: for waves of one size, use Linear.
	Factor int
}

func (s Exponential) validate() FieldErrors {
	var errs FieldErrors
	if s.Start < 0 {
		errs.Add("shape.exponential.start", "must be at least 1 (0 means 1)")
	}
	if s.Factor < 0 || s.Factor == 1 {
		errs.Add("shape.exponential.factor", "must be at least 2 (0 means 2); for waves of one size use linear")
	}
	return errs
}

func (s Exponential) layout(n int) ([]int, []int, error) {
	size, factor := s.Start, s.Factor
	if size == 0 {
		size = 1
	}
	if factor == 0 {
		factor = 2
	}
	var sizes []int
	for left := n; left > 0; {
		size = min(size, left)
		sizes = append(sizes, size)
		left -= size
		if size > left/factor {
			size = left // the next wave is the last: avoid overflow
		} else {
			size *= factor
		}
	}
	return sizes, full(len(sizes)), nil
}

// SCurve starts with small canary waves, grows to a peak and shrinks again,
// following the curve 1, 1, 2, 3, 5, 8, 5, 3, 2, 1 (31 clusters) scaled to
// the fleet. It has no parameters.
//
// Sizes. The curve used is the longest of
//
//	1                              (1 cluster)
//	1, 1                           (2)
//	1, 1, 2, 1                     (5)
//	1, 1, 2, 3, 2, 1               (10)
//	1, 1, 2, 3, 5, 3, 2, 1         (18)
//	1, 1, 2, 3, 5, 8, 5, 3, 2, 1   (31)
//
// whose sum is at most n: each is the full curve cut at a smaller Fibonacci
// peak, so the shape (canaries, ramp up, peak, ramp down) survives on small
// fleets instead of being flattened into waves of one. The curve is then
// stretched to exactly n by the largest-remainder method: wave i gets
// ⌊n·wᵢ/sum⌋ clusters, and the clusters left over go one each to the waves
// with the largest remainders, ties going to the wave nearer the peak, then
// to the later wave (so early waves stay small). Since n ≥ sum, every wave
// keeps at least its weight; the sizes never fall before the peak nor rise
// after it, and no wave is larger than the peak. For example: n=1 gives 1;
// n=7 gives 1, 1, 3, 2; n=10 gives 1, 1, 2, 3, 2, 1; n=100 gives 3, 3, 6, 10, 16, 26, 16, 10, 7, 3; n=10,000 gives 322, 322,
// 645, 968, 1613, 2581, 1613, 968, 645, 323.
//
// Soaks shrink as confidence grows: a wave soaks BaseSoak × 2^(1−phase),
// where phase is 0 for the canaries (the leading waves of weight 1, before
// the peak), 1 for the rest of the ramp up, 2 for the peak and 3 for the
// ramp down. That is 2×, 1×, ½× and ¼× BaseSoak; with the full curve and a
// BaseSoak of 1h: 2h, 2h, 1h, 1h, 1h, 30m, 15m, 15m, 15m and none after the
// last wave.
type SCurve struct{}

// curves are the S-curves by length; see SCurve.
var curves = [][]int{
	{1},
	{1, 1},
	{1, 1, 2, 1},
	{1, 1, 2, 3, 2, 1},
	{1, 1, 2, 3, 5, 3, 2, 1},
	{1, 1, 2, 3, 5, 8, 5, 3, 2, 1},
}

func (SCurve) validate() FieldErrors { return nil }

func (SCurve) layout(n int) ([]int, []int, error) {
	var curve []int
	for _, c := range curves {
		if sum(c) <= n {
			curve = c
		}
	}
	peak := len(curve) / 2
	quarters := make([]int, len(curve))
	canary := true
	for i, w := range curve {
		canary = canary && i < peak && w == 1
		switch {
		case canary:
			quarters[i] = 8
		case i < peak:
			quarters[i] = 4
		case i == peak:
			quarters[i] = 2
		default:
			quarters[i] = 1
		}
	}
	return apportion(curve, n, peak), quarters, nil
}

// apportion scales weights to sizes summing to n by the largest-remainder
// method (see SCurve). It needs n ≥ sum(weights).
func apportion(weights []int, n, peak int) []int {
	total := sum(weights)
	sizes := make([]int, len(weights))
	rems := make([]int, len(weights))
	order := make([]int, len(weights))
	left := n
	for i, w := range weights {
		sizes[i], rems[i] = n*w/total, n*w%total
		left -= sizes[i]
		order[i] = i
	}
	// Largest remainder first, then nearer the peak, then later. Among waves
	// of equal weight on one side of the peak, the one nearer the peak gains
	// first, which is what keeps the sizes rising to the peak and falling
	// after it.
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(
			cmp.Compare(rems[b], rems[a]),
			cmp.Compare(dist(a, peak), dist(b, peak)),
			cmp.Compare(b, a),
		)
	})
	for _, i := range order[:left] {
		sizes[i]++
	}
	return sizes
}

// Custom lists the waves explicitly, as sizes or as percentages of the
// clusters to plan; exactly one of the two must be set. Clusters that the
// list leaves over form one more, final wave: Sizes{1, 10} on 50 clusters
// gives 1, 10, 39.
type Custom struct {
	// Sizes are cluster counts, each at least 1. They must not add up to
	// more than the clusters to plan (the non-sensitive ones, when
	// Policy.ReserveSensitive is set): that is a FieldError, because
	// silently shortening an explicit list would run a rollout other than
	// the one asked for.
	Sizes []int
	// Percents are shares of the clusters to plan, each greater than 0 and
	// at most 100, adding up to at most 100, taken to four decimal places.
	// Wave boundaries fall at the cumulative percentage, rounded down, so
	// rounding does not drift along the list; a listed wave gets at least
	// one cluster while clusters remain, and entries after the clusters run
	// out are dropped (ten 10% waves on 7 clusters give seven waves of 1).
	// When they add up to 100, the last listed wave ends at the last
	// cluster.
	Percents []float64
}

func (s Custom) validate() FieldErrors {
	var errs FieldErrors
	switch {
	case len(s.Sizes) > 0 && len(s.Percents) > 0:
		errs.Add("shape.custom", "set sizes or percents, not both")
	case len(s.Sizes) == 0 && len(s.Percents) == 0:
		errs.Add("shape.custom", "set sizes or percents")
	case len(s.Sizes) > maxCustomWaves:
		errs.Add("shape.custom.sizes", fmt.Sprintf("at most %d waves", maxCustomWaves))
	case len(s.Percents) > maxCustomWaves:
		errs.Add("shape.custom.percents", fmt.Sprintf("at most %d waves", maxCustomWaves))
	case len(s.Sizes) > 0:
		for i, size := range s.Sizes {
			if size < 1 {
				errs.Add("shape.custom.sizes["+strconv.Itoa(i)+"]", "must be at least 1")
			}
		}
	default:
		total, ok := 0, true
		for i, p := range s.Percents {
			field := "shape.custom.percents[" + strconv.Itoa(i) + "]"
			switch {
			case math.IsNaN(p) || p <= 0 || p > 100:
				errs.Add(field, "must be greater than 0 and at most 100")
				ok = false
			case toPPM(p) == 0:
				errs.Add(field, "must be at least 0.0001")
				ok = false
			default:
				total += toPPM(p)
			}
		}
		if ok && total > ppmWhole {
			errs.Add("shape.custom.percents", "add up to "+formatPPM(total)+", more than 100")
		}
	}
	return errs
}

func (s Custom) layout(n int) ([]int, []int, error) {
	var sizes []int
	done := 0
	if len(s.Sizes) > 0 {
		for _, size := range s.Sizes {
			if size > n-done {
				return nil, nil, FieldErrors{{Field: "shape.custom.sizes", Reason: fmt.Sprintf(
					"add up to more than the %d clusters to plan", n)}}
			}
			sizes = append(sizes, size)
			done += size
		}
	} else {
		cum := 0
		for _, p := range s.Percents {
			if done == n {
				break
			}
			cum += toPPM(p)
			end := min(max(cum*n/ppmWhole, done+1), n)
			sizes = append(sizes, end-done)
			done = end
		}
	}
	if done < n {
		sizes = append(sizes, n-done)
	}
	return sizes, full(len(sizes)), nil
}

// toPPM converts a validated percentage to millionths of the whole.
func toPPM(percent float64) int {
	return int(math.Round(percent * ppmWhole / 100))
}

// formatPPM prints millionths as a percentage: 1_200_000 is "120".
func formatPPM(ppm int) string {
	return strconv.FormatFloat(float64(ppm)*100/ppmWhole, 'f', -1, 64)
}

// chunks splits n into waves of size, the last taking the remainder.
func chunks(n, size int) []int {
	sizes := make([]int, 0, ceilDiv(n, size))
	for left := n; left > 0; left -= size {
		sizes = append(sizes, min(size, left))
	}
	return sizes
}

func full(waves int) []int {
	q := make([]int, waves)
	for i := range q {
		q[i] = fullSoak
	}
	return q
}

func ceilDiv(a, b int) int { return a/b + min(a%b, 1) }

func dist(a, b int) int { return max(a-b, b-a) }

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}
