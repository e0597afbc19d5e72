package testenv

import "syscall"

// sysProcAttr makes a started server die with the test binary, even when the
// test binary is killed (timeout, panic) before its cleanups run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
