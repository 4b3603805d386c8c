package vmclock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Open opens the VMClock device at path read-only and maps its page
// read-only. A regular file with the same layout is accepted too (tests, and
// captures of a page). It checks the magic, the version and the declared size.
// When path does not exist, or its driver is gone, the error wraps
// ErrNoDevice. Close releases the mapping and the descriptor.
func Open(path string) (*VMClock, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("no VMClock device at %s: the kernel needs the ptp_vmclock driver (Linux 6.13+) and a hypervisor that offers VMClock: %w (%w)", path, ErrNoDevice, err)
		}
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("opening VMClock: %w: run as root or grant read access to %s", err, path)
		}
		return nil, fmt.Errorf("opening VMClock: %w", err)
	}
	c, err := mapFile(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// MapFile maps a VMClock device received from a provider (or opened by the
// caller) read-only, and takes ownership of f.
func MapFile(f *os.File) (*VMClock, error) { return mapFile(f.Name(), f) }

func mapFile(path string, f *os.File) (*VMClock, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("VMClock: %w", err)
	}
	var n int64
	switch {
	case st.Mode()&fs.ModeCharDevice != 0:
		// A device has no file size, and the driver maps exactly one page at
		// offset 0; it only offers the device when the page is whole.
		n = int64(os.Getpagesize())
	case st.Mode().IsRegular():
		n = st.Size()
		if err := checkLen(n); err != nil {
			return nil, fmt.Errorf("VMClock %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("%s is not a VMClock device or page file (mode %v)", path, st.Mode())
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping VMClock %s: %w (is it a VMClock device?)", path, err)
	}
	c := &VMClock{path: path, f: f, layout: mem}
	if c.hdr, err = c.layout.header(); err == nil {
		err = c.checkOpen(st.Mode().IsRegular())
	}
	if err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("VMClock %s: %w", path, err)
	}
	return c, nil
}

// Close unmaps the page and closes the device. Calling it again does
// nothing.
func (c *VMClock) Close() error {
	if c.f == nil {
		return nil
	}
	err := unix.Munmap(c.layout)
	c.layout = nil
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	c.f = nil
	return err
}

// NewNotifier opens a second, private descriptor of the device at path to
// wait on. The driver keeps "the last seq_count this descriptor has seen"
// per open file and reports POLLIN while seq_count differs; a read at an
// offset inside the page records the current value. Descriptors handed to
// clients share that state, so notifications must not be awaited on those.
// Close releases the descriptor.
func NewNotifier(path string) (*Notifier, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening VMClock for notifications: %w", err)
	}
	buf := make([]byte, MinSize)
	return &Notifier{f: f, ack: func() error {
		if _, err := f.ReadAt(buf, 0); err != nil {
			return fmt.Errorf("acknowledging VMClock notification: %w", err)
		}
		return nil
	}}, nil
}

// Run calls onWake after each notification until ctx is done, and returns
// nil then. It fails when onWake does, when waiting fails, and when the
// device stops notifying (POLLHUP, as the driver signals when the device
// does not notify). The driver signals POLLIN|POLLRDNORM (never POLLPRI).
// Run must not be called concurrently with itself.
func (n *Notifier) Run(ctx context.Context, onWake func() error) error {
	// poll(2) cannot wait for a channel, so cancellation reaches it as an
	// eventfd in the same poll set.
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("waiting for VMClock notifications: eventfd: %w", err)
	}
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woken)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(efd, one[:]) // one write to a fresh eventfd cannot fail
	})
	defer func() {
		// The wake-up may be writing right now; let it finish before the
		// descriptor is closed and its number reused.
		if !stop() {
			<-woken
		}
		unix.Close(efd)
	}()

	fds := []unix.PollFd{
		{Fd: int32(n.f.Fd()), Events: unix.POLLIN},
		{Fd: int32(efd), Events: unix.POLLIN},
	}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("waiting for VMClock notifications: %w", err)
		}
		if fds[1].Revents != 0 {
			return nil
		}
		rev := fds[0].Revents
		if rev&unix.POLLIN != 0 {
			if err := n.ack(); err != nil {
				return err
			}
		}
		// Check the counter on every wake-up: a failing check explains a
		// POLLHUP better than the poll result does.
		if err := onWake(); err != nil {
			return err
		}
		if rev&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return fmt.Errorf("VMClock notifications stopped (poll revents %#x): restart snapsafed", rev)
		}
	}
}
