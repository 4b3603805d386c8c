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
	r, err := shm.NewRegion(int(size))
	if err != nil {
		p.log.Error("creating wipe region", "err", err)
		return nil, wire.CodeInternal, "could not create the wipe region: see the provider's log"
	}
	n := len(r.Bytes())
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case len(c.regions) >= MaxRegionsPerConn:
		r.Close()
		return nil, wire.CodeLimit, fmt.Sprintf("wipe region refused: a connection may hold at most %d", MaxRegionsPerConn)
	case p.regionBytes+n > shm.MaxRegionBytes:
		r.Close()
		return nil, wire.CodeLimit, fmt.Sprintf("wipe region refused: the provider holds its maximum of %d bytes of regions", shm.MaxRegionBytes)
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
	return f, 0, ""
}
