package client

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Fd returns a descriptor for event loops (poll, epoll): it is readable
// while a generation newer than the last one Next returned is pending
// (also the generation of a provider the watcher re-attached to), and, with
// NoReconnect, once the provider has gone away. Call Next (which then does
// not block) to consume it. It stays the same descriptor across
// re-attachments. The descriptor belongs to the Watcher. It is made on the
// first call: watchers that only use Next pay no system call per event.
func (w *Watcher) Fd() (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return -1, fmt.Errorf("watcher: %w", ErrProviderGone)
	}
	if w.efd == nil {
		efd, err := newEventFD()
		if err != nil {
			return -1, err
		}
		w.efd = efd
		gone := false
		if w.cfg.noReconnect {
			select {
			case <-w.ctl.done:
				gone = true
			default:
			}
		}
		if gone || w.restarted || w.latest > w.seen {
			w.efd.signal()
		}
	}
	return w.efd.(*eventFD).fd, nil
}

// eventFD is an eventfd that a Watcher makes readable for event loops.
type eventFD struct{ fd int }

func newEventFD() (*eventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("creating watcher eventfd: %w", err)
	}
	return &eventFD{fd}, nil
}

var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

func (e *eventFD) signal() {
	if e.fd >= 0 {
		_, _ = unix.Write(e.fd, one)
	}
}

func (e *eventFD) drain() {
	if e.fd >= 0 {
		var b [8]byte
		_, _ = unix.Read(e.fd, b[:])
	}
}

func (e *eventFD) close() error {
	if e.fd < 0 {
		return nil
	}
	err := unix.Close(e.fd)
	e.fd = -1
	return err
}
