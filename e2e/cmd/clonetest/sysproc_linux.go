package main

import "syscall"

// qemuSysProcAttr makes the kernel kill QEMU when the driver dies, so that a
// killed or crashed run leaves no VM behind.
func qemuSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
