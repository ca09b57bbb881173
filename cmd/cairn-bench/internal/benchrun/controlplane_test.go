package benchrun

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLogTally(t *testing.T) {
	log := strings.Join([]string{
		`{"time":"t","level":"INFO","msg":"listening"}`,
		`{"time":"t","level":"WARN","msg":"recheck revocations","error":"revoked agents: timeout: context deadline exceeded"}`,
		`{"time":"t","level":"WARN","msg":"serving plaintext (--insecure)"}`,
		`{"time":"t","level":"ERROR","msg":"store reports","error":"first"}`,
		`not json`,
		`{"time":"t","level":"ERROR","msg":"store reports","error":"second"}`,
		`{"time":"t","level":"WARN","msg":"no error field"}`,
	}, "\n")
	path := filepath.Join(t.TempDir(), "controlplane.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := logTally(path)
	want := []string{
		"2x ERROR store reports (first: first)",
		"1x WARN recheck revocations (first: revoked agents: timeout: context deadline exceeded)",
		"1x WARN no error field",
	}
	if !slices.Equal(got, want) {
		t.Errorf("logTally:\n got %q\nwant %q", got, want)
	}
	if got := logTally(filepath.Join(t.TempDir(), "missing.log")); got != nil {
		t.Errorf("logTally of a missing file: %q; want nil", got)
	}
}
