package provider

import (
	"fmt"
	"os"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// endWaitLocked resolves c's wait. The reply is sent by another goroutine so
// that a slow peer never holds the provider's lock.
func (p *Provider) endWaitLocked(c *peer, r wire.WaitResult) {
	c.waiting = false
	delete(p.waiters, c)
	msg := wire.EncodeWaitDone(c.waitID, r, p.gen.Load())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.send(c, msg, nil)
	}()
}

// checkWaitsLocked ends every wait once no watcher is outdated.
func (p *Provider) checkWaitsLocked() {
	p.changedLocked()
	if p.outdated != 0 {
		return
	}
	p.adaptedLocked()
	for c := range p.waiters {
		p.endWaitLocked(c, wire.WaitOK)
	}
}

// watch makes c a watcher and returns the current generation. seen is the
// last generation the watcher handled: 0 for a new watcher, which is then up
// to date; a watcher that re-registers (with a new provider, after a
// restart) names the one it handled last and is outdated until it acks the
// current one — so a wait after a restart passes only once it really
// handled the start-up generation. Its identity is read from the peer's
// /proc status (readProc) before the lock is taken; whether it is tracked
// follows --track-group.
func (p *Provider) watch(c *peer, seen uint64, label string) uint64 {
	info, err := readProc(c.sock, c.pid)
	if err != nil {
		info.comm = "?"
	}
	tracked := p.tracks(c, info)
	start := peerStart(c.sock, c.pid)
	p.mu.Lock()
	cur := p.gen.Load()
	c.label = label
	if c.watcher {
		if c.tracked {
			p.watchersChangedLocked() // its label may have changed
		}
		p.mu.Unlock()
		return cur
	}
	c.watcher, c.tracked, c.comm, c.start = true, tracked, info.comm, start
	c.acked = cur
	if seen != 0 {
		c.acked = seen
	}
	p.watchers++
	if c.tracked {
		p.tracked++
		if c.acked != cur {
			p.outdated++
		}
		p.watchersChangedLocked()
	}
	// A watcher of the previous provider registered again (expected.go).
	p.arrivedLocked(c)
	// Listed under mu, so that every bump from now on tries c; its events
	// start once c is marked up to date with cur, outside mu (wmu may be
	// held by a write to c). A bump in between found c not ready: the try
	// here sends its event.
	p.events.add(c)
	p.mu.Unlock()
	c.wmu.Lock()
	c.evOn, c.evSent, c.evDelay = true, cur, eventRetryMin
	c.wmu.Unlock()
	p.tryEvent(c, true)
	return cur
}

// tracks decides whether a watcher holds up orchestrator waits: always
// without --track-group; with it, only root, the provider's own user and
// members of the group (primary or supplementary). Probe-only clients
// never watch, so they never count.
func (p *Provider) tracks(c *peer, info procInfo) bool {
	if p.trackGID < 0 || c.uid == 0 || c.uid == uint32(os.Geteuid()) {
		return true
	}
	return inGroup(p.trackGID, c.gid, info.groups)
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
		if c.tracked {
			p.outdated--
		}
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
	p.waiters[c] = struct{}{}
	cur := p.gen.Load()
	switch {
	case seen != 0 && seen != cur, c.watcher && c.tracked && c.acked != cur:
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
