package waves

import (
	"errors"
	"math"
	"testing"
	"time"
)

// FuzzPlan checks that no shape, policy or fleet size makes Compute panic,
// lose or duplicate a cluster, or plan an empty wave, and that the sizes
// follow the shape.
func FuzzPlan(f *testing.F) {
	f.Add(uint8(0), 3, 0, uint16(10), uint8(0), false, uint8(0), "seed", []byte(nil))
	f.Add(uint8(1), 1, 2, uint16(100), uint8(7), true, uint8(3), "rollout", []byte(nil))
	f.Add(uint8(2), 0, 0, uint16(2999), uint8(2), true, uint8(0), "", []byte(nil))
	f.Add(uint8(3), 0, 0, uint16(50), uint8(0), false, uint8(0), "x", []byte{1, 10, 3})
	f.Add(uint8(3), 1, 0, uint16(7), uint8(3), true, uint8(1), "y", []byte{10, 10, 10, 200})
	f.Add(uint8(1), math.MaxInt, math.MaxInt, uint16(3), uint8(0), false, uint8(0), "z", []byte(nil))
	f.Fuzz(func(t *testing.T, kind uint8, a, b int, n uint16, every uint8, reserve bool, batch uint8, seed string, list []byte) {
		var shape Shape
		switch kind % 5 {
		case 0:
			shape = Linear{BatchSize: a}
		case 1:
			shape = Exponential{Start: a, Factor: b}
		case 2:
			shape = SCurve{}
		case 3:
			c := Custom{}
			for _, x := range list {
				if a%2 == 0 {
					c.Sizes = append(c.Sizes, int(x))
				} else {
					c.Percents = append(c.Percents, float64(x)/2.5)
				}
			}
			shape = c
		case 4:
			// nil: "shape: required"
		}
		cs := fleet(int(n)%3000, int(every%8)) // larger fleets are in the table tests
		policy := Policy{
			BaseSoak:           time.Duration(a % int(2*MaxBaseSoak)),
			Concurrency:        b % 50,
			FailureBudget:      Budget{Percent: float64(batch) / 2},
			ReserveSensitive:   reserve,
			SensitiveBatchSize: int(batch % 8),
		}
		if batch%3 == 0 {
			policy.GlobalFailureBudget = &Budget{Count: a % 100}
		}

		p, err := Compute(cs, shape, policy, seed)
		if err != nil {
			var errs FieldErrors
			if !errors.As(err, &errs) && !(len(cs) == 0 && errors.Is(err, ErrNoCandidates)) {
				t.Fatalf("got %v; want FieldErrors", err)
			}
			if errors.As(err, &errs) && len(errs) == 0 {
				t.Fatalf("got an empty FieldErrors")
			}
			return
		}
		checkPlan(t, p, cs, policy)

		var regular []int
		for _, w := range p.Waves {
			if !w.Sensitive {
				regular = append(regular, len(w.ClusterIDs))
			}
		}
		if len(regular) == 0 {
			return
		}
		last := len(regular) - 1
		switch s := shape.(type) {
		case Linear:
			for i, size := range regular {
				if i < last && size != s.BatchSize || size > s.BatchSize {
					t.Fatalf("linear %d: got %v", s.BatchSize, regular)
				}
			}
		case Exponential:
			want := max(s.Start, 1)
			for i, size := range regular {
				if i < last && size != want || size > want {
					t.Fatalf("%+v: got %v", s, regular)
				}
				if want > math.MaxInt/max(s.Factor, 2) {
					want = math.MaxInt
				} else {
					want *= max(s.Factor, 2)
				}
			}
		case SCurve:
			checkCurve(t, regular, sum(regular))
		case Custom:
			for i, size := range s.Sizes {
				if regular[i] != size {
					t.Fatalf("%v: got %v", s.Sizes, regular)
				}
			}
			if len(s.Percents) > 0 && len(regular) > len(s.Percents)+1 {
				t.Fatalf("%v: got %v", s.Percents, regular)
			}
		}
	})
}
