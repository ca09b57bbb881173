//go:build !unix

package render

import "os/exec"

// killGroupOnCancel leaves exec's default: a timeout kills the command's
// own process only.
func killGroupOnCancel(*exec.Cmd) {}
