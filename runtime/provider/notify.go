package provider

import (
	"container/heap"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// A deferred generation event is retried eventRetryMin after the bump or
// the request that found it deferred, then at doubling intervals up to
// eventRetryMax, until the watcher has read what was queued for it.
const (
	eventRetryMin = time.Millisecond
	eventRetryMax = 250 * time.Millisecond
)

// eventResult is what became of one attempt to send a generation event.
type eventResult int

const (
	eventSent     eventResult = iota
	eventDeferred             // the watcher has not read everything yet
	eventFailed               // the connection is broken; it has been shut down (kill)
)

// fanOutChunk is the fewest watchers a helper of one fan-out takes on: below
// it, starting a goroutine costs more than it saves.
const fanOutChunk = 512

// notifier sends every watcher its generation events, at most one unread at
// a time (docs/ABI.md §3.1), without a goroutine or a timer per watcher:
//
//   - after a bump, its dispatcher (one goroutine) tries every watcher, the
//     list split among up to GOMAXPROCS goroutines;
//   - after each request of a watcher's, its reactor tries it (serveOne);
//   - a watcher whose event was deferred (it had not read everything:
//     sendEvent) is tried again by the retrier (one goroutine with one
//     timer) eventRetryMin later, then at doubling intervals up to
//     eventRetryMax; a bump or a request starts the intervals again.
//
// Each try (tryEvent) sends the generation current at that moment, and only
// if it is not the one the watcher's last event carried; so bumps that land
// while an event is unread cost nothing, and once the watcher has read
// everything it gets one event carrying the newest generation. Nothing ever
// blocks on a watcher, and nothing disconnects one for being slow.
type notifier struct {
	kick  chan struct{} // capacity 1: a bump to fan out
	rearm chan struct{} // capacity 1: the earliest retry changed
	stop  chan struct{} // closed by shutdown

	mu       sync.Mutex
	watchers []*peer   // every watcher; peer.evSlot is its index
	retries  retryHeap // watchers with a retry scheduled, earliest first

	event atomic.Pointer[encodedEvent] // the newest event, encoded once for everyone
}

type encodedEvent struct {
	gen uint64
	msg []byte // shared by every sender: never written after it is made
}

func newNotifier() *notifier {
	return &notifier{kick: make(chan struct{}, 1), rearm: make(chan struct{}, 1), stop: make(chan struct{})}
}

// startNotifier starts the dispatcher and the retrier; shutdown stops them
// (closing stop) after it dropped every peer.
func (p *Provider) startNotifier() {
	p.wg.Add(2)
	go p.dispatch()
	go p.retry()
}

// bumped has every watcher tried for the new generation. Under mu (or not:
// it never blocks).
func (n *notifier) bumped() {
	select {
	case n.kick <- struct{}{}:
	default: // a fan-out is pending; it will carry the newest generation
	}
}

// encoded returns the generation event for gen.
func (n *notifier) encoded(gen uint64) []byte {
	if e := n.event.Load(); e != nil && e.gen == gen {
		return e.msg
	}
	e := &encodedEvent{gen: gen, msg: wire.Encode(wire.Generation, 0, wire.U64(gen))}
	n.event.Store(e)
	return e.msg
}

// add lists c among the watchers; called under Provider.mu, so that every
// bump after c became a watcher reaches it.
func (n *notifier) add(c *peer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c.evSlot = len(n.watchers)
	n.watchers = append(n.watchers, c)
}

// remove forgets c (dropped), and its retry if one is scheduled.
func (n *notifier) remove(c *peer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if i := c.evSlot; i >= 0 && i < len(n.watchers) && n.watchers[i] == c {
		last := len(n.watchers) - 1
		n.watchers[i] = n.watchers[last]
		n.watchers[i].evSlot = i
		n.watchers[last] = nil
		n.watchers = n.watchers[:last]
		c.evSlot = -1
	}
	n.unscheduleLocked(c)
}

// schedule has c tried again after d, unless a retry is already scheduled
// and again is false; it reports whether it scheduled one.
func (n *notifier) schedule(c *peer, d time.Duration, again bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if (c.evIndex >= 0 && !again) || c.dropped.Load() {
		return false
	}
	c.evDue = time.Now().Add(d)
	if c.evIndex >= 0 {
		heap.Fix(&n.retries, c.evIndex)
	} else {
		heap.Push(&n.retries, c)
		c.evArmed.Store(true)
	}
	if n.retries[0] == c {
		select {
		case n.rearm <- struct{}{}:
		default:
		}
	}
	return true
}

func (n *notifier) unschedule(c *peer) {
	if !c.evArmed.Load() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unscheduleLocked(c)
}

func (n *notifier) unscheduleLocked(c *peer) {
	if c.evIndex >= 0 {
		heap.Remove(&n.retries, c.evIndex)
		c.evArmed.Store(false)
	}
}

// tryEvent sends c an event carrying the current generation if c is a
// watcher, its last event carried another one, and it has read everything
// the provider sent it before (sendEvent); otherwise the event is deferred
// and a retry scheduled. woken says the try follows a bump or a request of
// c's: the retry intervals start again from eventRetryMin.
func (p *Provider) tryEvent(c *peer, woken bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	gen := p.gen.Load()
	if !c.evOn || gen == c.evSent || c.dropped.Load() {
		return
	}
	switch p.sendEvent(c, p.events.encoded(gen)) {
	case eventSent:
		c.evSent, c.evDelay = gen, eventRetryMin
		p.events.unschedule(c)
	case eventDeferred:
		p.deferredEvents.Add(1)
		if woken {
			c.evDelay = eventRetryMin
		}
		if p.events.schedule(c, c.evDelay, woken) {
			c.evDelay = min(2*c.evDelay, eventRetryMax)
		}
	case eventFailed:
		p.events.unschedule(c)
	}
}

// dispatch tries every watcher after each bump (bumped). Bumps that land
// during one fan-out are served by one more.
func (p *Provider) dispatch() {
	defer p.wg.Done()
	n := p.events
	var batch []*peer
	for {
		select {
		case <-n.kick:
		case <-n.stop:
			return
		}
		n.mu.Lock()
		batch = append(batch[:0], n.watchers...)
		n.mu.Unlock()
		p.fanOut(batch)
		clear(batch) // hold no dropped peer until the next bump
	}
}

// fanOut tries every watcher of batch, in up to GOMAXPROCS goroutines: the
// dispatcher and helpers that end before it returns.
func (p *Provider) fanOut(batch []*peer) {
	parts := max(1, min(runtime.GOMAXPROCS(0), len(batch)/fanOutChunk))
	var helpers sync.WaitGroup
	for i := 1; i < parts; i++ {
		part := batch[len(batch)*i/parts : len(batch)*(i+1)/parts]
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			for _, c := range part {
				p.tryEvent(c, true)
			}
		}()
	}
	for _, c := range batch[:len(batch)/parts] {
		p.tryEvent(c, true)
	}
	helpers.Wait()
}

