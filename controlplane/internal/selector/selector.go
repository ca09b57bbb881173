// Package selector parses label selectors such as "env=prod,tier in (gold,silver),!legacy"
// and validates label keys and values. It does not touch the store: callers compile a
// Selector to their own query language.
//
// The syntax is that of Kubernetes equality- and set-based selectors, without
// the numeric "<" and ">" operators:
//
//	selector    = [ requirement { "," requirement } ]
//	requirement = key                           (Exists)
//	            | "!" key                       (NotExists)
//	            | key ( "=" | "==" ) value      (Equals)
//	            | key "!=" value                (NotEquals)
//	            | key "in" "(" values ")"       (In)
//	            | key "notin" "(" values ")"    (NotIn)
//	values      = value { "," value }
//
// Whitespace is allowed around every token (and needed between a key and
// "in" or "notin"). Values after "=", "==" and "!=" may be empty; values in
// a list may not.
package selector

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits enforced by Parse and ValidateLabels.
const (
	maxSelectorLen  = 4096 // bytes of input, and of the canonical form
	maxRequirements = 64
	maxLabels       = 64
	maxNameLen      = 63 // name part of a key, and a value
	maxPrefixLen    = 253
)

// Operator is the comparison of a Requirement.
type Operator int

// The operators. The zero Operator is invalid.
const (
	Equals    Operator = iota + 1 // key=value or key==value
	NotEquals                     // key!=value (also true when the key is absent)
	In                            // key in (a,b)
	NotIn                         // key notin (a,b) (also true when the key is absent)
	Exists                        // key
	NotExists                     // !key
)

// String returns "=", "!=", "in", "notin", "exists" or "!exists", or
// "Operator(n)" for an invalid operator.
func (o Operator) String() string {
	switch o {
	case Equals:
		return "="
	case NotEquals:
		return "!="
	case In:
		return "in"
	case NotIn:
		return "notin"
	case Exists:
		return "exists"
	case NotExists:
		return "!exists"
	}
	return "Operator(" + strconv.Itoa(int(o)) + ")"
}

// Requirement is one comma-separated term. Values has one element for Equals/NotEquals,
// one or more for In/NotIn (sorted, deduplicated), none for Exists/NotExists.
type Requirement struct {
	Key    string
	Op     Operator
	Values []string
}

// Selector is the AND of its requirements. The zero value (empty) matches everything.
type Selector []Requirement

// Error says what is wrong and at which byte offset of the input.
type Error struct {
	Offset int
	Msg    string
}

// Error returns e.g. `label selector: offset 4: expected "(" after "in"`.
func (e *Error) Error() string {
	return "label selector: offset " + strconv.Itoa(e.Offset) + ": " + e.Msg
}

// Parse parses s. Empty or all-whitespace s gives an empty Selector. Errors are *Error.
//
// Requirements keep the order of s; the values of In and NotIn are sorted
// and deduplicated. Parse rejects input longer than 4096 bytes, and input
// whose canonical form (see Selector.String) would be longer than that, so
// that the canonical form always parses again.
func Parse(s string) (Selector, error) {
	if len(s) > maxSelectorLen {
		return nil, &Error{Offset: maxSelectorLen, Msg: fmt.Sprintf("selector longer than %d bytes", maxSelectorLen)}
	}
	p := parser{s: s}
	p.skipSpace()
	if p.eof() {
		return nil, nil
	}
	var sel Selector
	canonLen := 0
	for {
		start := p.i
		if p.eof() || p.s[p.i] == ',' {
			if len(sel) > 0 && p.eof() {
				// p.i-1 is not necessarily the comma: find it.
				return nil, p.errAt(strings.LastIndexByte(p.s, ','), `trailing ","`)
			}
			return nil, p.errAt(start, "empty requirement")
		}
		if len(sel) == maxRequirements {
			return nil, p.errAt(start, fmt.Sprintf("more than %d requirements", maxRequirements))
		}
		r, err := p.requirement()
		if err != nil {
			return nil, err
		}
		if len(sel) > 0 {
			canonLen++ // the comma
		}
		canonLen += r.canonicalLen()
		if canonLen > maxSelectorLen {
			return nil, p.errAt(start, fmt.Sprintf("selector longer than %d bytes in canonical form", maxSelectorLen))
		}
		sel = append(sel, r)
		p.skipSpace()
		if p.eof() {
			return sel, nil
		}
		if p.s[p.i] != ',' {
			return nil, p.errAt(p.i, `expected "," or end of input, got `+p.describe())
		}
		p.i++
		p.skipSpace()
	}
}

