package rclone

import "syscall"

// sysProcAttr makes rclone receive SIGTERM when this process dies, so that an
// rcat whose stdin closes with the process aborts its upload instead of
// storing a truncated temporary object.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
