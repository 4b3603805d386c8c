package acpi

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// openKmsg opens /dev/kmsg for following: non-blocking, positioned after the
// last record so that only records logged from now on are read.
func openKmsg() (conn, error) {
	fd, err := unix.Open(kmsgPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, kmsgOpenError(err)
	}
	// SEEK_END moves this reader past the newest record; the offset it
	// returns means nothing for /dev/kmsg.
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("seeking to the end: %w", err)
	}
	return newFileConn(fd, kmsgPath, readKmsg, unix.EPIPE)
}

// kmsgOpenError adds what to do to a permission error.
func kmsgOpenError(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (reading the kernel log needs root or CAP_SYSLOG while the sysctl kernel.dmesg_restrict is 1)", err)
	}
	return err
}

// readKmsg reads one record: each read(2) of /dev/kmsg returns exactly one.
// It fails with EPIPE when records this reader had not read yet were
// overwritten; the kernel then moves the reader to the oldest record left.
func readKmsg(fd int, b []byte) (int, uint32, error) {
	n, err := unix.Read(fd, b)
	if err != nil {
		return 0, 0, err
	}
	return n, 0, nil
}

// countKmsgHistory counts the vmgenid driver's fork records (IsRestore) in
// the kernel log, from the oldest one still held.
func countKmsgHistory() (int, error) {
	fd, err := unix.Open(kmsgPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", kmsgPath, kmsgOpenError(err))
	}
	defer unix.Close(fd)
	buf := make([]byte, kmsgMaxRecord)
	count := 0
	for {
		n, _, err := readKmsg(fd, buf)
		switch {
		case err == unix.EAGAIN:
			// Non-blocking: no record left.
			return count, nil
		case err == unix.EPIPE || err == unix.EINTR:
			// Records were overwritten while we read; carry on from
			// the oldest one left.
			continue
		case err != nil:
			return count, fmt.Errorf("reading %s: %w", kmsgPath, err)
		}
		if r, err := ParseKmsg(buf[:n]); err == nil && r.IsRestore() {
			count++
		}
	}
}
