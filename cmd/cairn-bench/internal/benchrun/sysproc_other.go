//go:build !linux

package benchrun

import "syscall"

// childAttr: other systems have no parent-death signal.
func childAttr() *syscall.SysProcAttr { return nil }
