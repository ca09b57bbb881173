package metricpoint

import (
	"math"
	"strings"
	"testing"
)

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"name", CheckName("http_requests_total"), true},
		{"name with colon", CheckName("job:rate5m"), true},
		{"name with digit first", CheckName("9lives"), false},
		{"name with space", CheckName("a b"), false},
		{"empty name", CheckName(""), false},
		{"longest name", CheckName(strings.Repeat("a", MaxNameLen)), true},
		{"name too long", CheckName(strings.Repeat("a", MaxNameLen+1)), false},
		{"labels", CheckLabels(map[string]string{"code": "200"}), true},
		{"bad label name", CheckLabels(map[string]string{"a-b": "x"}), false},
		{"long label value", CheckLabels(map[string]string{"a": strings.Repeat("v", MaxLabelValue+1)}), false},
		{"too many labels", CheckLabels(func() map[string]string {
			m := map[string]string{}
			for i := range MaxLabels + 1 {
				m["l"+strings.Repeat("x", i)] = ""
			}
			return m
		}()), false},
		{"source", CheckSource("ingest-gateway"), true},
		{"source with NUL", CheckSource("svc\x00"), false},
		{"source not UTF-8", CheckSource("svc\xff"), false},
		{"label value with NUL", CheckLabels(map[string]string{"a": "x\x00"}), false},
		{"value", CheckValue(1.5), true},
		{"NaN", CheckValue(math.NaN()), false},
		{"+Inf", CheckValue(math.Inf(1)), false},
		{"text with newline", CheckText("line 1\nline 2"), true},
		{"text with escape", CheckText("\x1b[31m"), false},
		{"empty source", CheckSource(""), false},
	} {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: got error %v; want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
}