// parser is the state of one Parse: the input and the current offset.
type parser struct {
	s string
	i int
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) errAt(off int, msg string) *Error { return &Error{Offset: off, Msg: msg} }

func (p *parser) skipSpace() {
	for p.i < len(p.s) && isSpace(p.s[p.i]) {
		p.i++
	}
}

// describe quotes what is at the current offset, for error messages: a run
// of key characters, a single character, or "end of input".
func (p *parser) describe() string {
	if p.eof() {
		return "end of input"
	}
	if isKeyChar(p.s[p.i]) {
		j := p.i
		for j < len(p.s) && isKeyChar(p.s[j]) {
			j++
		}
		return quote(p.s[p.i:j])
	}
	_, size := utf8.DecodeRuneInString(p.s[p.i:])
	return quote(p.s[p.i : p.i+size])
}

// token consumes and returns the run of bytes at the current offset for
// which ok is true; it may be empty.
func (p *parser) token(ok func(byte) bool) string {
	j := p.i
	for p.i < len(p.s) && ok(p.s[p.i]) {
		p.i++
	}
	return p.s[j:p.i]
}

// requirement parses one requirement starting at the current offset, which
// is not at a space, a comma or the end of input. It stops after the
// requirement, before any trailing space.
func (p *parser) requirement() (Requirement, error) {
	if p.s[p.i] == '!' {
		p.i++
		p.skipSpace()
		key, err := p.key()
		if err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: key, Op: NotExists}, nil
	}
	key, err := p.key()
	if err != nil {
		return Requirement{}, err
	}
	afterKey := p.i
	p.skipSpace()
	if p.eof() || p.s[p.i] == ',' {
		p.i = afterKey
		return Requirement{Key: key, Op: Exists}, nil
	}
	switch c := p.s[p.i]; {
	case c == '=':
		p.i++
		if !p.eof() && p.s[p.i] == '=' {
			p.i++
		}
		v, err := p.singleValue()
		if err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: key, Op: Equals, Values: []string{v}}, nil
	case c == '!' && p.i+1 < len(p.s) && p.s[p.i+1] == '=':
		p.i += 2
		v, err := p.singleValue()
		if err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: key, Op: NotEquals, Values: []string{v}}, nil
	case isLetter(c) && p.i > afterKey:
		// A word after a key needs space before it; without space it
		// would have been part of the key.
		wordAt := p.i
		word := p.token(isKeyChar)
		var op Operator
		switch word {
		case "in":
			op = In
		case "notin":
			op = NotIn
		default:
			return Requirement{}, p.errAt(wordAt, "unknown operator "+quote(word))
		}
		vals, err := p.valueList(word)
		if err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: key, Op: op, Values: vals}, nil
	}
	return Requirement{}, p.errAt(p.i, `expected "=", "==", "!=", "in", "notin", "," or end of input after key, got `+p.describe())
}

// key parses and validates a label key at the current offset.
func (p *parser) key() (string, error) {
	at := p.i
	key := p.token(isKeyChar)
	if key == "" {
		return "", p.errAt(at, "expected label key, got "+p.describe())
	}
	if err := ValidateKey(key); err != nil {
		return "", p.errAt(at, "invalid key "+quote(key)+": "+err.Error())
	}
	return key, nil
}

