package provider

import (
	"errors"

	"golang.org/x/sys/unix"
)

// sendEvent sends c the generation event msg if, and only if, c has read
// everything the provider sent it before, and never blocks. The caller
// holds c.wmu.
//
// SIOCOUTQ on a Unix socket is the bytes of the messages this end sent that
// the peer has not read yet (the kernel charges them to the sender until
// the receiver takes them off its queue; a peek does not take them). So an
// event goes out only onto an empty queue, which is what keeps at most one
// unread event queued per watcher. The send itself is MSG_DONTWAIT: if the
// queue filled up meanwhile (a reply got there first), the event is
// deferred, not waited for. Under wmu, so no other write of the provider's
// interleaves.
func (p *Provider) sendEvent(c *peer, msg []byte) eventResult {
	res := eventFailed
	cerr := c.sock.Control(func(fd uintptr) {
		// Should the kernel refuse the ioctl, the event is sent anyway:
		// still without blocking or a disconnect, only not coalesced.
		if unread, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil && unread > 0 {
			res = eventDeferred
			return
		}
		switch err := sendNow(int(fd), msg, nil); {
		case err == nil:
			res = eventSent
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOBUFS):
			res = eventDeferred
		}
	})
	if cerr != nil || res == eventFailed {
		p.kill(c) // its reactor drops it
		return eventFailed
	}
	return res
}
