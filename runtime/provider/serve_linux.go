package provider

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"golang.org/x/sys/unix"
)

// accept serves connections until the listener is closed.
func (p *Provider) accept() error {
	for {
		fd, err := p.acceptFD()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				// Out of descriptors: back off rather than spin or die.
				p.log.Warn("accepting a client", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accepting clients: %w", err)
		}
		s := newSock(fd)
		c, err := p.admit(s)
		if err != nil {
			// Refused: the peer gets the reason as an error with id 0, its
			// first and only message (docs/ABI.md §3.7), onto its empty queue.
			_ = s.sendmsg(wire.EncodeError(0, wire.CodeLimit, err.Error()), nil)
			s.close()
			continue
		}
		if !p.srv.add(c) {
			p.drop(c) // shutting down
		}
	}
}

// acceptFD accepts a connection and returns its descriptor, taken out of
// Go's poller (a sock is watched by its reactor alone): the accepted
// connection's descriptor is duplicated and the connection closed. The
// duplicate shares its open file, so it stays non-blocking.
func (p *Provider) acceptFD() (int, error) {
	conn, err := p.ln.AcceptUnix()
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	rc, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return -1, cerr
	}
	return fd, err
}

// admit reads the peer's credentials and registers it within the bounds.
// A refusal is counted, and logged at most as often as the refusal log
// allows, so that a client reconnecting in a loop cannot flood the log.
func (p *Provider) admit(s *sock) (*peer, error) {
	uid, gid, pid := uint32(unknownUID), uint32(unknownUID), int32(0)
	cred, err := peerCred(s)
	if err == nil {
		uid, gid, pid = cred.Uid, cred.Gid, cred.Pid
	}
	p.mu.Lock()
	switch {
	case err != nil:
	case p.closed:
		err = errors.New("the provider is shutting down: try again once it is back")
	default:
		err = p.admitLocked(uid)
	}
	if err != nil {
		logIt := p.noteRefusalLocked(uid)
		p.mu.Unlock()
		if logIt {
			p.log.Warn("refusing a client", "uid", uid, "pid", pid, "err", err,
				"note", "further refusals are summarised at most every "+p.refusalEvery().String())
		}
		return nil, err
	}
	c := &peer{
		sock:     s,
		uid:      uid,
		gid:      gid,
		pid:      pid,
		reserved: p.bounds.mayReserve(uid),
		evSlot:   -1,
		evIndex:  -1,
		slot:     -1,
	}
	p.conns[c] = struct{}{}
	p.ledger.addConn(c)
	p.mu.Unlock()
	// Privileges are read only for admitted peers (a refused one costs no
	// /proc read), before the peer is served: nothing else reads mayBmp.
	c.mayBmp = p.mayBump(s, cred)
	return c, nil
}

// maxRequest is the longest request: a watch with a label.
const maxRequest = wire.HeaderSize + 8 + wire.MaxLabel

// readBuf is a reactor's read buffer: more than maxRequest, far less than
// wire.MaxMessage. A longer datagram reads truncated, filling it, and is
// refused as its header says (wire.Classify; any request that long is
// malformed). A read has no room for control messages either: descriptors
// a client sends are discarded by the kernel, never received.
const readBuf = 128

// server reads and answers the clients' requests without a goroutine per
// client: each client's socket is in the epoll set of one of a few
// reactors, one goroutine each, which read a request when it arrives and
// answer it.
//
// A reactor answers an ack (the request every watcher sends after every
// bump) at once, if its reply can be written without waiting. Any other
// request, and a reply that would have to wait, goes to a goroutine of its
// own (handOff) while the reactor stops reading that client (its socket
// leaves the epoll set): so a client's requests are answered in order, one
// at a time, and nothing a client does — a bump's fsync, a reply it does
// not read for writeTimeout — holds up the reactor or other clients.
//
// A reactor learns that a client is gone by reading EOF; so a connection
// is never closed under a reactor but shut down (kill), which it then reads
// as EOF, and drops.
type server struct {
	reactors []*reactor
	next     atomic.Uint32 // the reactor of the next client

	// The epoll sets name each client by its slot here and the slot's
	// sequence number (so that an event that was fetched for a client that
	// has since gone never reaches the one that took its slot).
	mu    sync.RWMutex
	slots []*peer
	free  []int32
	seq   uint32
}

