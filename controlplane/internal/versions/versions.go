// Package versions is the fleet's view of semantic versions: strict
// parsing (SemVer 2.0.0, no leading "v"), compatibility ranges ("1.3.x",
// ">3.4", ">=1.2 <2.0", "^1.2", "~1.2.3"), and a sort key whose byte order
// is SemVer precedence, so the store can answer version-range queries with
// index range scans. It does not decide what is compatible with what; the
// release catalog's rules do.
package versions

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Version is a parsed semantic version.
type Version struct{ v *semver.Version }

// Parse parses a strict SemVer 2.0.0 version such as 1.3.0 or
// 2.0.0-rc.1+build.5; a leading "v" or a missing part is refused.
func Parse(s string) (Version, error) {
	v, err := semver.StrictNewVersion(s)
	if err != nil {
		return Version{}, fmt.Errorf("version %q: %w", s, err)
	}
	return Version{v}, nil
}

// MustParse is Parse for constants; it panics on error.
func MustParse(s string) Version {
	v, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String returns the version as parsed.
func (v Version) String() string { return v.v.Original() }

// Compare returns -1, 0 or 1 by SemVer precedence (build metadata
// ignored).
func (v Version) Compare(o Version) int { return v.v.Compare(o.v) }

// SortKey returns a string whose byte order is SemVer precedence: major,
// minor and patch as fixed-width decimals, then the prerelease identifiers
// (numeric ones fixed-width, and below alphanumeric ones, as SemVer
// orders them), and a release above all its prereleases. Build metadata is
// dropped, as precedence ignores it.
func (v Version) SortKey() string {
	var b strings.Builder
	for _, n := range []uint64{v.v.Major(), v.v.Minor(), v.v.Patch()} {
		fmt.Fprintf(&b, "%020d.", n)
	}
	pre := v.v.Prerelease()
	if pre == "" {
		// '~' sorts above '-' and every prerelease below.
		b.WriteString("~")
		return b.String()
	}
	b.WriteString("-")
	for i, id := range strings.Split(pre, ".") {
		if i > 0 {
			// A space sorts below every identifier character
			// ([0-9A-Za-z-]), so "alpha" < "alpha-x" < "alpha.x" holds
			// in bytes as in SemVer, and a shorter list sorts first.
			b.WriteString(" ")
		}
		if n, err := strconv.ParseUint(id, 10, 64); err == nil {
			fmt.Fprintf(&b, "0%020d", n)
		} else {
			b.WriteString("1" + id)
		}
	}
	return b.String()
}

// Range is a set of versions, such as "1.3.x", ">3.4" or ">=1.2, <2.0".
type Range struct {
	c   *semver.Constraints
	src string
}

// ParseRange parses a range: comparisons (=, !=, >, <, >=, <=), wildcards
// (1.3.x, 1.*), tilde (~1.2: >=1.2.0 <1.3.0), caret (^1.2: >=1.2.0
// <2.0.0), hyphen ranges (1.2 - 1.4), space or comma for AND, || for OR.
// A partial version is a wildcard: ">3.4" means above every 3.4.x, so
// from 3.5.0; write ">3.4.0" for 3.4.1 and up. Prereleases match only a
// range naming a prerelease, as usual.
func ParseRange(s string) (Range, error) {
	if strings.TrimSpace(s) == "" {
		return Range{}, fmt.Errorf("range is empty")
	}
	c, err := semver.NewConstraint(s)
	if err != nil {
		return Range{}, fmt.Errorf("range %q: %w", s, err)
	}
	return Range{c: c, src: s}, nil
}

// Contains reports whether v is in r.
func (r Range) Contains(v Version) bool { return r.c.Check(v.v) }

// String returns the range as written.
func (r Range) String() string { return r.src }
