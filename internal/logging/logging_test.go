package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		level, format string
		ok            bool
		want          string
	}{
		{"info", "json", true, `"msg":"hello"`},
		{"debug", "text", true, "msg=hello"},
		{"loud", "json", false, ""},
		{"info", "xml", false, ""},
	} {
		var buf bytes.Buffer
		log, err := New(tc.level, tc.format, &buf)
		if (err == nil) != tc.ok {
			t.Fatalf("New(%q, %q): got error %v; want ok=%v", tc.level, tc.format, err, tc.ok)
		}
		if err != nil {
			continue
		}
		log.Info("hello")
		if !strings.Contains(buf.String(), tc.want) {
			t.Errorf("New(%q, %q) wrote %q; want it to contain %q", tc.level, tc.format, buf.String(), tc.want)
		}
	}
}
