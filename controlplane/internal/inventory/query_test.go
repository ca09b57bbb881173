package inventory

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in     string
		terms  int
		labels int
		err    string
	}{
		{"", 0, 0, ""},
		{"env=prod", 0, 1, ""},
		{"env=prod,tier in (gold,silver),!legacy", 0, 3, ""},
		{"product=kafka,channel=stable", 2, 0, ""},
		{"region in (eu-west-1, us-east-1),env=prod", 1, 1, ""},
		{"version>=1.2.0,version<1.3.0", 2, 0, ""},
		{"desired_version=1.3.1,host_version>3.4.0", 2, 0, ""},
		{"version notin (1.0.0,2.0.0-rc.1)", 1, 0, ""},
		{"label:version=x,version=1.0.0", 1, 1, ""},
		{"name==kafka-1", 1, 0, ""},
		{"region>eu", 0, 0, "not ordered"},
		{"version>=1.2", 0, 0, "version"},
		{"version>=v1.2.0", 0, 0, "version"},
		{"product", 0, 0, "needs an operator"},
		{"product in kafka", 0, 0, "needs a list"},
		{"product in (kafka,)", 0, 0, "empty value"},
		{"env=prod,", 0, 0, "empty term"},
		{"region in (a,b", 0, 0, "unbalanced"},
		{"env in (a,b))", 0, 0, "unbalanced"},
		{"product=a b", 0, 0, "one value"},
		{"tier==", 0, 1, ""}, // a label equal to the empty value, as in selector
	} {
		q, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) error %v; want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if len(q.Terms) != tc.terms || len(q.Labels) != tc.labels {
			t.Errorf("Parse(%q) = %d terms, %d labels; want %d, %d", tc.in, len(q.Terms), len(q.Labels), tc.terms, tc.labels)
		}
	}
}

func TestVersionTermsCarrySortKeys(t *testing.T) {
	q, err := Parse("version in (1.10.0,1.9.0),host_version>=3.4.0")
	if err != nil {
		t.Fatal(err)
	}
	in := q.Terms[0]
	if in.Op != In || len(in.Keys) != 2 || in.Values[0] != "1.10.0" || !(in.Keys[0] > in.Keys[1]) {
		t.Fatalf("in term %+v; want sorted values with keys in semver order", in)
	}
	if ge := q.Terms[1]; ge.Field != HostVersion || ge.Op != Ge || len(ge.Keys) != 1 {
		t.Fatalf("host term %+v", ge)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"env=prod,version>=1.2.0", "region in (a,b),label:name=x", "product notin (x)", "(", "version<1.0.0-rc.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s)
		if err != nil {
			return
		}
		for _, term := range q.Terms {
			if len(term.Values) == 0 || (term.Field.IsVersion() && len(term.Keys) != len(term.Values)) {
				t.Fatalf("Parse(%q) gave term %+v", s, term)
			}
		}
	})
}
