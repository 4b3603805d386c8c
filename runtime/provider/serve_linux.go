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
			p.log.Warn("refusing a client", "err", err)
			_, _ = conn.Write(wire.EncodeError(0, wire.CodeLimit, err.Error()))
			conn.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// admit reads the peer's credentials and registers it.
func (p *Provider) admit(conn *net.UnixConn) (*peer, error) {
	cred, err := peerCred(conn)
	if err != nil {
		return nil, err
	}
	c := &peer{
		conn:   conn,
		uid:    cred.Uid,
		pid:    cred.Pid,
		mayBmp: p.mayBump(conn, cred),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("provider is shutting down")
	}
	if len(p.conns) >= MaxConns {
		return nil, fmt.Errorf("too many clients (at most %d)", MaxConns)
	}
	p.conns[c] = struct{}{}
	return c, nil
}

// serve reads and handles c's requests until it goes away or misbehaves.
func (p *Provider) serve(c *peer) {
	defer p.wg.Done()
	defer p.drop(c)
	buf := make([]byte, wire.MaxMessage)
	oob := make([]byte, wire.OOBSpace(16))
	for {
		m, f, n, err := wire.Read(c.conn, buf, oob)
		if f != nil {
			f.Close() // clients never send descriptors
		}
		if err == nil && n == 0 || err != nil && !errors.Is(err, wire.ErrMalformed) {
			return // EOF, or the connection was closed by drop
		}
		if err != nil {
			p.refuse(c, m.ID, wire.Classify(buf[:n]), err.Error())
			return
		}
		// A request may mean the peer has read what was queued for it: a
		// watcher's deferred generation event can go now (notifier).
		select {
		case c.notify <- struct{}{}:
		default:
		}
		if !p.handle(c, m) {
			return
		}
	}
}
