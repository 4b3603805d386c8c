//go:build !linux

package main

import "syscall"

// qemuSysProcAttr has nothing to add where the kernel cannot kill children
// of a dead parent; the driver's own cleanup stops QEMU.
func qemuSysProcAttr() *syscall.SysProcAttr { return nil }
