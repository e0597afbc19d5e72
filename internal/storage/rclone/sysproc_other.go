//go:build !linux

package rclone

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
