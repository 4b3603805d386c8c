//go:build !linux

package main

import (
	"errors"
	"time"
)

// monoTime needs Linux's CLOCK_MONOTONIC as the provider sees it; the guest
// is always Linux.
func monoTime() (time.Duration, error) {
	return 0, errors.New("reading CLOCK_MONOTONIC: not supported on this operating system")
}
