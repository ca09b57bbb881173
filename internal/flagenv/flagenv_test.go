package flagenv

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantErr bool
	}{
		{"default", nil, nil, "def", false},
		{"env", nil, map[string]string{"CAIRN_DATA_DIR": "/env"}, "/env", false},
		{"flag wins", []string{"--data-dir", "/flag"}, map[string]string{"CAIRN_DATA_DIR": "/env"}, "/flag", false},
		{"bad env value", nil, map[string]string{"CAIRN_DEBUG": "maybe"}, "def", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			dir := fs.String("data-dir", "def", "")
			fs.Bool("debug", false, "")
			err := Parse(fs, "CAIRN", tc.args, func(k string) string { return tc.env[k] })
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v; want error %v", err, tc.wantErr)
			}
			if err == nil && *dir != tc.want {
				t.Fatalf("got %q; want %q", *dir, tc.want)
			}
			if tc.wantErr && !strings.Contains(err.Error(), "CAIRN_DEBUG") {
				t.Fatalf("error %q does not name the variable", err)
			}
		})
	}
}

func TestUsageNamesVariables(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("database-url", "", "where the state lives")
	var buf bytes.Buffer
	Usage(fs, "CAIRN", "usage: x", &buf)()
	if !strings.Contains(buf.String(), "--database-url  [$CAIRN_DATABASE_URL]") {
		t.Fatalf("got %q; want the flag with its variable", buf.String())
	}
}
