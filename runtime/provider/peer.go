package provider

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapsafe/snapsafe/shm"
)

// peer is one connected client. The fields below mu belong to the
// provider's lock.
type peer struct {
	sock   *sock // the connection (sock_linux.go)
	uid    uint32
	gid    uint32
	pid    int32
	mayBmp bool // decided at connect time from the peer's credentials
	// reserved: the peer is root or the provider's user, bounded only by
	// the global bounds and entitled to the reserve (bounds.go).
	reserved bool

	wmu     sync.Mutex // serialises writes to sock
	dropped atomic.Bool
	killed  atomic.Bool // shut down (kill): to be dropped

	// Serving (serve_linux.go): set by server.add, then read-only.
	r    *reactor
	slot int32  // in server.slots; -1 before add
	seq  uint32 // the slot's sequence number

	// Generation events (notify.go). Under wmu:
	evOn    bool          // the peer is a watcher: events are due to it
	evSent  uint64        // the generation of the last event sent (or the one it watched at)
	evDelay time.Duration // how long after the next deferral to look again
	// Under the notifier's mu:
	evSlot  int         // index in notifier.watchers; -1 when not there
	evIndex int         // index in notifier.retries; -1 when no retry is scheduled
	evDue   time.Time   // when the scheduled retry is due
	evArmed atomic.Bool // evIndex >= 0, readable without the notifier's mu

	// Under Provider.mu.
	watcher bool
	tracked bool   // a watcher that holds up waits while outdated
	comm    string // the watcher's command name (readProc)
	label   string // the watcher's own name for itself
	start   uint64 // the watcher's process start time (peerStart); 0: unknown
	acked   uint64
	waitID  uint32
	waiting bool
	regions []*shm.Region
}

// drop disconnects c and releases everything it held. A watcher stops
// counting; if it was the last outdated one, waits end.
func (p *Provider) drop(c *peer) {
	p.mu.Lock()
	if _, ok := p.conns[c]; !ok {
		p.mu.Unlock()
		return
	}
	delete(p.conns, c)
	c.dropped.Store(true)
	if c.waiting {
		delete(p.waiters, c)
	}
	if c.watcher {
		p.events.remove(c)
		p.watchers--
		if c.tracked {
			p.tracked--
			p.watchersChangedLocked()
		}
		if c.tracked && c.acked != p.gen.Load() {
			p.outdated--
			p.checkWaitsLocked()
		}
	}
	held := 0
	for _, r := range c.regions {
		held += len(r.Bytes())
		r.Close()
	}
	p.regionBytes -= held
	p.ledger.removeConn(c, held)
	c.regions = nil
	p.mu.Unlock()
	p.unserve(c)
	c.sock.shutdown() // a write waiting for room (sock.write) fails now
	c.sock.close()
}

// send writes one message (with descriptors in oob, if any) to c, waiting
// at most writeTimeout for room. On failure it shuts c's connection down
// (kill: its reactor then drops it) and reports false.
func (p *Provider) send(c *peer, msg, oob []byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.sock.write(msg, oob, time.Now().Add(writeTimeout)); err != nil {
		p.kill(c)
		return false
	}
	return true
}
