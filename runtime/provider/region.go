package provider

import (
	"fmt"
	"os"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
)

// newRegion makes a wipe region for c, within the bounds, and returns a
// duplicate of its descriptor for sending: the region itself may be closed
// by a concurrent drop of c as soon as the lock is released.
func (p *Provider) newRegion(c *peer, size uint32) (*os.File, wire.Code, string) {
	if size == 0 || size > shm.MaxRegionSize {
		return nil, wire.CodeInvalid, fmt.Sprintf("wipe region of %d bytes refused: ask for 1 to %d bytes", size, shm.MaxRegionSize)
	}
	// Refuse before making the memfd, so that a peer at its bound asking in
	// a loop costs no allocations; checked again below, under the lock that
	// takes the bytes.
	page := os.Getpagesize()
	p.mu.Lock()
	text := p.regionLimitLocked(c, (int(size)+page-1)/page*page)
	p.mu.Unlock()
	if text != "" {
		return nil, wire.CodeLimit, text
	}
	r, err := shm.NewRegion(int(size))
	if err != nil {
		p.log.Error("creating wipe region", "err", err)
		return nil, wire.CodeInternal, "could not create the wipe region: see the provider's log"
	}
	n := len(r.Bytes())
	p.mu.Lock()
	defer p.mu.Unlock()
	if text := p.regionLimitLocked(c, n); text != "" {
		r.Close()
		return nil, wire.CodeLimit, text
	}
	if _, ok := p.conns[c]; !ok {
		r.Close()
		return nil, wire.CodeInternal, "connection closed"
	}
	f, err := r.Dup()
	if err != nil {
		r.Close()
		p.log.Error("duplicating wipe region descriptor", "err", err)
		return nil, wire.CodeInternal, "could not pass the wipe region: see the provider's log"
	}
	c.regions = append(c.regions, r)
	p.regionBytes += n
	p.ledger.addRegion(c, n)
	return f, 0, ""
}
