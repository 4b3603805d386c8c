//go:build !linux

package vmclock

import (
	"context"
	"fmt"
	"os"
)

// Open needs the Linux ptp_vmclock driver; elsewhere it returns an error
// wrapping ErrNotSupported.
func Open(path string) (*VMClock, error) {
	return nil, fmt.Errorf("opening VMClock %s: %w: VMClock needs the Linux ptp_vmclock driver", path, ErrNotSupported)
}

// MapFile is not supported on this system.
func MapFile(f *os.File) (*VMClock, error) {
	return nil, fmt.Errorf("mapping VMClock: %w", ErrNotSupported)
}

// Close does nothing: Open never returns a VMClock here.
func (c *VMClock) Close() error { return nil }

// NewNotifier is not supported on this system.
func NewNotifier(path string) (*Notifier, error) {
	return nil, fmt.Errorf("VMClock notifications: %w", ErrNotSupported)
}

// Run is not supported on this system: NewNotifier never returns a
// Notifier here.
func (n *Notifier) Run(context.Context, func() error) error {
	return fmt.Errorf("VMClock notifications: %w", ErrNotSupported)
}
