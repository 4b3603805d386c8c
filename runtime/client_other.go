//go:build !linux

package runtime

import (
	"context"
	"fmt"
	"os"
)

// Attach is not supported on this system.
func Attach(dir string) (*Client, error) {
	return nil, fmt.Errorf("attaching to a snapsafe provider: %w", ErrNotSupported)
}

// Watch is not supported on this system.
func (c *Client) Watch(ctx context.Context) (*Watcher, error) {
	return nil, fmt.Errorf("watch: %w", ErrNotSupported)
}

// The stand-ins below let the portable files compile; no value of these
// types is ever made on this system because Attach always fails.

type ctlConn struct{ done chan struct{} }

type reply struct {
	m    message
	file *os.File
}

func (*ctlConn) call(context.Context, msgType, []byte) (reply, error) {
	return reply{}, ErrNotSupported
}
func (*ctlConn) wait(context.Context, uint64) error { return ErrNotSupported }
func (*ctlConn) close()                             {}
func (*ctlConn) error() error                       { return ErrNotSupported }

type eventFD struct{ fd int }

func newEventFD() (eventFD, error) { return eventFD{-1}, ErrNotSupported }

func (*eventFD) signal()      {}
func (*eventFD) drain()       {}
func (*eventFD) close() error { return nil }
