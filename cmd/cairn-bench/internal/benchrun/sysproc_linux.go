package benchrun

import "syscall"

// childAttr makes a child process die with the benchmark, so a control
// plane or worker is never left behind holding ports and files.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
