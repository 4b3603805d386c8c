//go:build !linux

package client

import "fmt"

// Attach is not supported on this system.
func Attach(dir string) (*Client, error) {
	return nil, fmt.Errorf("attaching to a snapsafe provider: %w", ErrNotSupported)
}
