//go:build !linux

package backend

import (
	"context"
	"fmt"
	"os"
)

// OpenVMClock needs the Linux ptp_vmclock driver; elsewhere it returns an
// error wrapping ErrNotSupported.
func OpenVMClock(path string) (*VMClock, error) {
	return nil, fmt.Errorf("opening VMClock %s: %w: VMClock needs the Linux ptp_vmclock driver", path, ErrNotSupported)
}

// Close does nothing: OpenVMClock never returns a VMClock here.
func (c *VMClock) Close() error { return nil }

// MapVMClockFile is not supported on this system.
func MapVMClockFile(f *os.File) (*VMClock, error) {
	return nil, fmt.Errorf("mapping VMClock: %w", ErrNotSupported)
}

func newVMClockNotifier(path string) (*vmclockNotifier, error) {
	return nil, fmt.Errorf("VMClock notifications: %w", ErrNotSupported)
}

func (n *vmclockNotifier) run(context.Context, func() error) error {
	return fmt.Errorf("VMClock notifications: %w", ErrNotSupported)
}