// singleValue parses and validates the possibly empty value after "=",
// "==" or "!=".
func (p *parser) singleValue() (string, error) {
	p.skipSpace()
	at := p.i
	v := p.token(isValueChar)
	if err := ValidateValue(v); err != nil {
		return "", p.errAt(at, "invalid value "+quote(v)+": "+err.Error())
	}
	return v, nil
}

// valueList parses "(a,b,...)" after the operator op, and returns the
// values sorted and deduplicated.
func (p *parser) valueList(op string) ([]string, error) {
	p.skipSpace()
	if p.eof() || p.s[p.i] != '(' {
		return nil, p.errAt(p.i, `expected "(" after `+strconv.Quote(op))
	}
	open := p.i
	p.i++
	var vals []string
	for {
		p.skipSpace()
		if p.eof() {
			return nil, p.errAt(open, `unclosed "("`)
		}
		switch p.s[p.i] {
		case ')':
			if len(vals) == 0 {
				return nil, p.errAt(p.i, "empty value list")
			}
			return nil, p.errAt(p.i, "empty value in list")
		case ',':
			return nil, p.errAt(p.i, "empty value in list")
		}
		at := p.i
		v := p.token(isValueChar)
		if v == "" {
			return nil, p.errAt(at, "expected value, got "+p.describe())
		}
		if err := ValidateValue(v); err != nil {
			return nil, p.errAt(at, "invalid value "+quote(v)+": "+err.Error())
		}
		vals = append(vals, v)
		p.skipSpace()
		if p.eof() {
			return nil, p.errAt(open, `unclosed "("`)
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ')':
			p.i++
			slices.Sort(vals)
			return slices.Compact(vals), nil
		default:
			return nil, p.errAt(p.i, `expected "," or ")" in value list, got `+p.describe())
		}
	}
}

// Matches reports whether labels satisfy every requirement of s. A
// requirement with an invalid Operator matches nothing.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

func (r Requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Op {
	case Equals:
		return ok && len(r.Values) > 0 && v == r.Values[0]
	case NotEquals:
		return !ok || len(r.Values) == 0 || v != r.Values[0]
	case In:
		return ok && slices.Contains(r.Values, v)
	case NotIn:
		return !ok || !slices.Contains(r.Values, v)
	case Exists:
		return ok
	case NotExists:
		return !ok
	}
	return false
}

// Empty reports whether s has no requirements, and so matches everything.
func (s Selector) Empty() bool { return len(s) == 0 }

// String renders a canonical form that Parse accepts and that round-trips.
//
// The form has no optional whitespace, uses "=" rather than "==", and
// renders In as `key in (a,b)`. The round trip holds for any Selector that
// Parse returned; a Selector built by hand may render as something Parse
// rejects.
func (s Selector) String() string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		r.writeTo(&b)
	}
	return b.String()
}

func (r Requirement) writeTo(b *strings.Builder) {
	switch r.Op {
	case Equals, NotEquals:
		b.WriteString(r.Key)
		b.WriteString(r.Op.String())
		if len(r.Values) > 0 {
			b.WriteString(r.Values[0])
		}
	case In, NotIn:
		b.WriteString(r.Key)
		b.WriteByte(' ')
		b.WriteString(r.Op.String())
		b.WriteString(" (")
		b.WriteString(strings.Join(r.Values, ","))
		b.WriteByte(')')
	case Exists:
		b.WriteString(r.Key)
	case NotExists:
		b.WriteByte('!')
		b.WriteString(r.Key)
	default:
		b.WriteString(r.Key)
		b.WriteByte(' ')
		b.WriteString(r.Op.String())
	}
}

// canonicalLen is the length of r's canonical form, without building it.
func (r Requirement) canonicalLen() int {
	switch r.Op {
	case Equals, NotEquals:
		return len(r.Key) + len(r.Op.String()) + len(r.Values[0])
	case In, NotIn:
		n := len(r.Key) + 1 + len(r.Op.String()) + 2 + 1 + len(r.Values) - 1
		for _, v := range r.Values {
			n += len(v)
		}
		return n
	case NotExists:
		return 1 + len(r.Key)
	}
	return len(r.Key)
}

