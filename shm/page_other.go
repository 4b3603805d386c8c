//go:build !linux

package shm

import (
	"fmt"
	"os"
	"time"
)

// MapPage is not supported on this system.
func MapPage(path string) (*Page, error) {
	return nil, fmt.Errorf("mapping generation page: %w", ErrNotSupported)
}

// MapPageMemfd is not supported on this system.
func MapPageMemfd(f *os.File) (*Page, error) {
	return nil, fmt.Errorf("mapping generation page: %w", ErrNotSupported)
}

// Retire does nothing on this system: no page is ever mapped.
func (p *Page) Retire() error { return nil }

// OpenWriter is not supported on this system.
func OpenWriter(path string) (*Writer, error) {
	return nil, fmt.Errorf("opening generation page: %w", ErrNotSupported)
}

// Check reports nothing on this system: no Writer is ever made.
func (w *Writer) Check() Damage { return Damage{} }

// Repair is not supported on this system.
func (w *Writer) Repair() error { return ErrNotSupported }

// Dup is not supported on this system.
func (w *Writer) Dup() (*os.File, error) { return nil, ErrNotSupported }

// Close does nothing on this system.
func (w *Writer) Close() error { return nil }

// Monotonic returns 0 on this system.
func Monotonic() time.Duration { return 0 }
