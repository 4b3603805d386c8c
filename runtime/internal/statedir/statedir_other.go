//go:build !linux

package statedir

import (
	"fmt"
	"net"

	"github.com/snapsafe/snapsafe/internal/errs"
)

// Trusted is not supported on this system: no directory is trusted.
func Trusted(path string) error {
	return fmt.Errorf("checking state directory %s: %w", path, errs.ErrNotSupported)
}

// Dial is not supported on this system.
func Dial(path string) (*net.UnixConn, error) {
	return nil, fmt.Errorf("connecting to the provider on %s: %w", path, errs.ErrNotSupported)
}

// Close does nothing on this system: Open never succeeds here.
func (d *Dir) Close() error { return nil }
