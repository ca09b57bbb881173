//go:build unix

package certs_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
)

func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	unlock := mustLock(t, dir)
	checkMode(t, filepath.Join(dir, certs.LockFileName), 0o600)

	// Held: a second lock, even in this process, waits until ctx ends.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if u, err := certs.LockDir(ctx, dir); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			u()
		}
		t.Fatalf("LockDir while held: got %v; want context.DeadlineExceeded", err)
	}

	// Released: a waiter gets it.
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u, err := certs.LockDir(ctx, dir)
		if err == nil {
			err = u()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := unlock(); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if err := <-got; err != nil {
		t.Errorf("LockDir after unlock: %v", err)
	}

	if _, err := certs.LockDir(t.Context(), filepath.Join(dir, "missing")); err == nil {
		t.Errorf("LockDir of a missing directory: got nil error; want error")
	}
}

// TestLockDirExcludes has many goroutines take the lock, each with its own
// open file as separate processes would have, and checks that no two hold
// it at once.
func TestLockDirExcludes(t *testing.T) {
	dir := t.TempDir()
	var holders atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				unlock, err := certs.LockDir(t.Context(), dir)
				if err != nil {
					t.Errorf("LockDir: %v", err)
					return
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("holders at once: got %d; want 1", n)
				}
				time.Sleep(100 * time.Microsecond)
				holders.Add(-1)
				if err := unlock(); err != nil {
					t.Errorf("unlock: %v", err)
				}
			}
		})
	}
	wg.Wait()
}

// TestLockDirAcrossProcesses runs this test binary again as a second
// process that holds the lock until its stdin closes.
func TestLockDirAcrossProcesses(t *testing.T) {
	const env = "CAIRN_TEST_LOCKDIR_HOLDER"
	if dir := os.Getenv(env); dir != "" {
		unlock, err := certs.LockDir(context.Background(), dir)
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
		if err := unlock(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}

	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockDirAcrossProcesses$")
	cmd.Env = append(os.Environ(), env+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("holder process: got %q, %v; want \"locked\"", line, err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if u, err := certs.LockDir(ctx, dir); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			u()
		}
		t.Fatalf("LockDir while another process holds it: got %v; want context.DeadlineExceeded", err)
	}
	stdin.Close()
	unlock := mustLock(t, dir)
	if err := unlock(); err != nil {
		t.Errorf("unlock: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("holder process: %v", err)
	}
}

func mustLock(tb testing.TB, dir string) func() error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unlock, err := certs.LockDir(ctx, dir)
	if err != nil {
		tb.Fatalf("LockDir: %v", err)
	}
	return unlock
}
