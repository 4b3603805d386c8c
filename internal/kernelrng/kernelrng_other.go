//go:build !linux

package kernelrng

import "fmt"

// Reseed is not supported on this system.
func Reseed(entropy, extra []byte) error {
	return fmt.Errorf("reseeding the kernel RNG: %w", ErrNotSupported)
}
