package client

// The control connection: one SOCK_SEQPACKET connection to the provider,
// whose reader goroutine matches replies to calls and hands generation
// events to a watcher. It is portable Go; only Attach is Linux-only.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// ctlConn is one control connection: a reader goroutine matches replies to
// calls by request id and hands generation events to onEvent.
type ctlConn struct {
	uc      *net.UnixConn
	onEvent func(uint64)
	onClose func()

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan reply
	err     error
	done    chan struct{}
	once    sync.Once
}

type reply struct {
	m    wire.Message
	file *os.File // a descriptor passed with the reply, if any
}

// dialCtl connects to the provider on dir: statedir.Dial checks the
// directory, the socket and the provider's uid first.
func dialCtl(dir string, onEvent func(uint64), onClose func()) (*ctlConn, error) {
	uc, err := statedir.Dial(dir)
	if err != nil {
		return nil, dialError(dir, err)
	}
	return newCtlConn(uc, onEvent, onClose), nil
}

// dialError turns a missing directory or socket, or one nobody listens on,
// into ErrNoProvider.
func dialError(dir string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w on %s: start snapsafed, or point --dir / SNAPSAFE_DIR at its state directory", ErrNoProvider, dir)
	}
	return err
}

func newCtlConn(uc *net.UnixConn, onEvent func(uint64), onClose func()) *ctlConn {
	c := &ctlConn{
		uc:      uc,
		onEvent: onEvent,
		onClose: onClose,
		pending: make(map[uint32]chan reply),
		done:    make(chan struct{}),
	}
	go c.read()
	return c
}

func (c *ctlConn) read() {
	buf := make([]byte, wire.MaxMessage)
	oob := make([]byte, wire.OOBSpace(4))
	admitted := false // a reply arrived: the provider accepted this connection
	reset := false
	for {
		m, file, n, err := wire.Read(c.uc, buf, oob)
		if err != nil && errors.Is(err, syscall.ECONNRESET) && !reset {
			// The provider closed the connection before reading what we
			// sent (it refused us, or dropped us): the kernel reports that
			// once, and what the provider sent before closing is still
			// queued behind it.
			reset = true
			continue
		}
		if err == nil && n == 0 || err != nil && !errors.Is(err, wire.ErrMalformed) {
			c.fail(ErrProviderGone)
			return
		}
		if err != nil {
			c.fail(fmt.Errorf("%w: the provider sent an invalid message: %v", ErrProviderGone, err))
			return
		}
		if m.Type == wire.Generation {
			if file != nil {
				file.Close()
			}
			if c.onEvent != nil {
				c.onEvent(m.U64())
			}
			continue
		}
		if m.Type == wire.Error && m.ID == 0 {
			// Not a reply to a call (ids start at 1): the provider is
			// closing the connection. Before any reply, that is its
			// refusal to admit us, with the reason (docs/ABI.md §3.7).
			if file != nil {
				file.Close()
			}
			if admitted {
				c.fail(fmt.Errorf("%w: %w", ErrProviderGone, wire.DecodeError(m)))
			} else {
				c.fail(fmt.Errorf("%w: %w", ErrRefused, wire.DecodeError(m)))
			}
			return
		}
		admitted = true
		// Copy the payload: buf is reused for the next message.
		m.Payload = append([]byte(nil), m.Payload...)
		c.mu.Lock()
		ch := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ch == nil {
			// A late reply to a call whose context ended.
			if file != nil {
				file.Close()
			}
			continue
		}
		ch <- reply{m: m, file: file}
	}
}

// fail ends the connection with err; the first error wins.
func (c *ctlConn) fail(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		c.uc.Close()
		close(c.done)
		if c.onClose != nil {
			c.onClose()
		}
	})
}

func (c *ctlConn) error() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *ctlConn) close() { c.fail(fmt.Errorf("%w: closed by the client", ErrProviderGone)) }

// start registers a call and sends its request.
func (c *ctlConn) start(t wire.Type, payload []byte) (uint32, chan reply, error) {
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return 0, nil, c.err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	if _, err := c.uc.Write(wire.Encode(t, id, payload)); err != nil {
		c.forget(id)
		return 0, nil, c.writeFailed(err)
	}
	return id, ch, nil
}

// writeGrace bounds how long a failed write waits for the reader to say why
// the connection ended.
const writeGrace = time.Second

// writeFailed returns the error for a request that could not be sent. A
// provider that refused the connection has closed it, so the write fails
// (EPIPE) while the refusal is still queued for the reader: wait for the
// reader to take it, so that the caller learns why.
func (c *ctlConn) writeFailed(err error) error {
	t := time.NewTimer(writeGrace)
	defer t.Stop()
	select {
	case <-c.done:
		return c.error()
	case <-t.C:
	}
	return fmt.Errorf("%w: %v", ErrProviderGone, err)
}

func (c *ctlConn) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// call sends a request and waits for its reply. A msgError reply is returned
// as a *RemoteError.
func (c *ctlConn) call(ctx context.Context, t wire.Type, payload []byte) (reply, error) {
	id, ch, err := c.start(t, payload)
	if err != nil {
		return reply{}, err
	}
	select {
	case r := <-ch:
		return r, checkReply(r, t|wire.ReplyBit)
	case <-c.done:
		return reply{}, c.error()
	case <-ctx.Done():
		c.forget(id)
		return reply{}, ctx.Err()
	}
}

func checkReply(r reply, want wire.Type) error {
	switch r.m.Type {
	case want:
		return nil
	case wire.Error:
		return wire.DecodeError(r.m)
	}
	if r.file != nil {
		r.file.Close()
	}
	return fmt.Errorf("%w: reply of type %#x, want %#x", ErrProviderGone, uint8(r.m.Type), uint8(want))
}

// cancelGrace bounds how long a cancelled wait waits for the provider to
// confirm the cancellation, so that the connection can be reused.
const cancelGrace = time.Second

// wait runs one orchestrator wait on this connection.
func (c *ctlConn) wait(ctx context.Context, seen uint64) error {
	id, ch, err := c.start(wire.Wait, wire.U64(seen))
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	var r reply
	select {
	case r = <-ch:
	case <-c.done:
		return fmt.Errorf("wait: %w", c.error())
	case <-ctx.Done():
		if _, err := c.uc.Write(wire.Encode(wire.Cancel, 0, nil)); err == nil {
			select {
			case r = <-ch:
			case <-c.done:
			case <-time.After(cancelGrace):
				c.forget(id)
			}
		}
		if r.m.Type == wire.WaitDone {
			if res, _ := wire.DecodeWaitDone(r.m); res == wire.WaitOK {
				return nil // the wait ended just as ctx did
			}
		}
		return ctx.Err()
	}
	if err := checkReply(r, wire.WaitDone); err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	switch res, gen := wire.DecodeWaitDone(r.m); res {
	case wire.WaitOK:
		return nil
	case wire.WaitNewGeneration:
		return fmt.Errorf("%w (generation %d): handle it, then wait again", ErrNewGeneration, gen)
	default:
		return fmt.Errorf("wait: cancelled")
	}
}
