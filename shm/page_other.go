//go:build !linux

package shm

import (
	"fmt"
	"os"
)

// MapPage is not supported on this system.
func MapPage(path string) (*Page, error) {
	return nil, fmt.Errorf("mapping generation page: %w", ErrNotSupported)
}

// MapPageFile is not supported on this system.
func MapPageFile(f *os.File) (*Page, error) {
	return nil, fmt.Errorf("mapping generation page: %w", ErrNotSupported)
}

// OpenWriter is not supported on this system.
func OpenWriter(path string) (*Writer, error) {
	return nil, fmt.Errorf("opening generation page: %w", ErrNotSupported)
}