// ValidateKey checks a label key: an optional prefix, a DNS subdomain of at
// most 253 characters followed by "/", and a name of 1 to 63 characters
// from [A-Za-z0-9-_.] that begins and ends with an alphanumeric. It returns
// a short reason, or nil.
func ValidateKey(k string) error {
	if k == "" {
		return reason("must not be empty")
	}
	name := k
	if i := strings.IndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if strings.IndexByte(name, '/') >= 0 {
			return reason(`must contain at most one "/"`)
		}
		if err := validatePrefix(prefix); err != nil {
			return err
		}
	}
	switch {
	case name == "":
		return reason("name must not be empty")
	case len(name) > maxNameLen:
		return reason(fmt.Sprintf("name must be at most %d characters", maxNameLen))
	case !isQualifiedName(name):
		return reason("name must consist of alphanumerics, '-', '_' or '.', and begin and end with an alphanumeric")
	}
	return nil
}

func validatePrefix(prefix string) error {
	switch {
	case prefix == "":
		return reason(`prefix before "/" must not be empty`)
	case len(prefix) > maxPrefixLen:
		return reason(fmt.Sprintf("prefix must be at most %d characters", maxPrefixLen))
	}
	for part := range strings.SplitSeq(prefix, ".") {
		ok := part != "" && isLowerAlnum(part[0]) && isLowerAlnum(part[len(part)-1])
		for i := 0; ok && i < len(part); i++ {
			ok = isLowerAlnum(part[i]) || part[i] == '-'
		}
		if !ok {
			return reason("prefix must be a DNS subdomain: dot-separated parts of lowercase alphanumerics and '-', each beginning and ending with an alphanumeric")
		}
	}
	return nil
}

// ValidateValue checks a label value: empty, or 1 to 63 characters from
// [A-Za-z0-9-_.] that begin and end with an alphanumeric. It returns a
// short reason, or nil.
func ValidateValue(v string) error {
	switch {
	case v == "":
		return nil
	case len(v) > maxNameLen:
		return reason(fmt.Sprintf("must be at most %d characters", maxNameLen))
	case !isQualifiedName(v):
		return reason("must consist of alphanumerics, '-', '_' or '.', and begin and end with an alphanumeric")
	}
	return nil
}

// ValidateLabels checks every key and value and that there are at most 64 labels;
// the error names the offending key. Keys are checked in sorted order, so
// the error is the same from call to call.
func ValidateLabels(m map[string]string) error {
	if len(m) > maxLabels {
		return reason(fmt.Sprintf("too many labels: %d, at most %d allowed", len(m), maxLabels))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return reason("label key " + quote(k) + ": " + err.Error())
		}
		if err := ValidateValue(m[k]); err != nil {
			return reason("label " + quote(k) + ": value " + err.Error())
		}
	}
	return nil
}

// reason is the error type of the Validate functions: a plain message.
type reason string

func (r reason) Error() string { return string(r) }

// isQualifiedName reports whether s is non-empty, consists of
// [A-Za-z0-9-_.], and begins and ends with an alphanumeric. Length is
// checked by the caller.
func isQualifiedName(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isValueChar(s[i]) {
			return false
		}
	}
	return true
}

// quote quotes s for an error message, cutting it short if it is long.
func quote(s string) string {
	const maxQuoted = 40
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isLetter(c byte) bool     { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool      { return '0' <= c && c <= '9' }
func isAlnum(c byte) bool      { return isLetter(c) || isDigit(c) }
func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || isDigit(c) }

// isValueChar reports whether c may appear in a label value or key name.
func isValueChar(c byte) bool { return isAlnum(c) || c == '-' || c == '_' || c == '.' }

// isKeyChar reports whether c may appear in a label key, prefix included.
func isKeyChar(c byte) bool { return isValueChar(c) || c == '/' }
