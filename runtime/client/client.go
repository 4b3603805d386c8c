package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
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
// stopped or died. The page then no longer changes (it stays readable: it
// is the gone provider's memfd), and wipe regions are no longer wiped; Err
// says why. Attach again to follow a provider that starts later.
func (c *Client) Done() <-chan struct{} { return c.ctl.done }

// Err returns why the connection ended, once Done is closed.
func (c *Client) Err() error { return c.ctl.error() }

// Status asks the provider for its state and counters.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	r, err := c.ctl.call(ctx, wire.Status, nil)
	if err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	if err := json.Unmarshal(r.m.Payload, &s); err != nil {
		return s, fmt.Errorf("status: decoding the provider's reply: %w", err)
	}
	// The lists do not fit in one message: they come in a memfd.
	r, err = c.ctl.call(ctx, wire.Lists, nil)
	if err != nil {
		return s, fmt.Errorf("status: watcher list: %w", err)
	}
	if r.file == nil {
		return s, fmt.Errorf("status: watcher list: the provider sent no descriptor")
	}
	defer r.file.Close()
	b, err := io.ReadAll(io.NewSectionReader(r.file, 0, int64(r.m.U32())))
	if err != nil {
		return s, fmt.Errorf("status: reading the watcher list: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("status: decoding the watcher list: %w", err)
	}
	return s, nil
}

// Bump forces a new generation max(floor, current+1) and returns it. It needs
// privilege (root, the provider's user, CAP_CHECKPOINT_RESTORE or the
// provider's bump group); otherwise the error matches ErrNotPermitted.
func (c *Client) Bump(ctx context.Context, floor uint64) (uint64, error) {
	r, err := c.ctl.call(ctx, wire.Bump, wire.U64(floor))
	if err != nil {
		return 0, fmt.Errorf("bump: %w", err)
	}
	return r.m.U64(), nil
}

// Wait is the orchestrator wait: it returns nil once no watcher is
// outdated. It returns an error matching ErrNewGeneration if the generation
// moves past the one the page showed when Wait was called (the caller must
// handle the new generation and wait again), and ctx's error when ctx ends
// first.
func (c *Client) Wait(ctx context.Context) error { return c.WaitSince(ctx, c.Generation()) }

// WaitSince is Wait for a caller that last handled generation seen: it
// returns an error matching ErrNewGeneration at once when the current
// generation is another one. seen 0 means whatever is current.
func (c *Client) WaitSince(ctx context.Context, seen uint64) error {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	return c.ctl.wait(ctx, seen)
}

// Region asks the provider for a wipe-on-restore region of at least size
// bytes (at most shm.MaxRegionSize), which the provider zeroes on every
// bump for as long as this client stays connected. See docs/ABI.md for the
// protocol a client must follow before it stores secrets in it.
func (c *Client) Region(ctx context.Context, size int) (*shm.Region, error) {
	if size <= 0 || size > shm.MaxRegionSize {
		return nil, fmt.Errorf("wipe region of %d bytes: ask for 1 to %d bytes", size, shm.MaxRegionSize)
	}
	r, err := c.ctl.call(ctx, wire.Region, wire.U32(uint32(size)))
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
	r, err := c.ctl.call(ctx, wire.VMClock, nil)
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