// reactor is one epoll set and the goroutine that serves it. The epoll
// descriptor itself waits in Go's poller, so an idle reactor holds no
// thread.
type reactor struct {
	ep   *os.File
	epfd int
	raw  syscall.RawConn
}

// startServer makes the reactors (one per CPU the runtime uses, at most 4)
// and starts their goroutines; stopServer ends them.
func (p *Provider) startServer() error {
	s := &server{}
	for range max(1, min(runtime.GOMAXPROCS(0), 4)) {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			s.close()
			return fmt.Errorf("serving clients: epoll: %w", err)
		}
		// Non-blocking, so that os.NewFile registers it with Go's poller.
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
			s.close()
			return fmt.Errorf("serving clients: epoll: %w", err)
		}
		r := &reactor{ep: os.NewFile(uintptr(epfd), "snapsafe-epoll"), epfd: epfd}
		s.reactors = append(s.reactors, r)
		if r.raw, err = r.ep.SyscallConn(); err != nil {
			s.close()
			return fmt.Errorf("serving clients: epoll: %w", err)
		}
	}
	p.srv = s
	p.wg.Add(len(s.reactors))
	for _, r := range s.reactors {
		go p.react(r)
	}
	return nil
}

// stopServer ends the reactors (they return once their epoll descriptor
// is closed).
func (p *Provider) stopServer() {
	if p.srv != nil {
		p.srv.close()
	}
}

func (s *server) close() {
	for _, r := range s.reactors {
		r.ep.Close()
	}
}

// add gives c a slot and puts it in a reactor's epoll set; false when the
// provider is shutting down.
func (s *server) add(c *peer) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	if c.dropped.Load() { // by shutdown, before unserve could find it here
		s.mu.Unlock()
		return false
	}
	if n := len(s.free); n > 0 {
		c.slot, s.free = s.free[n-1], s.free[:n-1]
		s.slots[c.slot] = c
	} else {
		c.slot = int32(len(s.slots))
		s.slots = append(s.slots, c)
	}
	s.seq++
	c.seq = s.seq
	c.r = s.reactors[s.next.Add(1)%uint32(len(s.reactors))]
	s.mu.Unlock() // the reactor finds c under mu: it sees all of this
	return s.resume(c)
}

