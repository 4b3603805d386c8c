//go:build !linux

package client

import "fmt"

// Fd is not supported on this system.
func (w *Watcher) Fd() (int, error) {
	return -1, fmt.Errorf("watcher descriptor: %w", ErrNotSupported)
}