// retry tries each watcher whose retry is due (schedule), with one timer
// for all of them.
func (p *Provider) retry() {
	defer p.wg.Done()
	n := p.events
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	var due []*peer
	for {
		select {
		case <-t.C:
		case <-n.rearm:
		case <-n.stop:
			return
		}
		now := time.Now()
		n.mu.Lock()
		for len(n.retries) > 0 && !n.retries[0].evDue.After(now) {
			c := heap.Pop(&n.retries).(*peer)
			c.evArmed.Store(false)
			due = append(due, c)
		}
		n.mu.Unlock()
		for _, c := range due {
			p.tryEvent(c, false)
		}
		clear(due)
		due = due[:0]
		n.mu.Lock()
		next, pending := time.Duration(0), len(n.retries) > 0
		if pending {
			next = time.Until(n.retries[0].evDue)
		}
		n.mu.Unlock()
		if pending {
			t.Reset(max(next, 0))
		} else {
			t.Stop()
		}
	}
}

// retryHeap orders the watchers with a scheduled retry by when it is due
// (container/heap). Under the notifier's mu.
type retryHeap []*peer

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].evDue.Before(h[j].evDue) }
func (h retryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].evIndex, h[j].evIndex = i, j
}
func (h *retryHeap) Push(x any) {
	c := x.(*peer)
	c.evIndex = len(*h)
	*h = append(*h, c)
}
func (h *retryHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.evIndex = -1
	return c
}
