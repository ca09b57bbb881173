package selector

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Selector
	}{
		{"empty", "", nil},
		{"whitespace only", " \t\n\r ", nil},
		{"equals", "env=prod", Selector{{Key: "env", Op: Equals, Values: []string{"prod"}}}},
		{"double equals", "env==prod", Selector{{Key: "env", Op: Equals, Values: []string{"prod"}}}},
		{"equals empty value", "env=", Selector{{Key: "env", Op: Equals, Values: []string{""}}}},
		{"double equals empty value", "env==", Selector{{Key: "env", Op: Equals, Values: []string{""}}}},
		{"not equals", "env!=prod", Selector{{Key: "env", Op: NotEquals, Values: []string{"prod"}}}},
		{"not equals empty value", "env!=", Selector{{Key: "env", Op: NotEquals, Values: []string{""}}}},
		{"in", "tier in (gold,silver)", Selector{{Key: "tier", Op: In, Values: []string{"gold", "silver"}}}},
		{"in single", "tier in (gold)", Selector{{Key: "tier", Op: In, Values: []string{"gold"}}}},
		{"in sorted and deduplicated", "tier in (silver,gold,silver,bronze,gold)",
			Selector{{Key: "tier", Op: In, Values: []string{"bronze", "gold", "silver"}}}},
		{"in without space before paren", "tier in(gold)", Selector{{Key: "tier", Op: In, Values: []string{"gold"}}}},
		{"notin", "tier notin (gold,silver)", Selector{{Key: "tier", Op: NotIn, Values: []string{"gold", "silver"}}}},
		{"notin deduplicated", "tier notin (b,a,b)", Selector{{Key: "tier", Op: NotIn, Values: []string{"a", "b"}}}},
		{"exists", "legacy", Selector{{Key: "legacy", Op: Exists}}},
		{"not exists", "!legacy", Selector{{Key: "legacy", Op: NotExists}}},
		{"not exists with space", "! legacy", Selector{{Key: "legacy", Op: NotExists}}},
		{"key named like operators", "in in (notin),notin", Selector{
			{Key: "in", Op: In, Values: []string{"notin"}},
			{Key: "notin", Op: Exists},
		}},
		{"prefixed key", "example.com/tier=gold", Selector{{Key: "example.com/tier", Op: Equals, Values: []string{"gold"}}}},
		{"value punctuation", "v=1.2_3-rc.4", Selector{{Key: "v", Op: Equals, Values: []string{"1.2_3-rc.4"}}}},
		{"doc example", "env=prod,tier in (gold,silver),!legacy", Selector{
			{Key: "env", Op: Equals, Values: []string{"prod"}},
			{Key: "tier", Op: In, Values: []string{"gold", "silver"}},
			{Key: "legacy", Op: NotExists},
		}},
		{"whitespace everywhere", " \tenv = prod ,\n tier  in  ( gold , silver ) , ! legacy , x != y , z == , w \r", Selector{
			{Key: "env", Op: Equals, Values: []string{"prod"}},
			{Key: "tier", Op: In, Values: []string{"gold", "silver"}},
			{Key: "legacy", Op: NotExists},
			{Key: "x", Op: NotEquals, Values: []string{"y"}},
			{Key: "z", Op: Equals, Values: []string{""}},
			{Key: "w", Op: Exists},
		}},
		{"empty value then next requirement", "a=,b", Selector{
			{Key: "a", Op: Equals, Values: []string{""}},
			{Key: "b", Op: Exists},
		}},
		{"order kept and duplicates kept", "b,a=1,b", Selector{
			{Key: "b", Op: Exists},
			{Key: "a", Op: Equals, Values: []string{"1"}},
			{Key: "b", Op: Exists},
		}},
		{"64 requirements", strings.Repeat("a,", 63) + "a", slicesRepeat(Requirement{Key: "a", Op: Exists}, 64)},
		{"4096 bytes", "a=" + strings.Repeat(" ", 4093) + "b", Selector{{Key: "a", Op: Equals, Values: []string{"b"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): got error %v; want nil", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q): got %#v; want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func slicesRepeat(r Requirement, n int) Selector {
	s := make(Selector, n)
	for i := range s {
		s[i] = r
	}
	return s
}

func TestParseErrors(t *testing.T) {
	key64 := strings.Repeat("k", 64)
	val64 := strings.Repeat("v", 64)
	// 63 requirements of 63 bytes each ("k in(" plus 57 bytes of values
	// plus ")"), each a byte longer in canonical form ("k in (...)"), then
	// "ab": 4034 bytes of input, 4097 in canonical form.
	longIn := "k in(" + strings.Repeat("v", 57) + ")"
	canonOverflow := strings.Repeat(longIn+",", 63) + "ab"

	tests := []struct {
		name       string
		in         string
		wantOffset int
		wantMsg    string
	}{
		{"too long", strings.Repeat(" ", 4097), 4096, "selector longer than 4096 bytes"},
		{"too long canonical form", canonOverflow, 64 * 63, "selector longer than 4096 bytes in canonical form"},
		{"too many requirements", strings.Repeat("a,", 64) + "a", 128, "more than 64 requirements"},
		{"leading comma", ",a=b", 0, "empty requirement"},
		{"empty term", "a=b,,c=d", 4, "empty requirement"},
		{"empty term with space", "a=b, ,c=d", 5, "empty requirement"},
		{"trailing comma", "a=b,", 3, `trailing ","`},
		{"trailing comma and space", "a=b , ", 4, `trailing ","`},
		{"only comma", ",", 0, "empty requirement"},

		{"bad key character", "a*b=c", 1, `expected "=", "==", "!=", "in", "notin", "," or end of input after key, got "*"`},
		{"key starts with operator", "=b", 0, `expected label key, got "="`},
		{"uppercase prefix", "Example.com/a=b", 0, `invalid key "Example.com/a": prefix must be a DNS subdomain`},
		{"key too long", key64 + "=b", 0, `invalid key "` + key64[:40] + `"...: name must be at most 63 characters`},
		{"key ends with dash", "a-=b", 0, `invalid key "a-": name must consist of`},
		{"key with two slashes", "a/b/c", 0, `invalid key "a/b/c": must contain at most one "/"`},
		{"key empty name", "a/=b", 0, `invalid key "a/": name must not be empty`},
		{"key empty prefix", "/a", 0, `invalid key "/a": prefix before "/" must not be empty`},
		{"second key bad", "a=b, -c", 5, `invalid key "-c"`},
		{"not exists without key", "!", 1, "expected label key, got end of input"},
		{"not exists bad key", "! =a", 2, `expected label key, got "="`},
		{"double bang", "!!a", 1, `expected label key, got "!"`},
		{"not exists with operator", "!a=b", 2, `expected "," or end of input, got "="`},

		{"value too long", "a=" + val64, 2, "invalid value " + quote(val64) + ": must be at most 63 characters"},
		{"value starts with dot", "a= .b", 3, `invalid value ".b": must consist of`},
		{"value bad character", "a=b*c", 3, `expected "," or end of input, got "*"`},
		{"value with slash", "a=b/c", 3, `expected "," or end of input, got "/c"`},
		{"two values", "a=b c", 4, `expected "," or end of input, got "c"`},
		{"non-ASCII value", "a=é", 2, `expected "," or end of input, got "é"`},
		{"invalid UTF-8", "a=\xff", 2, `expected "," or end of input, got "\xff"`},

		{"unknown operator word", "a foo (b)", 2, `unknown operator "foo"`},
		{"uppercase in", "a IN (b)", 2, `unknown operator "IN"`},
		{"less than", "a<1", 1, `expected "=", "==", "!=", "in", "notin", "," or end of input after key, got "<"`},
		{"greater than", "a > 1", 2, `got ">"`},
		{"tilde", "a ~ b", 2, `got "~"`},
		{"bang alone", "a!b", 1, `got "!"`},
		{"triple equals", "a===b", 3, `expected "," or end of input, got "="`},

		{"in without list", "a in b", 5, `expected "(" after "in"`},
		{"in at end", "a in", 4, `expected "(" after "in"`},
		{"notin without list", "a notin b", 8, `expected "(" after "notin"`},
		{"in empty list", "a in ()", 6, "empty value list"},
		{"in empty list with space", "a in ( )", 7, "empty value list"},
		{"in leading comma", "a in (,b)", 6, "empty value in list"},
		{"in trailing comma", "a in (b,)", 8, "empty value in list"},
		{"in empty element", "a in (b,,c)", 8, "empty value in list"},
		{"unclosed paren", "a in (b", 5, `unclosed "("`},
		{"unclosed paren after comma", "a notin (b, ", 8, `unclosed "("`},
		{"unclosed empty paren", "a in (", 5, `unclosed "("`},
		{"in missing comma", "a in (b c)", 8, `expected "," or ")" in value list, got "c"`},
		{"in bad value char", "a in (b,*)", 8, `expected value, got "*"`},
		{"in invalid value", "a in (b,-c)", 8, `invalid value "-c"`},
		{"in value too long", "a in (" + val64 + ")", 6, "must be at most 63 characters"},
		{"in followed by junk", "a in (b) c", 9, `expected "," or end of input, got "c"`},
		{"nested paren", "a in ((b))", 6, `expected value, got "("`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q): got %v, nil error; want error", tt.in, sel)
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse(%q): got error of type %T; want *Error", tt.in, err)
			}
			if perr.Offset != tt.wantOffset {
				t.Errorf("Parse(%q): got offset %d; want %d (error %v)", tt.in, perr.Offset, tt.wantOffset, err)
			}
			if !strings.Contains(perr.Msg, tt.wantMsg) {
				t.Errorf("Parse(%q): got message %q; want it to contain %q", tt.in, perr.Msg, tt.wantMsg)
			}
			if sel != nil {
				t.Errorf("Parse(%q): got selector %v with error; want nil", tt.in, sel)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	_, err := Parse("a in b")
	got := fmt.Sprint(err)
	want := `label selector: offset 5: expected "(" after "in"`
	if got != want {
		t.Errorf("got %s; want %s", got, want)
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", ""},
		{"  ", ""},
		{"env=prod", "env=prod"},
		{"env == prod", "env=prod"},
		{"env=", "env="},
		{"env != prod", "env!=prod"},
		{"env!=", "env!="},
		{"tier in(silver,gold,gold)", "tier in (gold,silver)"},
		{"tier  notin  ( silver , gold )", "tier notin (gold,silver)"},
		{"legacy", "legacy"},
		{"! legacy", "!legacy"},
		{" env = prod , tier in ( gold , silver ) , ! legacy ", "env=prod,tier in (gold,silver),!legacy"},
		{"example.com/a-b.c_d=X.y-1_z", "example.com/a-b.c_d=X.y-1_z"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sel, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): got error %v; want nil", tt.in, err)
			}
			got := sel.String()
			if got != tt.want {
				t.Errorf("Parse(%q).String(): got %q; want %q", tt.in, got, tt.want)
			}
			again, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse(%q): got error %v; want nil", got, err)
			}
			if !reflect.DeepEqual(again, sel) {
				t.Errorf("Parse(%q): got %#v; want %#v", got, again, sel)
			}
		})
	}
}

