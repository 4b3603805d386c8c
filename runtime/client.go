package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/shm"
)

// Client is an attachment to a running provider: a read-only mapping of its
// generation page and a control connection. Attaching does not make the
// client a watcher: probe-only users never hold up an orchestrator wait.
// A Client is safe for concurrent use.
type Client struct {
	dir    string
	page   *shm.Page
	ctl    *ctlConn
	waitMu sync.Mutex // one orchestrator wait at a time per connection
}

// Dir returns the state directory the client is attached to.
func (c *Client) Dir() string { return c.dir }

// Generation returns the current generation: one atomic load from the
// mapped page, no system call.
func (c *Client) Generation() uint64 { return c.page.Generation() }

// Page returns the mapped generation page. It stays valid until Close.
func (c *Client) Page() *shm.Page { return c.page }

// Snapshot returns a consistent copy of every field of the page.
func (c *Client) Snapshot() (shm.Snapshot, error) { return c.page.Snapshot() }

// Done is closed when the connection to the provider is lost: the provider
// stopped or died. The page then no longer changes, and wipe regions are no
// longer wiped; Err says why.
func (c *Client) Done() <-chan struct{} { return c.ctl.done }

// Err returns why the connection ended, once Done is closed.
func (c *Client) Err() error { return c.ctl.error() }

// Status asks the provider for its state and counters.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	r, err := c.ctl.call(ctx, msgStatus, nil)
	if err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	if err := json.Unmarshal(r.m.payload, &s); err != nil {
		return s, fmt.Errorf("status: decoding the provider's reply: %w", err)
	}
	return s, nil
}

// Bump forces a new generation max(min, current+1) and returns it. It needs
// privilege (root, the provider's user, CAP_CHECKPOINT_RESTORE or the
// provider's bump group); otherwise the error matches ErrNotPermitted.
func (c *Client) Bump(ctx context.Context, min uint64) (uint64, error) {
	r, err := c.ctl.call(ctx, msgBump, u64(min))
	if err != nil {
		return 0, fmt.Errorf("bump: %w", err)
	}
	return r.m.u64(), nil
}

// Wait is the orchestrator wait: it returns nil once no watcher is
// outdated. It returns an error matching ErrNewGeneration if the generation
// moves past the one the page showed when Wait was called (the caller must
// handle the new generation and wait again), and ctx's error when ctx ends
// first.
func (c *Client) Wait(ctx context.Context) error {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	return c.ctl.wait(ctx, c.Generation())
}

// Region asks the provider for a wipe-on-restore region of at least size
// bytes (at most shm.MaxRegionSize), which the provider zeroes on every
// bump for as long as this client stays connected. See docs/ABI.md for the
// protocol a client must follow before it stores secrets in it.
func (c *Client) Region(ctx context.Context, size int) (*shm.Region, error) {
	if size <= 0 || size > shm.MaxRegionSize {
		return nil, fmt.Errorf("wipe region of %d bytes: ask for 1 to %d bytes", size, shm.MaxRegionSize)
	}
	r, err := c.ctl.call(ctx, msgRegion, u32(uint32(size)))
	if err != nil {
		return nil, fmt.Errorf("wipe region: %w", err)
	}
	if r.file == nil {
		return nil, fmt.Errorf("wipe region: the provider sent no descriptor")
	}
	reg, err := shm.MapRegion(r.file)
	if err != nil {
		r.file.Close()
		return nil, err
	}
	return reg, nil
}

// VMClock asks the provider for its VMClock device and maps it read-only,
// so that a hot path can compare the hypervisor's vm_generation_counter
// itself: it changes before the guest resumes, which closes the window
// between a restore and the provider's bump. It fails with an error
// matching ErrUnavailable when the provider's backend is not vmclock.
func (c *Client) VMClock(ctx context.Context) (*vmclock.VMClock, error) {
	r, err := c.ctl.call(ctx, msgVMClock, nil)
	if err != nil {
		return nil, fmt.Errorf("vmclock: %w", err)
	}
	if r.file == nil {
		return nil, fmt.Errorf("vmclock: the provider sent no descriptor")
	}
	vc, err := vmclock.MapFile(r.file)
	if err != nil {
		r.file.Close()
		return nil, fmt.Errorf("vmclock: %w", err)
	}
	return vc, nil
}

// Close detaches from the provider. It is idempotent.
func (c *Client) Close() error {
	c.ctl.close()
	return c.page.Close()
}

// Watcher is a tracked client: after every bump it is outdated until it
// acknowledges the new generation with Ack, and orchestrator waits wait for
// it. It stops counting when closed or when its process dies.
type Watcher struct {
	ctl    *ctlConn
	waitMu sync.Mutex

	mu     sync.Mutex
	seen   uint64 // the generation Next last returned (or the one at Watch)
	latest uint64 // the newest generation the provider announced
	wake   chan struct{}
	efd    eventFD // made by Fd; fd -1 until then
	closed bool
}

// Generation returns the newest generation the provider announced.
func (w *Watcher) Generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// Next blocks until a generation newer than the last one it returned (or
// than the one current at Watch) is announced, and returns it. Several
// bumps in a row may be returned as one: only the newest matters. It
// returns an error matching ErrProviderGone when the provider goes away.
func (w *Watcher) Next(ctx context.Context) (uint64, error) {
	for {
		w.mu.Lock()
		if w.latest > w.seen {
			w.seen = w.latest
			w.efd.drain()
			w.mu.Unlock()
			return w.seen, nil
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-w.ctl.done:
			return 0, w.ctl.error()
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Fd returns a descriptor for event loops (poll, epoll): it is readable
// while a generation newer than the last one Next returned is pending, or
// once the provider has gone away. Call Next (which then does not block) to
// consume it. The descriptor belongs to the Watcher. It is made on the
// first call: watchers that only use Next pay no system call per event.
func (w *Watcher) Fd() (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return -1, fmt.Errorf("watcher: %w", ErrProviderGone)
	}
	if w.efd.fd < 0 {
		efd, err := newEventFD()
		if err != nil {
			return -1, err
		}
		w.efd = efd
		select {
		case <-w.ctl.done:
			w.efd.signal()
		default:
			if w.latest > w.seen {
				w.efd.signal()
			}
		}
	}
	return w.efd.fd, nil
}

// Ack acknowledges gen, which must be the current generation; any other
// value is refused with an error matching ErrBadAck and changes nothing.
func (w *Watcher) Ack(ctx context.Context, gen uint64) error {
	if _, err := w.ctl.call(ctx, msgAck, u64(gen)); err != nil {
		return fmt.Errorf("ack of generation %d: %w", gen, err)
	}
	return nil
}

// Wait is the orchestrator wait on the watcher's own connection. Besides the
// results of Client.Wait, it returns ErrNewGeneration at once while this
// watcher has not acknowledged the current generation.
func (w *Watcher) Wait(ctx context.Context) error {
	w.waitMu.Lock()
	defer w.waitMu.Unlock()
	return w.ctl.wait(ctx, 0)
}

// Close stops watching. It is idempotent.
func (w *Watcher) Close() error {
	w.ctl.close()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return w.efd.close()
}

// gone makes Fd readable when the provider goes away.
func (w *Watcher) gone() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.efd.signal()
}

// announce records a generation event (called by the connection's reader).
func (w *Watcher) announce(gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen <= w.latest {
		return
	}
	w.latest = gen
	if gen > w.seen {
		w.efd.signal()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}
