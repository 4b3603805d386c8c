//go:build !linux

package provider

import (
	"fmt"
	"syscall"
	"time"
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

// The server never runs here: no Provider exists.
type (
	server  struct{}
	reactor struct{}
)

func (*Provider) startServer() error { return ErrNotSupported }
func (*Provider) stopServer()        {}
func (*Provider) unserve(*peer)      {}
func (*Provider) kill(*peer)         {}

// closeListener never runs here either.
func (*Provider) closeListener() {}

// sync never runs here: no provider, no high-water file.
func (h *highWater) sync() error { return ErrNotSupported }

// readProc never runs here: no peer exists.
func readProc(syscall.Conn, int32) (procInfo, error) { return procInfo{}, ErrNotSupported }

// sock never exists here: no peer exists.
type sock struct{}

func (*sock) SyscallConn() (syscall.RawConn, error) { return nil, ErrNotSupported }
func (*sock) write([]byte, []byte, time.Time) error { return ErrNotSupported }
func (*sock) shutdown()                             {}
func (*sock) close()                                {}
