package provider

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sock is a client's socket. It is not in Go's poller: its reactor's epoll
// set (serve_linux.go) is the only one that watches it, for input only, so
// that neither side's traffic costs a wakeup of a poller that has nothing
// to do with it. Every use of the descriptor holds mu for reading (Control);
// close holds it for writing, so a descriptor is never used once closed, or
// after its number went to another file.
type sock struct {
	mu sync.RWMutex
	fd int // -1 once closed
}

func newSock(fd int) *sock { return &sock{fd: fd} }

// SyscallConn makes a sock a syscall.Conn, for peerCred and readProc.
func (s *sock) SyscallConn() (syscall.RawConn, error) { return s, nil }

// Control runs f on the descriptor, or fails with net.ErrClosed.
func (s *sock) Control(f func(fd uintptr)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	f(uintptr(s.fd))
	return nil
}

// Read and Write complete syscall.RawConn; they do not wait (the socket is
// in no poller): f runs once.
func (s *sock) Read(f func(fd uintptr) bool) error {
	return s.Control(func(fd uintptr) { f(fd) })
}

func (s *sock) Write(f func(fd uintptr) bool) error {
	return s.Control(func(fd uintptr) { f(fd) })
}

// close closes the descriptor; later uses fail.
func (s *sock) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// shutdown shuts the connection down in both directions: the peer reads
// EOF, its reactor reads EOF (kill), and a write waiting for room fails.
func (s *sock) shutdown() {
	_ = s.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// write sends one message (with descriptors in oob, if any), waiting until
// deadline for room if the peer's queue is full. The wait happens in Go's
// poller, on a duplicate of the descriptor registered only for it, so that
// a waiting write holds no thread and no lock that close needs.
func (s *sock) write(msg, oob []byte, deadline time.Time) error {
	err := s.sendmsg(msg, oob)
	if !errors.Is(err, unix.EAGAIN) {
		return err
	}
	var dup int
	if cerr := s.Control(func(fd uintptr) { dup, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), "snapsafe-client") // non-blocking: in Go's poller
	defer f.Close()
	if err := f.SetWriteDeadline(deadline); err != nil {
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	werr := rc.Write(func(fd uintptr) bool {
		err = sendNow(int(fd), msg, oob)
		return !errors.Is(err, unix.EAGAIN)
	})
	if werr != nil {
		return werr // the deadline passed
	}
	return err
}

// sendmsg sends one message without waiting: EAGAIN when the peer's queue
// is full.
func (s *sock) sendmsg(msg, oob []byte) error {
	var err error
	if cerr := s.Control(func(fd uintptr) {
		for {
			err = sendNow(int(fd), msg, oob)
			if !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}); cerr != nil {
		return cerr
	}
	if errors.Is(err, unix.ENOBUFS) {
		return unix.EAGAIN
	}
	return err
}

// sendNow sends one message on fd without waiting (EAGAIN when the peer's
// queue is full) and without SIGPIPE. Without descriptors it is send(2),
// a little cheaper than sendmsg(2), which copies a msghdr in.
func sendNow(fd int, msg, oob []byte) error {
	if oob == nil {
		return unix.Sendto(fd, msg, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
	}
	return unix.Sendmsg(fd, msg, oob, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
}
