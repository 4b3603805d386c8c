package main

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// monoTime reads CLOCK_MONOTONIC, the clock in which the provider stamps
// its bumps (the page's monotonic_ns). Go's time package keeps its monotonic
// readings relative to process start, so it cannot be compared with the page.
func monoTime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
