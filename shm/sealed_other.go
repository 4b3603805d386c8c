//go:build !linux

package shm

import (
	"fmt"
	"os"
)

// SealedFile is not supported on this system.
func SealedFile(name string, data []byte) (*os.File, error) {
	return nil, fmt.Errorf("creating memfd %s: %w", name, ErrNotSupported)
}
