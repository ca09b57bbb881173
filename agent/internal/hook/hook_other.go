//go:build !unix

package hook

import "os/exec"

// killGroupOnCancel leaves exec's default: a timeout kills the command's
// own process only.
func killGroupOnCancel(*exec.Cmd) {}
