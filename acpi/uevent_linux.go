package acpi

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ueventGroupKernel is the netlink multicast group on which the kernel
// broadcasts uevents. (udevd re-broadcasts processed events on group 2.)
const ueventGroupKernel = 1

// openUevent opens a non-blocking NETLINK_KOBJECT_UEVENT socket bound to the
// kernel's group, with a receive buffer of rcvbuf bytes.
func openUevent(rcvbuf int) (conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("creating socket: %w", err)
	}
	if err := setRcvbuf(fd, rcvbuf); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Port id 0 asks the kernel to pick a unique one.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: ueventGroupKernel}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding to the kernel uevent group: %w", err)
	}
	return newFileConn(fd, "uevent socket", recvUevent, unix.ENOBUFS)
}

// setRcvbuf sets the socket's receive buffer. SO_RCVBUFFORCE (needs
// CAP_NET_ADMIN) may exceed the sysctl net.core.rmem_max; without the
// capability SO_RCVBUF gets as much as rmem_max allows.
func setRcvbuf(fd, size int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	if errors.Is(err, unix.EPERM) {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
	if err != nil {
		return fmt.Errorf("setting the receive buffer to %d bytes: %w", size, err)
	}
	return nil
}

// recvUevent receives one message and the netlink port id of its sender. It
// fails with ENOBUFS when messages were dropped because the receive buffer
// was full; the socket stays usable.
func recvUevent(fd int, b []byte) (int, uint32, error) {
	n, from, err := unix.Recvfrom(fd, b, 0)
	if err != nil {
		return 0, 0, err
	}
	sa, ok := from.(*unix.SockaddrNetlink)
	if !ok {
		return 0, 0, fmt.Errorf("message from a %T address, not netlink", from)
	}
	return n, sa.Pid, nil
}

// checkUevent reports whether a uevent socket can be opened here.
func checkUevent() error {
	c, err := openUevent(ueventRcvbuf)
	if err != nil {
		return err
	}
	return c.close()
}
