package provider

import (
	"fmt"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// endWaitLocked resolves c's wait. The reply is sent by another goroutine so
// that a slow peer never holds the provider's lock.
func (p *Provider) endWaitLocked(c *peer, r wire.WaitResult) {
	c.waiting = false
	msg := wire.EncodeWaitDone(c.waitID, r, p.gen.Load())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.send(c, msg, nil)
	}()
}

// checkWaitsLocked ends every wait once no watcher is outdated.
func (p *Provider) checkWaitsLocked() {
	if p.outdated != 0 {
		return
	}
	for c := range p.conns {
		if c.waiting {
			p.endWaitLocked(c, wire.WaitOK)
		}
	}
}

// watch makes c a watcher, up to date with the current generation.
func (p *Provider) watch(c *peer) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.watcher {
		c.watcher = true
		c.acked = p.gen.Load()
		p.watchers++
		p.wg.Add(1)
		go p.notifier(c)
	}
	return p.gen.Load()
}

// ack records c's acknowledgement of gen, which must be the current one.
func (p *Provider) ack(c *peer, gen uint64) (wire.Code, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.gen.Load()
	switch {
	case !c.watcher:
		return wire.CodeNotWatcher, "ack from a connection that is not a watcher: send watch first"
	case gen != cur:
		return wire.CodeBadAck, fmt.Sprintf("ack of generation %d refused: the current generation is %d", gen, cur)
	}
	if c.acked != cur {
		c.acked = cur
		p.outdated--
		p.checkWaitsLocked()
	}
	return 0, ""
}

// wait starts an orchestrator wait for c. seen is the generation the caller
// last saw (0: whatever is current). It ends at once when the generation
// already moved past seen, when c is itself an outdated watcher, or when no
// watcher is outdated.
func (p *Provider) wait(c *peer, id uint32, seen uint64) (wire.Code, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.waiting {
		return wire.CodeLimit, "a wait is already in progress on this connection"
	}
	c.waiting, c.waitID = true, id
	cur := p.gen.Load()
	switch {
	case seen != 0 && seen != cur, c.watcher && c.acked != cur:
		p.endWaitLocked(c, wire.WaitNewGeneration)
	default:
		p.checkWaitsLocked()
	}
	return 0, ""
}

// cancelWait ends c's wait, if any, with waitCancelled.
func (p *Provider) cancelWait(c *peer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.waiting {
		p.endWaitLocked(c, wire.WaitCancelled)
	}
}

// notifier sends c a generation event whenever one is pending. Events are
// coalesced: a watcher that reads slowly gets the newest generation, never a
// backlog, and never blocks the provider.
func (p *Provider) notifier(c *peer) {
	defer p.wg.Done()
	for {
		select {
		case <-c.notify:
			if !p.send(c, wire.Encode(wire.Generation, 0, wire.U64(p.gen.Load())), nil) {
				return
			}
		case <-c.done:
			return
		}
	}
}
