//go:build !linux

package runtime

import (
	"fmt"
	"os"
	"time"
)

// New is not supported on this system.
func New(cfg Config) (*Provider, error) {
	return nil, fmt.Errorf("starting a snapsafe provider: %w", ErrNotSupported)
}

func (*Provider) accept() error { return ErrNotSupported }
func monotonic() time.Duration  { return 0 }

func dupFile(*os.File) (*os.File, error) { return nil, ErrNotSupported }
