//go:build !linux

package shm

import (
	"fmt"
	"os"
)

// NewRegion is not supported on this system.
func NewRegion(size int) (*Region, error) {
	return nil, fmt.Errorf("creating wipe region: %w", ErrNotSupported)
}

// MapRegion is not supported on this system.
func MapRegion(f *os.File) (*Region, error) {
	return nil, fmt.Errorf("mapping wipe region: %w", ErrNotSupported)
}

// Close is a no-op on this system.
func (r *Region) Close() error { return nil }

// Dup is not supported on this system.
func (r *Region) Dup() (*os.File, error) { return nil, ErrNotSupported }
