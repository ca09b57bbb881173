// Package inventory parses the fleet's one query language for clusters,
// used by the admin API, rollouts and cairnctl (docs/fleet.md): label
// requirements as in package selector, and field terms on what Cairn knows
// of a cluster, versions compared in semver order:
//
//	env=prod,tier in (gold,silver),!legacy          labels
//	product=kafka,channel=stable,region in (eu-west-1,us-east-1)
//	tenant=<id>,data_plane=<id>,name=kafka-1
//	version>=1.2.0,version<1.3.0                    reported version
//	desired_version=1.3.1,host_version>3.4.0
//
// A label whose key is a field name is written label:<key>. The package
// does not touch the store; the store compiles a Query to SQL.
package inventory

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cairnhq/cairn/controlplane/internal/selector"
	"github.com/cairnhq/cairn/controlplane/internal/versions"
)

// Field is a cluster attribute a query can test.
type Field string

// The fields.
const (
	Product        Field = "product"
	Channel        Field = "channel"
	Tenant         Field = "tenant"
	DataPlane      Field = "data_plane"
	Region         Field = "region"
	Name           Field = "name"
	Version        Field = "version" // reported
	DesiredVersion Field = "desired_version"
	HostVersion    Field = "host_version"
)

var fields = []Field{Product, Channel, Tenant, DataPlane, Region, Name, Version, DesiredVersion, HostVersion}

// IsVersion reports whether f compares in semver order.
func (f Field) IsVersion() bool { return f == Version || f == DesiredVersion || f == HostVersion }

// Op is a field term's comparison.
type Op string

// The operators; the ordered ones apply to version fields only.
const (
	Eq    Op = "="
	Ne    Op = "!="
	Lt    Op = "<"
	Le    Op = "<="
	Gt    Op = ">"
	Ge    Op = ">="
	In    Op = "in"
	NotIn Op = "notin"
)

// Term is one field comparison. For version fields every value is a
// strict semver version and Keys holds their versions.SortKey.
type Term struct {
	Field  Field
	Op     Op
	Values []string
	Keys   []string
}

// Query is the AND of its field terms and its label selector. The zero
// value matches every cluster.
type Query struct {
	Terms  []Term
	Labels selector.Selector
}

// maxQueryLen bounds the input.
const maxQueryLen = 4096

// Parse parses a query; errors name the offending term.
func Parse(s string) (Query, error) {
	var q Query
	if len(s) > maxQueryLen {
		return q, fmt.Errorf("query longer than %d bytes", maxQueryLen)
	}
	parts, err := split(s)
	if err != nil {
		return q, err
	}
	var labels []string
	for _, part := range parts {
		term, isField, err := parseTerm(part)
		if err != nil {
			return Query{}, fmt.Errorf("%q: %w", part, err)
		}
		if isField {
			q.Terms = append(q.Terms, term)
			continue
		}
		labels = append(labels, strings.TrimPrefix(strings.TrimSpace(part), "label:"))
	}
	if len(labels) > 0 {
		sel, err := selector.Parse(strings.Join(labels, ","))
		if err != nil {
			return Query{}, err
		}
		q.Labels = sel
	}
	return q, nil
}

// split cuts s at the commas outside parentheses, trimming each part;
// empty input gives no parts.
func split(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf(`unbalanced ")" at offset %d`, i)
			}
		case ',':
			if depth == 0 {
				parts = append(parts, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf(`unbalanced "(" in %q`, s)
	}
	parts = append(parts, strings.TrimSpace(s[start:]))
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("empty term in %q", s)
		}
	}
	return parts, nil
}

// parseTerm parses part as a field term, or reports that it is a label
// requirement (isField false).
func parseTerm(part string) (t Term, isField bool, err error) {
	if strings.HasPrefix(part, "label:") {
		return Term{}, false, nil
	}
	name := part
	if i := strings.IndexAny(part, "=!<> "); i >= 0 {
		name = part[:i]
	}
	f := Field(name)
	if !slices.Contains(fields, f) {
		return Term{}, false, nil
	}
	rest := strings.TrimSpace(part[len(name):])
	var op Op
	switch {
	case strings.HasPrefix(rest, "notin"):
		op = NotIn
	case strings.HasPrefix(rest, "in"):
		op = In
	case strings.HasPrefix(rest, ">="):
		op = Ge
	case strings.HasPrefix(rest, "<="):
		op = Le
	case strings.HasPrefix(rest, "!="):
		op = Ne
	case strings.HasPrefix(rest, "=="):
		rest = rest[1:]
		op = Eq
	case strings.HasPrefix(rest, "="):
		op = Eq
	case strings.HasPrefix(rest, ">"):
		op = Gt
	case strings.HasPrefix(rest, "<"):
		op = Lt
	default:
		return Term{}, true, fmt.Errorf("field %s needs an operator (=, !=, in, notin%s)", f, orderedOps(f))
	}
	rest = strings.TrimSpace(rest[len(op):])
	var values []string
	if op == In || op == NotIn {
		if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
			return Term{}, true, fmt.Errorf(`%s needs a list "(a,b)"`, op)
		}
		for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
			if v = strings.TrimSpace(v); v == "" {
				return Term{}, true, fmt.Errorf("empty value in the list")
			}
			values = append(values, v)
		}
		slices.Sort(values)
		values = slices.Compact(values)
	} else {
		if rest == "" || strings.ContainsAny(rest, " ,()") {
			return Term{}, true, fmt.Errorf("one value expected after %s", op)
		}
		values = []string{rest}
	}
	if !f.IsVersion() && op != Eq && op != Ne && op != In && op != NotIn {
		return Term{}, true, fmt.Errorf("field %s is not ordered: use =, !=, in or notin", f)
	}
	t = Term{Field: f, Op: op, Values: values}
	if f.IsVersion() {
		for _, v := range values {
			pv, err := versions.Parse(v)
			if err != nil {
				return Term{}, true, err
			}
			t.Keys = append(t.Keys, pv.SortKey())
		}
	}
	return t, true, nil
}

func orderedOps(f Field) string {
	if f.IsVersion() {
		return ", <, <=, >, >="
	}
	return ""
}