func TestStringLongestCanonical(t *testing.T) {
	// A canonical form of exactly 4096 bytes from 4033 bytes of input: one
	// byte less than the "too long canonical form" case of TestParseErrors.
	longIn := "k in(" + strings.Repeat("v", 57) + ")"
	in := strings.Repeat(longIn+",", 63) + "a"
	sel, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse: got error %v; want nil", err)
	}
	s := sel.String()
	if len(s) != 4096 {
		t.Errorf("got canonical length %d; want 4096", len(s))
	}
	again, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(canonical): got error %v; want nil", err)
	}
	if !reflect.DeepEqual(again, sel) {
		t.Errorf("Parse(canonical): got %v; want %v", again, sel)
	}
}

func TestMatches(t *testing.T) {
	labels := map[string]string{
		"env":              "prod",
		"tier":             "gold",
		"empty":            "",
		"example.com/team": "core",
	}
	tests := []struct {
		sel    string
		labels map[string]string
		want   bool
	}{
		{"", labels, true},
		{"", nil, true},
		{"env=prod", labels, true},
		{"env==prod", labels, true},
		{"env=dev", labels, false},
		{"missing=prod", labels, false},
		{"empty=", labels, true},
		{"env=", labels, false},
		{"missing=", labels, false},
		{"env!=dev", labels, true},
		{"env!=prod", labels, false},
		{"missing!=prod", labels, true},
		{"missing!=prod", nil, true},
		{"empty!=", labels, false},
		{"missing!=", labels, true},
		{"tier in (gold,silver)", labels, true},
		{"tier in (silver,bronze)", labels, false},
		{"missing in (gold)", labels, false},
		{"empty in (gold)", labels, false},
		{"tier notin (gold,silver)", labels, false},
		{"tier notin (bronze)", labels, true},
		{"missing notin (gold)", labels, true},
		{"missing notin (gold)", nil, true},
		{"env", labels, true},
		{"empty", labels, true},
		{"missing", labels, false},
		{"missing", nil, false},
		{"!missing", labels, true},
		{"!env", labels, false},
		{"!empty", labels, false},
		{"!missing", nil, true},
		{"example.com/team=core", labels, true},
		{"team=core", labels, false},
		{"env=prod,tier in (gold,silver),!legacy", labels, true},
		{"env=prod,tier in (gold,silver),!env", labels, false},
		{"env=prod,env=dev", labels, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.sel, tt.labels != nil), func(t *testing.T) {
			sel, err := Parse(tt.sel)
			if err != nil {
				t.Fatalf("Parse(%q): got error %v; want nil", tt.sel, err)
			}
			if got := sel.Matches(tt.labels); got != tt.want {
				t.Errorf("Parse(%q).Matches(%v): got %v; want %v", tt.sel, tt.labels, got, tt.want)
			}
		})
	}
}

