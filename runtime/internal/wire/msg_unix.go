//go:build unix

package wire

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// OOBSpace is the control-message buffer that carries up to n descriptors.
func OOBSpace(n int) int { return unix.CmsgSpace(4 * n) }

// Read reads one datagram from uc into buf and decodes it. The first
// descriptor passed with it is returned in f, which the caller then owns
// (any others are closed); on a decoding error none is returned. A datagram
// longer than buf is an error wrapping ErrMalformed. n is the datagram's
// length, 0 at EOF.
func Read(uc *net.UnixConn, buf, oob []byte) (m Message, f *os.File, n int, err error) {
	n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil || n == 0 {
		return Message{}, nil, n, err
	}
	if oobn > 0 {
		f = TakeFile(oob[:oobn])
	}
	if flags&unix.MSG_TRUNC != 0 {
		if f != nil {
			f.Close()
		}
		return Message{}, nil, n, fmt.Errorf("%w: message longer than %d bytes", ErrMalformed, len(buf))
	}
	m, err = Decode(buf[:n])
	if err != nil && f != nil {
		f.Close()
		f = nil
	}
	return m, f, n, err
}

// TakeFile returns the first descriptor passed in a control message (marked
// close-on-exec) and closes any others, so that a peer can never leak
// descriptors into the receiver.
func TakeFile(oob []byte) *os.File {
	var f *os.File
	forEachRight(oob, func(fd int) {
		if f == nil {
			unix.CloseOnExec(fd)
			f = os.NewFile(uintptr(fd), "snapsafe-fd")
		} else {
			unix.Close(fd)
		}
	})
	return f
}

// Rights builds the control message that passes f's descriptor.
func Rights(f *os.File) []byte { return unix.UnixRights(int(f.Fd())) }

func forEachRight(oob []byte, f func(fd int)) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			f(fd)
		}
	}
}
