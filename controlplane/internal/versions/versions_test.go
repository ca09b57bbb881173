package versions

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"1.2.3", true},
		{"0.0.0", true},
		{"1.2.3-rc.1", true},
		{"1.2.3+build.7", true},
		{"1.2.3-alpha-x.0+b", true},
		{"v1.2.3", false},
		{"1.2", false},
		{"1", false},
		{"01.2.3", false},
		{"1.2.3-", false},
		{"", false},
		{"1.2.3.4", false},
	} {
		_, err := Parse(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Parse(%q): error %v; want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// TestSortKeyOrderIsPrecedence checks the SemVer spec's own example
// order, and that random shuffles sort back by key as by Compare.
func TestSortKeyOrderIsPrecedence(t *testing.T) {
	ordered := []string{
		"0.9.99", "1.0.0-0", "1.0.0-1", "1.0.0-2", "1.0.0-10", "1.0.0-alpha", "1.0.0-alpha.1",
		"1.0.0-alpha.beta", "1.0.0-alpha-x", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0",
		"1.0.1", "1.2.0", "1.10.0", "2.0.0", "10.0.0", "18446744073709551615.0.0",
	}
	for i := 1; i < len(ordered); i++ {
		a, b := MustParse(ordered[i-1]), MustParse(ordered[i])
		if a.Compare(b) >= 0 {
			t.Fatalf("test data: %s !< %s", a, b)
		}
		if a.SortKey() >= b.SortKey() {
			t.Errorf("SortKey(%s) = %q >= SortKey(%s) = %q", a, a.SortKey(), b, b.SortKey())
		}
	}
	if MustParse("1.0.0+a").SortKey() != MustParse("1.0.0+b").SortKey() {
		t.Error("build metadata changes the sort key")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		s := slices.Clone(ordered)
		r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		slices.SortFunc(s, func(a, b string) int {
			ka, kb := MustParse(a).SortKey(), MustParse(b).SortKey()
			switch {
			case ka < kb:
				return -1
			case ka > kb:
				return 1
			}
			return 0
		})
		if !slices.Equal(s, ordered) {
			t.Fatalf("sorted by key: %v", s)
		}
	}
}

func TestRanges(t *testing.T) {
	for _, tc := range []struct {
		rng  string
		in   []string
		out  []string
		fail bool
	}{
		{rng: "1.3.x", in: []string{"1.3.0", "1.3.9"}, out: []string{"1.2.9", "1.4.0", "1.3.0-rc.1"}},
		// A partial version is a wildcard: above every 3.4.x.
		{rng: ">3.4", in: []string{"3.5.0", "4.0.0"}, out: []string{"3.4.0", "3.4.9", "3.3.9"}},
		{rng: ">3.4.0", in: []string{"3.4.1"}, out: []string{"3.4.0"}},
		{rng: ">=1.2, <2.0", in: []string{"1.2.0", "1.9.9"}, out: []string{"1.1.9", "2.0.0"}},
		{rng: ">=1.2 <2.0", in: []string{"1.5.0"}, out: []string{"2.0.0"}},
		{rng: "^1.2", in: []string{"1.2.0", "1.9.0"}, out: []string{"2.0.0", "1.1.0"}},
		{rng: "~1.2.3", in: []string{"1.2.3", "1.2.9"}, out: []string{"1.3.0"}},
		{rng: "<1.0 || >=3.0", in: []string{"0.9.0", "3.1.0"}, out: []string{"2.0.0"}},
		{rng: ">=2.0.0-rc.1", in: []string{"2.0.0-rc.2", "2.0.0"}, out: []string{"1.9.0"}},
		{rng: "", fail: true},
		{rng: ">>1", fail: true},
		{rng: "banana", fail: true},
	} {
		r, err := ParseRange(tc.rng)
		if (err != nil) != tc.fail {
			t.Errorf("ParseRange(%q): error %v; want fail=%v", tc.rng, err, tc.fail)
			continue
		}
		if tc.fail {
			continue
		}
		for _, v := range tc.in {
			if !r.Contains(MustParse(v)) {
				t.Errorf("%q should contain %s", tc.rng, v)
			}
		}
		for _, v := range tc.out {
			if r.Contains(MustParse(v)) {
				t.Errorf("%q should not contain %s", tc.rng, v)
			}
		}
	}
}

func FuzzSortKey(f *testing.F) {
	for _, s := range []string{"1.0.0", "1.0.0-alpha.1", "0.0.1-0", "2.3.4-rc.10+b"} {
		f.Add(s, "1.0.0-beta")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		va, errA := Parse(a)
		vb, errB := Parse(b)
		if errA != nil || errB != nil {
			return
		}
		ka, kb := va.SortKey(), vb.SortKey()
		var byKey int
		switch {
		case ka < kb:
			byKey = -1
		case ka > kb:
			byKey = 1
		}
		if got := va.Compare(vb); got != byKey {
			t.Fatalf("Compare(%s, %s) = %d; keys %q %q give %d", a, b, got, ka, kb, byKey)
		}
	})
}
