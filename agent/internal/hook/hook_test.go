package hook

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnvDropsAgentVariables(t *testing.T) {
	got := Env([]string{"PATH=/bin", "CAIRN_AGENT_JOIN_TOKEN=secret", "CAIRN_AGENT_DATA_DIR=/x", "CAIRN_OTHER=1"})
	if want := []string{"PATH=/bin", "CAIRN_OTHER=1"}; !slices.Equal(got, want) {
		t.Fatalf("got %q; want %q", got, want)
	}
}

func TestRun(t *testing.T) {
	t.Setenv("CAIRN_AGENT_JOIN_TOKEN", "secret")
	ctx := context.Background()
	out, err := Run(ctx, []string{"/bin/sh", "-c", `echo "v=$CAIRN_TARGET_VERSION token=$CAIRN_AGENT_JOIN_TOKEN"`}, 30*time.Second, "CAIRN_TARGET_VERSION=1.2.3")
	if err != nil || out != "v=1.2.3 token=" {
		t.Fatalf("Run = %q, %v; want the extra variable and no join token", out, err)
	}
	if _, err := Run(ctx, []string{"/bin/sh", "-c", "exit 3"}, 30*time.Second); err == nil {
		t.Fatal("a failing command succeeded")
	}
	if _, err := Run(ctx, nil, time.Second); err == nil {
		t.Fatal("an empty command ran")
	}
	// A timeout kills the command's children too.
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	_, err = Run(ctx, []string{"/bin/sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"}, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("got %v; want a timeout", err)
	}
	b, _ := os.ReadFile(pidFile)
	if pid := strings.TrimSpace(string(b)); pid != "" {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := os.Stat("/proc/" + pid); os.IsNotExist(err) {
				break
			}
			if st, _ := os.ReadFile("/proc/" + pid + "/stat"); strings.Contains(string(st), ") Z ") {
				break // killed, waiting to be reaped by init
			}
			if time.Now().After(deadline) {
				t.Fatalf("the command's child %s outlived the timeout", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	long, err := Run(ctx, []string{"/bin/sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x"}, 30*time.Second)
	if err != nil || !strings.HasSuffix(long, "(truncated)") || len(long) > maxOutput+20 {
		t.Fatalf("long output: %d bytes, %v", len(long), err)
	}
}
