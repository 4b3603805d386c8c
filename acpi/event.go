package acpi

import (
	"context"
	"errors"
	"time"

	"github.com/snapsafe/snapsafe/internal/errs"
)

// The signals through which the kernel reports a restore. They name the
// follower that saw an Event.
const (
	// SignalKmsg is the vmgenid driver's facility-0 record in the kernel
	// log (Linux 5.18 and later), followed by [KmsgFollower].
	SignalKmsg = "kmsg"
	// SignalUevent is a "change" uevent on the VMGENID device (Linux 6.8,
	// or a synthetic one written by root), followed by [UeventFollower].
	SignalUevent = "uevent"
)

// Event is one restore seen by a follower, or a warning that one may have
// been missed.
type Event struct {
	// Signal is SignalKmsg or SignalUevent.
	Signal string
	// Lost is true when the kernel discarded messages before the follower
	// read them (the log ring buffer or the socket buffer overran), so a
	// restore may have gone unseen. The caller should treat it as a restore.
	Lost bool
	// Seq is the kernel's sequence number of the record or uevent (0 when
	// Lost).
	Seq uint64
	// Time is when the follower saw the event.
	Time time.Time
	// Detail is a short human-readable description for logs.
	Detail string
}

// ErrNotSupported is returned (wrapped) by the functions of this package on
// operating systems other than Linux.
var ErrNotSupported = errs.ErrNotSupported

// ErrMalformed is wrapped by the errors of ParseKmsg and ParseUevent.
var ErrMalformed = errors.New("malformed")

// errLost is returned by conn.recv when the kernel discarded messages before
// they were read: EPIPE from /dev/kmsg, ENOBUFS from a netlink socket.
var errLost = errors.New("kernel discarded messages before they were read")

// conn is the kernel descriptor a follower reads: /dev/kmsg or a uevent
// socket. The followers' loops use it through this interface so that they
// are written once, for both, and can be tested with a fake.
type conn interface {
	// recv blocks until one record or message is read into b and returns
	// its length and the sender's netlink port id (0 for the kernel, and
	// always 0 for /dev/kmsg). It returns errLost (wrapped) when the
	// kernel discarded messages, and an error once the read deadline has
	// passed.
	recv(b []byte) (n int, sender uint32, err error)
	// setReadDeadline makes blocked and later recv calls fail once t has
	// passed; the zero time means no deadline.
	setReadDeadline(t time.Time) error
	// close releases the descriptor; calls after the first return nil.
	close() error
}

// follow passes every message c receives to handle, and calls lost when the
// kernel discarded messages, until ctx is done (then it returns nil) or c
// fails. It wakes a blocked recv by moving the read deadline into the past
// when ctx is done, so it returns promptly and leaves no goroutine behind.
func follow(ctx context.Context, c conn, bufSize int, handle func(msg []byte, sender uint32), lost func()) error {
	// A previous Run may have left an expired deadline behind.
	if err := c.setReadDeadline(time.Time{}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		// An error means c was closed, and then recv fails anyway.
		_ = c.setReadDeadline(time.Unix(1, 0))
	})
	defer stop()
	buf := make([]byte, bufSize)
	for {
		n, sender, err := c.recv(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, errLost) {
				lost()
				continue
			}
			return err
		}
		handle(buf[:n], sender)
	}
}
