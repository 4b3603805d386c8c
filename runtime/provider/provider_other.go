//go:build !linux

package provider

import (
	"fmt"
	"net"
)

// New is not supported on this system.
func New(cfg Config) (*Provider, error) {
	return nil, fmt.Errorf("starting a snapsafe provider: %w", ErrNotSupported)
}

// accept never runs here: New always fails, so no Provider exists.
func (*Provider) accept() error { return ErrNotSupported }

// sendEvent never runs here: no Provider exists.
func (*Provider) sendEvent(*peer, []byte) eventResult { return eventFailed }

// checkFDLimit never runs here: no Provider exists.
func (*Provider) checkFDLimit() {}

// closeListener never runs here either.
func (*Provider) closeListener() {}

// sync never runs here: no provider, no high-water file.
func (h *highWater) sync() error { return ErrNotSupported }

// readProc never runs here: no peer exists.
func readProc(*net.UnixConn, int32) (procInfo, error) { return procInfo{}, ErrNotSupported }
