//go:build unix

package certs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// LockDir takes an exclusive advisory lock on dir, for a change of several
// files that other processes sharing dir (control-plane replicas on one
// volume) must see whole or not at all. It waits until the lock is free or
// ctx is done, and returns a function that releases it.
//
// The lock is flock(2) on dir/LockFileName, created 0600 if missing. It is
// held by the open file, not the process: two LockDir calls in one process
// exclude each other too, and a process that dies releases its lock. It is
// advisory, so it protects only against writers that take it too. On a
// network file system it works only where the file system supports flock
// across hosts (Linux emulates it with byte-range locks on NFS, which needs
// a working lock manager: NFSv4, or NFSv3 with lockd).
func LockDir(ctx context.Context, dir string) (unlock func() error, err error) {
	path := filepath.Join(dir, LockFileName)
	// O_NOFOLLOW: a symlink planted in the directory must not make us
	// create or lock a file elsewhere.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := flockWait(ctx, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() error {
		// Closing the only descriptor of the open file releases the lock
		// as well; unlocking first says so plainly.
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unlock %s: %w", dir, err)
		}
		return nil
	}, nil
}

// flockWait polls for the lock rather than blocking in flock(2), so that
// ctx can end the wait: a blocked flock cannot be interrupted. Holders keep
// the lock for a few file writes, so short waits are the rule.
func flockWait(ctx context.Context, f *os.File) error {
	const maxWait = 50 * time.Millisecond
	wait := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EAGAIN):
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}
