package acpi

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fileConn is a conn over a non-blocking descriptor registered with the Go
// runtime's poller (epoll). A goroutine blocked in recv parks in the poller
// rather than in read(2), so a read deadline wakes it: that is how Run stops
// when its context is cancelled, without a helper goroutine stuck in a system
// call. /dev/kmsg and netlink sockets both support poll(2), so both work.
type fileConn struct {
	f  *os.File
	rc syscall.RawConn
	// read performs one non-blocking read on fd; it returns unix.EAGAIN
	// when nothing is ready yet.
	read func(fd int, b []byte) (n int, sender uint32, err error)
	// lost is the errno with which the descriptor says that the kernel
	// discarded messages.
	lost unix.Errno

	closeOnce sync.Once
	closeErr  error
}

// newFileConn takes ownership of fd, which must be non-blocking; it closes
// fd when it fails.
func newFileConn(fd int, name string, read func(int, []byte) (int, uint32, error), lost unix.Errno) (conn, error) {
	// os.NewFile registers a non-blocking descriptor with the poller.
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileConn{f: f, rc: rc, read: read, lost: lost}, nil
}

func (c *fileConn) recv(b []byte) (n int, sender uint32, err error) {
	var readErr error
	err = c.rc.Read(func(fd uintptr) bool {
		n, sender, readErr = c.read(int(fd), b)
		// Returning false parks the goroutine until fd is readable or
		// the deadline passes.
		return readErr != unix.EAGAIN
	})
	if err == nil {
		err = readErr
	}
	if errors.Is(err, c.lost) {
		return 0, 0, fmt.Errorf("%w: %w", errLost, err)
	}
	if err != nil {
		return 0, 0, err
	}
	return n, sender, nil
}

func (c *fileConn) setReadDeadline(t time.Time) error {
	return c.f.SetReadDeadline(t)
}

func (c *fileConn) close() error {
	c.closeOnce.Do(func() { c.closeErr = c.f.Close() })
	return c.closeErr
}