func TestMatchesInvalidOperator(t *testing.T) {
	sel := Selector{{Key: "a", Op: 0}}
	if got := sel.Matches(map[string]string{"a": "b"}); got {
		t.Errorf("got %v; want false", got)
	}
}

func TestEmpty(t *testing.T) {
	tests := []struct {
		sel  Selector
		want bool
	}{
		{nil, true},
		{Selector{}, true},
		{Selector{{Key: "a", Op: Exists}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.sel.String(), func(t *testing.T) {
			if got := tt.sel.Empty(); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestOperatorString(t *testing.T) {
	tests := []struct {
		op   Operator
		want string
	}{
		{Equals, "="},
		{NotEquals, "!="},
		{In, "in"},
		{NotIn, "notin"},
		{Exists, "exists"},
		{NotExists, "!exists"},
		{0, "Operator(0)"},
		{42, "Operator(42)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.op.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestValidateKey(t *testing.T) {
	name63 := "a" + strings.Repeat("b", 61) + "c"
	// 253 bytes: 63+1+63+1+63+1+61.
	prefix253 := strings.Join([]string{
		strings.Repeat("a", 63), strings.Repeat("b", 63), strings.Repeat("c", 63), strings.Repeat("d", 61),
	}, ".")
	tests := []struct {
		key  string
		want string // "" for valid, else a substring of the reason
	}{
		{"a", ""},
		{"A", ""},
		{"9", ""},
		{"env", ""},
		{"Env_Name.v-1", ""},
		{"a..b", ""},
		{name63, ""},
		{name63 + "d", "name must be at most 63 characters"},
		{"", "must not be empty"},
		{"-a", "name must consist of"},
		{"a-", "name must consist of"},
		{"_a", "name must consist of"},
		{"a.", "name must consist of"},
		{"a b", "name must consist of"},
		{"a*b", "name must consist of"},
		{"é", "name must consist of"},
		{"example.com/env", ""},
		{"k8s.io/App_Name", ""},
		{"a-b.c-d/e", ""},
		{"a/b", ""},
		{"0/1", ""},
		{prefix253 + "/" + name63, ""},
		{prefix253 + "e/a", "prefix must be at most 253 characters"},
		{"/a", `prefix before "/" must not be empty`},
		{"a/", "name must not be empty"},
		{"/", `prefix before "/" must not be empty`},
		{"a/b/c", `must contain at most one "/"`},
		{"Example.com/a", "prefix must be a DNS subdomain"},
		{"example_com/a", "prefix must be a DNS subdomain"},
		{"-example.com/a", "prefix must be a DNS subdomain"},
		{"example-.com/a", "prefix must be a DNS subdomain"},
		{"example..com/a", "prefix must be a DNS subdomain"},
		{".example.com/a", "prefix must be a DNS subdomain"},
		{"example.com./a", "prefix must be a DNS subdomain"},
		{"example.com/-a", "name must consist of"},
		{"example.com/" + name63, ""},
		{"example.com/" + name63 + "d", "name must be at most 63 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			checkReason(t, "ValidateKey", tt.key, ValidateKey(tt.key), tt.want)
		})
	}
}

func TestValidateValue(t *testing.T) {
	val63 := "a" + strings.Repeat("-", 61) + "z"
	tests := []struct {
		value string
		want  string
	}{
		{"", ""},
		{"a", ""},
		{"Z", ""},
		{"0", ""},
		{"prod", ""},
		{"v1.2_3-rc.4", ""},
		{"a..b", ""},
		{val63, ""},
		{val63 + "z", "must be at most 63 characters"},
		{"-a", "must consist of"},
		{"a-", "must consist of"},
		{".a", "must consist of"},
		{"a_", "must consist of"},
		{"a/b", "must consist of"},
		{"a b", "must consist of"},
		{" ", "must consist of"},
		{"é", "must consist of"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			checkReason(t, "ValidateValue", tt.value, ValidateValue(tt.value), tt.want)
		})
	}
}

func TestValidateLabels(t *testing.T) {
	many := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m["k"+strconv.Itoa(i)] = "v"
		}
		return m
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"nil", nil, ""},
		{"empty", map[string]string{}, ""},
		{"valid", map[string]string{"env": "prod", "example.com/tier": "gold", "empty": ""}, ""},
		{"64 labels", many(64), ""},
		{"65 labels", many(65), "too many labels: 65, at most 64 allowed"},
		{"bad key", map[string]string{"env": "prod", "Bad.com/x": "y"}, `label key "Bad.com/x": prefix must be a DNS subdomain`},
		{"empty key", map[string]string{"": "x"}, `label key "": must not be empty`},
		{"bad value", map[string]string{"env": "-prod"}, `label "env": value must consist of`},
		{"long value", map[string]string{"env": strings.Repeat("v", 64)}, `label "env": value must be at most 63 characters`},
		{"first bad key in sorted order", map[string]string{"b": "-", "a": "-", "c": "-"}, `label "a": value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkReason(t, "ValidateLabels", fmt.Sprint(tt.labels), ValidateLabels(tt.labels), tt.want)
		})
	}
}

// checkReason checks that err is nil when want is empty, and otherwise
// that err's message contains want.
func checkReason(t *testing.T, fn, arg string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s(%q): got %v; want nil", fn, arg, err)
	case want != "" && err == nil:
		t.Errorf("%s(%q): got nil; want error containing %q", fn, arg, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s(%q): got %q; want error containing %q", fn, arg, err, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		" ",
		"env=prod,tier in (gold,silver),!legacy",
		"env==prod",
		"env=",
		"env!=",
		"a in(b,a,b)",
		"a notin ( b , c )",
		"example.com/a-b=c.d_e",
		"! a",
		"a=b,,c",
		"a=b,",
		"a in (b",
		"a in ()",
		"a foo (b)",
		"a<b",
		"in in (in),notin notin (notin)",
		"a=\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse(%q): got error of type %T; want *Error", in, err)
			}
			if perr.Offset < 0 || perr.Offset > len(in) {
				t.Fatalf("Parse(%q): got offset %d; want within [0, %d]", in, perr.Offset, len(in))
			}
			if sel != nil {
				t.Fatalf("Parse(%q): got selector %v with error; want nil", in, sel)
			}
			return
		}
		for _, r := range sel {
			if err := ValidateKey(r.Key); err != nil {
				t.Fatalf("Parse(%q): got invalid key %q: %v", in, r.Key, err)
			}
			for _, v := range r.Values {
				if err := ValidateValue(v); err != nil {
					t.Fatalf("Parse(%q): got invalid value %q: %v", in, v, err)
				}
			}
		}
		s := sel.String()
		if len(s) > maxSelectorLen {
			t.Fatalf("Parse(%q).String(): got %d bytes; want at most %d", in, len(s), maxSelectorLen)
		}
		again, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) (canonical form of %q): got error %v; want nil", s, in, err)
		}
		if !reflect.DeepEqual(again, sel) {
			t.Fatalf("Parse(%q) (canonical form of %q): got %#v; want %#v", s, in, again, sel)
		}
		if s2 := again.String(); s2 != s {
			t.Fatalf("String of Parse(%q): got %q; want %q", s, s2, s)
		}
	})
}
