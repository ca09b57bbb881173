//go:build !unix

package certs

import (
	"context"
	"errors"
	"fmt"
)

// LockDir needs flock(2); the control plane, its only user, runs on Unix.
func LockDir(ctx context.Context, dir string) (unlock func() error, err error) {
	return nil, fmt.Errorf("lock %s: %w", dir, errors.ErrUnsupported)
}
