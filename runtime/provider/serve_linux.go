package provider

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"golang.org/x/sys/unix"
)

// accept serves connections until the listener is closed.
func (p *Provider) accept() error {
	for {
		conn, err := p.ln.AcceptUnix()
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
		c, err := p.admit(conn)
		if err != nil {
			// Refused: the peer gets the reason as an error with id 0, its
			// first and only message (docs/ABI.md §3.7).
			_, _ = conn.Write(wire.EncodeError(0, wire.CodeLimit, err.Error()))
			conn.Close()
			continue
		}
		go p.serve(c)
	}
}

// admit reads the peer's credentials and registers it within the bounds.
// A refusal is counted, and logged at most as often as the refusal log
// allows, so that a client reconnecting in a loop cannot flood the log.
func (p *Provider) admit(conn *net.UnixConn) (*peer, error) {
	uid, gid, pid := uint32(unknownUID), uint32(unknownUID), int32(0)
	cred, err := peerCred(conn)
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
		conn:     conn,
		uid:      uid,
		gid:      gid,
		pid:      pid,
		reserved: p.bounds.mayReserve(uid),
		evSlot:   -1,
		evIndex:  -1,
	}
	c.raw, _ = conn.SyscallConn() // fails only for a nil conn
	p.conns[c] = struct{}{}
	p.ledger.addConn(c)
	p.wg.Add(1) // for serve; under mu, so never after shutdown's Wait began
	p.mu.Unlock()
	// Privileges are read only for admitted peers (a refused one costs no
	// /proc read), before serve starts: nothing else reads mayBmp.
	c.mayBmp = p.mayBump(conn, cred)
	return c, nil
}

// maxRequest is the longest request: a watch with a label.
const maxRequest = wire.HeaderSize + 8 + wire.MaxLabel

// serve reads and handles c's requests until it goes away or misbehaves.
//
// Its read buffer is small, more than maxRequest but far less than
// wire.MaxMessage, so that a serve goroutine, which spends its life blocked
// in that read, keeps a small stack: a longer datagram arrives truncated
// (MSG_TRUNC) and is refused as its header says (wire.Classify; any
// request that long is malformed). It has no room for control messages
// either: descriptors a client sends are discarded by the kernel, never
// received.
func (p *Provider) serve(c *peer) {
	defer p.wg.Done()
	defer p.drop(c)
	var buf [128]byte
	for {
		n, _, flags, _, err := c.conn.ReadMsgUnix(buf[:], nil)
		if err != nil || n == 0 {
			return // EOF, or the connection was closed by drop
		}
		if flags&unix.MSG_TRUNC != 0 {
			code, id := wire.Classify(buf[:n])
			p.refuse(c, id, code, truncated(code, buf[:n]))
			return
		}
		m, err := wire.Decode(buf[:n])
		if err != nil {
			code, id := wire.Classify(buf[:n])
			p.refuse(c, id, code, err.Error())
			return
		}
		// A request may mean the peer has read what was queued for it: a
		// watcher's deferred generation event can go now (notify.go). Before
		// the reply, which would be queued unread in its way.
		p.tryEvent(c, true)
		if !p.handle(c, m) {
			return
		}
	}
}

// truncated is the refusal's text for a datagram longer than serve's buffer
// (b is its beginning), refused with code.
func truncated(code wire.Code, b []byte) string {
	switch code {
	case wire.CodeVersion:
		return fmt.Sprintf("%v: protocol version %d, want %d", wire.ErrMalformed, b[0], wire.Version)
	case wire.CodeUnknown:
		return fmt.Sprintf("message type %#x is not a request", b[1])
	}
	return fmt.Sprintf("%v: longer than %d bytes, the longest request", wire.ErrMalformed, maxRequest)
}