// resume puts c (back) in its reactor's epoll set; false when c is gone.
// Under mu, so that it never adds c once unserve took it out.
func (s *server) resume(c *peer) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c.slot < 0 || s.slots[c.slot] != c {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: c.slot, Pad: int32(c.seq)}
	var err error
	if cerr := c.sock.Control(func(fd uintptr) { err = unix.EpollCtl(c.r.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); cerr != nil {
		return false
	}
	return err == nil
}

// pause takes c out of its reactor's epoll set.
func (s *server) pause(c *peer) {
	_ = c.sock.Control(func(fd uintptr) { _ = unix.EpollCtl(c.r.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
}

// unserve forgets c (drop, after it marked c dropped and before it closes
// c's connection).
func (p *Provider) unserve(c *peer) {
	s := p.srv
	if s == nil {
		return
	}
	s.mu.Lock()
	r := c.r
	if c.slot >= 0 && s.slots[c.slot] == c {
		s.slots[c.slot] = nil
		s.free = append(s.free, c.slot)
	}
	c.slot = -1
	s.mu.Unlock()
	if r != nil {
		s.pause(c)
	}
}

// kill disconnects c: its socket is shut down, which its reactor (or the
// goroutine that holds it: handOff) reads as EOF and drops it. Its
// descriptor is closed by drop, never under a reactor.
func (p *Provider) kill(c *peer) {
	c.killed.Store(true)
	c.sock.shutdown()
}

// react serves r's clients until r's epoll descriptor is closed.
func (p *Provider) react(r *reactor) {
	defer p.wg.Done()
	s := p.srv
	events := make([]unix.EpollEvent, 128)
	var ready []*peer
	var buf [readBuf]byte
	for {
		var k int
		var werr error
		err := r.raw.Read(func(fd uintptr) bool {
			k, werr = unix.EpollWait(int(fd), events, 0)
			if errors.Is(werr, unix.EINTR) {
				k, werr = 0, nil
				return true
			}
			return k > 0 || werr != nil // else wait in Go's poller
		})
		if err != nil || werr != nil {
			return // closed by stopServer
		}
		s.mu.RLock()
		for _, ev := range events[:k] {
			if i := int(ev.Fd); i >= 0 && i < len(s.slots) && s.slots[i] != nil && s.slots[i].seq == uint32(ev.Pad) {
				ready = append(ready, s.slots[i])
			}
		}
		s.mu.RUnlock()
		for _, c := range ready {
			p.serveOne(c, buf[:])
		}
		clear(ready)
		ready = ready[:0]
	}
}

// serveOne reads one request of c's and answers it, or has it answered
// (handOff). buf is the reactor's.
func (p *Provider) serveOne(c *peer, buf []byte) {
	if c.killed.Load() {
		p.drop(c)
		return
	}
	var n int
	var err error
	if cerr := c.sock.Control(func(fd uintptr) { n, err = unix.Read(int(fd), buf) }); cerr != nil {
		p.drop(c)
		return
	}
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		return
	case err != nil || n == 0:
		p.drop(c) // EOF, or the peer is gone
		return
	case n == len(buf):
		code, id := wire.Classify(buf[:n])
		text := truncated(code, buf[:n])
		p.handOff(c, func() bool { p.refuse(c, id, code, text); return false })
		return
	}
	m, err := wire.Decode(buf[:n])
	if err != nil {
		code, id := wire.Classify(buf[:n])
		text := err.Error()
		p.handOff(c, func() bool { p.refuse(c, id, code, text); return false })
		return
	}
	// A request may mean the peer has read what was queued for it: a
	// watcher's deferred generation event can go now (notify.go). Before
	// the reply, which would be queued unread in its way.
	p.tryEvent(c, true)
	if m.Type == wire.Ack {
		p.answerAck(c, m)
		return
	}
	m.Payload = slices.Clone(m.Payload) // buf is the reactor's
	p.handOff(c, func() bool { return p.handle(c, m) })
}

// answerAck answers an ack, the one request a reactor answers itself:
// written without waiting when it can be, else handed off.
func (p *Provider) answerAck(c *peer, m wire.Message) {
	var msg []byte
	if code, text := p.ack(c, m.U64()); code != 0 {
		msg = wire.EncodeError(m.ID, code, text)
	} else {
		msg = wire.Encode(wire.AckOK, m.ID, m.Payload)
	}
	if !p.trySend(c, msg) {
		p.handOff(c, func() bool { return p.send(c, msg, nil) })
	}
}

// trySend writes msg to c if it can without waiting, and reports whether
// it did (or c's connection failed, and was killed). False means nothing
// was written: another write is in progress, or c's queue is full.
func (p *Provider) trySend(c *peer, msg []byte) bool {
	if !c.wmu.TryLock() {
		return false
	}
	defer c.wmu.Unlock()
	switch err := c.sock.sendmsg(msg, nil); {
	case err == nil, errors.Is(err, net.ErrClosed): // closed: drop has it
		return true
	case errors.Is(err, unix.EAGAIN):
		return false
	}
	p.kill(c)
	return true
}

// handOff runs f, which answers a request of c's, in a goroutine of its
// own while c's reactor does not read c; then c is read again, unless f
// reported false (c misbehaved, or a write to it failed) or c is gone, and
// then it is dropped. Called by the reactors only, which count in wg, so
// its Add never follows shutdown's Wait.
func (p *Provider) handOff(c *peer, f func() bool) {
	p.srv.pause(c)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if f() && !c.killed.Load() && p.srv.resume(c) {
			return
		}
		p.drop(c)
	}()
}

// truncated is the refusal's text for a datagram that filled the read
// buffer (b), refused with code.
func truncated(code wire.Code, b []byte) string {
	switch code {
	case wire.CodeVersion:
		return fmt.Sprintf("%v: protocol version %d, want %d", wire.ErrMalformed, b[0], wire.Version)
	case wire.CodeUnknown:
		return fmt.Sprintf("message type %#x is not a request", b[1])
	}
	return fmt.Sprintf("%v: longer than %d bytes, the longest request", wire.ErrMalformed, maxRequest)
}
