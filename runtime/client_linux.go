package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// Attach maps the generation page of the provider on dir (ClientDir() when
// empty) and connects to its control socket. It fails with an error
// matching ErrNoProvider when no provider runs there.
func Attach(dir string) (*Client, error) {
	if dir == "" {
		dir = ClientDir()
	}
	ctl, err := dialCtl(dir, nil, nil)
	if err != nil {
		return nil, err
	}
	page, err := shm.MapPage(filepath.Join(dir, PageFile))
	if err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	return &Client{dir: dir, page: page, ctl: ctl}, nil
}

// Watch registers a new watcher on its own connection. The watcher is up to
// date with the generation current when Watch returns.
func (c *Client) Watch(ctx context.Context) (*Watcher, error) {
	w := &Watcher{wake: make(chan struct{}, 1), efd: eventFD{-1}}
	var err error
	w.ctl, err = dialCtl(c.dir, w.announce, w.gone)
	if err != nil {
		return nil, err
	}
	r, err := w.ctl.call(ctx, msgWatch, nil)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("watch: %w", err)
	}
	w.mu.Lock()
	w.seen = r.m.u64()
	w.latest = max(w.latest, w.seen)
	w.mu.Unlock()
	return w, nil
}

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
	m    message
	file *os.File // a descriptor passed with the reply, if any
}

func dialCtl(dir string, onEvent func(uint64), onClose func()) (*ctlConn, error) {
	path := filepath.Join(dir, SocketFile)
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("%w on %s: start snapsafed, or point --dir / SNAPSAFE_DIR at its state directory", ErrNoProvider, dir)
		}
		return nil, fmt.Errorf("connecting to %s: %w", path, err)
	}
	c := &ctlConn{
		uc:      uc,
		onEvent: onEvent,
		onClose: onClose,
		pending: make(map[uint32]chan reply),
		done:    make(chan struct{}),
	}
	go c.read()
	return c, nil
}

func (c *ctlConn) read() {
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			c.fail(ErrProviderGone)
			return
		}
		file := takeFile(oob[:oobn])
		m, err := decode(buf[:n])
		if err == nil && flags&unix.MSG_TRUNC != 0 {
			err = errMalformed
		}
		if err != nil {
			if file != nil {
				file.Close()
			}
			c.fail(fmt.Errorf("%w: the provider sent an invalid message: %v", ErrProviderGone, err))
			return
		}
		if m.typ == msgGeneration {
			if c.onEvent != nil {
				c.onEvent(m.u64())
			}
			continue
		}
		// Copy the payload: buf is reused for the next message.
		m.payload = append([]byte(nil), m.payload...)
		c.mu.Lock()
		ch := c.pending[m.id]
		delete(c.pending, m.id)
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

// takeFile returns the first descriptor passed in oob and closes any others.
func takeFile(oob []byte) *os.File {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var f *os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if f == nil {
				unix.CloseOnExec(fd)
				f = os.NewFile(uintptr(fd), "snapsafe-fd")
			} else {
				unix.Close(fd)
			}
		}
	}
	return f
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
func (c *ctlConn) start(t msgType, payload []byte) (uint32, chan reply, error) {
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
	if _, err := c.uc.Write(encode(t, id, payload)); err != nil {
		c.forget(id)
		return 0, nil, fmt.Errorf("%w: %v", ErrProviderGone, err)
	}
	return id, ch, nil
}

func (c *ctlConn) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// call sends a request and waits for its reply. A msgError reply is returned
// as a *RemoteError.
func (c *ctlConn) call(ctx context.Context, t msgType, payload []byte) (reply, error) {
	id, ch, err := c.start(t, payload)
	if err != nil {
		return reply{}, err
	}
	select {
	case r := <-ch:
		return r, checkReply(r, t|replyBit)
	case <-c.done:
		return reply{}, c.error()
	case <-ctx.Done():
		c.forget(id)
		return reply{}, ctx.Err()
	}
}

func checkReply(r reply, want msgType) error {
	switch r.m.typ {
	case want:
		return nil
	case msgError:
		return decodeError(r.m)
	}
	if r.file != nil {
		r.file.Close()
	}
	return fmt.Errorf("%w: reply of type %#x, want %#x", ErrProviderGone, uint8(r.m.typ), uint8(want))
}

// cancelGrace bounds how long a cancelled wait waits for the provider to
// confirm the cancellation, so that the connection can be reused.
const cancelGrace = time.Second

// wait runs one orchestrator wait on this connection.
func (c *ctlConn) wait(ctx context.Context, seen uint64) error {
	id, ch, err := c.start(msgWait, u64(seen))
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	var r reply
	select {
	case r = <-ch:
	case <-c.done:
		return fmt.Errorf("wait: %w", c.error())
	case <-ctx.Done():
		if _, err := c.uc.Write(encode(msgCancel, 0, nil)); err == nil {
			select {
			case r = <-ch:
			case <-c.done:
			case <-time.After(cancelGrace):
				c.forget(id)
			}
		}
		if r.m.typ == msgWaitDone {
			if res, _ := decodeWaitDone(r.m); res == waitOK {
				return nil // the wait ended just as ctx did
			}
		}
		return ctx.Err()
	}
	if err := checkReply(r, msgWaitDone); err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	switch res, gen := decodeWaitDone(r.m); res {
	case waitOK:
		return nil
	case waitNewGeneration:
		return fmt.Errorf("%w (generation %d): handle it, then wait again", ErrNewGeneration, gen)
	default:
		return fmt.Errorf("wait: cancelled")
	}
}

// eventFD is an eventfd that a Watcher makes readable for event loops.
type eventFD struct{ fd int }

func newEventFD() (eventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return eventFD{-1}, fmt.Errorf("creating watcher eventfd: %w", err)
	}
	return eventFD{fd}, nil
}

var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

func (e *eventFD) signal() {
	if e.fd >= 0 {
		_, _ = unix.Write(e.fd, one)
	}
}

func (e *eventFD) drain() {
	if e.fd >= 0 {
		var b [8]byte
		_, _ = unix.Read(e.fd, b[:])
	}
}

func (e *eventFD) close() error {
	if e.fd < 0 {
		return nil
	}
	err := unix.Close(e.fd)
	e.fd = -1
	return err
}
