//go:build !linux

package main

import (
	"errors"
	"time"
)

// bootTime needs Linux's CLOCK_BOOTTIME; the guest is always Linux.
func bootTime() (time.Duration, error) {
	return 0, errors.New("reading CLOCK_BOOTTIME: not supported on this operating system")
}
