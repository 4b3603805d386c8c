package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/snapsafe/snapsafe/acpi"
	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/shm"
)

// Provider bounds. They keep one peer from exhausting the provider's
// descriptors or memory.
const (
	MaxConns          = 4096 // connected clients, watchers included
	MaxRegionsPerConn = 16   // wipe regions one connection may hold
	writeTimeout      = 2 * time.Second
)

// Config configures a Provider.
type Config struct {
	// Dir is the state directory; DefaultDir() when empty.
	Dir string
	// Source produces restore events; nil means manual (bumps only come
	// over the control socket).
	Source backend.Source
	// BumpGroup, when set, names a group whose members may force bumps
	// (in addition to root, the provider's own user and holders of
	// CAP_CHECKPOINT_RESTORE).
	BumpGroup string
	// Logger receives the provider's logs; slog.Default() when nil.
	Logger *slog.Logger
}

// Provider publishes the generation and coordinates clients.
type Provider struct {
	dir     string
	log     *slog.Logger
	source  backend.Source
	backend shm.Backend
	bumpGID int // -1: no bump group
	started time.Time

	page *shm.Writer
	lock *os.File
	ln   *net.UnixListener

	gen   atomic.Uint64 // current generation; written under mu
	ready chan struct{}

	mu          sync.Mutex
	conns       map[*peer]struct{}
	watchers    int // peers that are watchers
	outdated    int // watchers whose ack is older than gen
	regionBytes int
	bumps       uint64
	closed      bool
	wg          sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// peer is one connected client. The fields below mu belong to the
// provider's lock.
type peer struct {
	conn   *net.UnixConn
	uid    uint32
	pid    int32
	mayBmp bool // decided at connect time from the peer's credentials

	wmu      sync.Mutex    // serialises writes to conn
	deadline time.Time     // conn's write deadline; under wmu
	notify   chan struct{} // capacity 1: a generation event is pending
	done     chan struct{} // closed when the peer is dropped

	// Under Provider.mu.
	watcher bool
	acked   uint64
	waitID  uint32
	waiting bool
	regions []*shm.Region
}

// Ready is closed once the start-up bump is published and the provider
// accepts clients.
func (p *Provider) Ready() <-chan struct{} { return p.ready }

// Dir returns the state directory.
func (p *Provider) Dir() string { return p.dir }

// Generation returns the current generation.
func (p *Provider) Generation() uint64 { return p.gen.Load() }

// Run publishes the start-up bump, then serves clients and turns the
// source's events into bumps until ctx is done or the source fails. On
// return the page is marked stopped and every client is disconnected.
func (p *Provider) Run(ctx context.Context) error {
	defer p.Close()
	prior, _ := p.page.Prior() // 0 for a new or unreadable page
	p.gen.Store(prior)
	// The provider cannot know whether it missed a restore while it was not
	// running, so it always bumps when it starts.
	if _, err := p.Bump(shm.ReasonStartup, 0); err != nil {
		return err
	}
	close(p.ready)
	p.log.Info("provider ready", "dir", p.dir, "generation", p.Generation(), "backend", p.backend.String(), "prior", prior)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- p.accept() }()
	go func() {
		err := p.source.Run(ctx, p.onEvent)
		if err == nil && ctx.Err() == nil {
			err = errors.New("stopped unexpectedly")
		}
		if err != nil {
			err = fmt.Errorf("%s event source: %w", p.source.Name(), err)
		}
		errc <- err
	}()
	var err error
	pending := 2
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
	}
	cancel()
	p.shutdown()
	// Both goroutines end promptly now (listener closed, ctx done); wait for
	// them so that the caller may close the source once Run returns.
	for ; pending > 0; pending-- {
		<-errc
	}
	return err
}

// onEvent turns one source event into one bump.
func (p *Provider) onEvent(ev backend.Event) {
	reason := shm.ReasonACPI
	if ev.Kind == backend.KindVMClock {
		reason = shm.ReasonVMClock
	}
	gen, err := p.Bump(reason, 0)
	if err != nil {
		p.log.Error("bump failed", "signal", ev.Signal, "err", err)
		return
	}
	lvl := slog.LevelInfo
	if ev.Lost {
		lvl = slog.LevelWarn
	}
	p.log.Log(context.Background(), lvl, "restore event", "generation", gen, "signal", ev.Signal,
		"lost", ev.Lost, "detail", ev.Detail, "latency", time.Since(ev.Time))
}

// Bump publishes generation max(min, current+1) for reason and returns it:
// the page is updated in the ABI's order (wiping every region), every
// watcher becomes outdated and is notified, and every orchestrator wait
// ends with a new-generation result.
func (p *Provider) Bump(reason shm.Reason, min uint64) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, errors.New("provider is shutting down")
	}
	// The generation stops below 2^64-1: clients reserve that value for
	// "state never seeded" (csprng stores generations complemented, so
	// that zeroed memory stands for it).
	cur := p.gen.Load()
	if cur >= math.MaxUint64-1 || min == math.MaxUint64 {
		return 0, fmt.Errorf("generation %d cannot be reached: generations stop at 2^64-2", max(min, cur+1))
	}
	next := max(min, cur+1)
	p.page.Publish(shm.Update{
		Generation: next,
		Reason:     reason,
		Backend:    p.backend,
		State:      shm.StateRunning,
		PID:        uint32(os.Getpid()),
		Epoch:      uuid.New(),
		Time:       time.Now(),
		Mono:       monotonic(),
	}, p.wipeLocked)
	p.gen.Store(next)
	p.bumps++
	p.outdated = p.watchers
	for c := range p.conns {
		if c.watcher {
			select {
			case c.notify <- struct{}{}:
			default: // an event is already pending; it will carry the newest generation
			}
		}
		if c.waiting {
			p.endWaitLocked(c, waitNewGeneration)
		}
	}
	if reason != shm.ReasonStartup {
		p.log.Debug("bumped", "generation", next, "reason", reason.String())
	}
	return next, nil
}

// wipeLocked zeroes every wipe region; called inside the page's write section.
func (p *Provider) wipeLocked() {
	for c := range p.conns {
		for _, r := range c.regions {
			r.Wipe()
		}
	}
}

// endWaitLocked resolves c's wait. The reply is sent by another goroutine so
// that a slow peer never holds the provider's lock.
func (p *Provider) endWaitLocked(c *peer, r waitResult) {
	c.waiting = false
	msg := encodeWaitDone(c.waitID, r, p.gen.Load())
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
			p.endWaitLocked(c, waitOK)
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
func (p *Provider) ack(c *peer, gen uint64) (errCode, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.gen.Load()
	switch {
	case !c.watcher:
		return codeNotWatcher, "ack from a connection that is not a watcher: send watch first"
	case gen != cur:
		return codeBadAck, fmt.Sprintf("ack of generation %d refused: the current generation is %d", gen, cur)
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
func (p *Provider) wait(c *peer, id uint32, seen uint64) (errCode, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.waiting {
		return codeLimit, "a wait is already in progress on this connection"
	}
	c.waiting, c.waitID = true, id
	cur := p.gen.Load()
	switch {
	case seen != 0 && seen != cur, c.watcher && c.acked != cur:
		p.endWaitLocked(c, waitNewGeneration)
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
		p.endWaitLocked(c, waitCancelled)
	}
}

// newRegion makes a wipe region for c, within the bounds, and returns a
// duplicate of its descriptor for sending: the region itself may be closed
// by a concurrent drop of c as soon as the lock is released.
func (p *Provider) newRegion(c *peer, size uint32) (*os.File, errCode, string) {
	if size == 0 || size > shm.MaxRegionSize {
		return nil, codeInvalid, fmt.Sprintf("wipe region of %d bytes refused: ask for 1 to %d bytes", size, shm.MaxRegionSize)
	}
	r, err := shm.NewRegion(int(size))
	if err != nil {
		p.log.Error("creating wipe region", "err", err)
		return nil, codeInternal, "could not create the wipe region: see the provider's log"
	}
	n := len(r.Bytes())
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case len(c.regions) >= MaxRegionsPerConn:
		r.Close()
		return nil, codeLimit, fmt.Sprintf("wipe region refused: a connection may hold at most %d", MaxRegionsPerConn)
	case p.regionBytes+n > shm.MaxRegionBytes:
		r.Close()
		return nil, codeLimit, fmt.Sprintf("wipe region refused: the provider holds its maximum of %d bytes of regions", shm.MaxRegionBytes)
	}
	if _, ok := p.conns[c]; !ok {
		r.Close()
		return nil, codeInternal, "connection closed"
	}
	f, err := dupFile(r.File())
	if err != nil {
		r.Close()
		p.log.Error("duplicating wipe region descriptor", "err", err)
		return nil, codeInternal, "could not pass the wipe region: see the provider's log"
	}
	c.regions = append(c.regions, r)
	p.regionBytes += n
	return f, 0, ""
}

// notifier sends c a generation event whenever one is pending. Events are
// coalesced: a watcher that reads slowly gets the newest generation, never a
// backlog, and never blocks the provider.
func (p *Provider) notifier(c *peer) {
	defer p.wg.Done()
	for {
		select {
		case <-c.notify:
			if !p.send(c, encode(msgGeneration, 0, u64(p.gen.Load())), nil) {
				return
			}
		case <-c.done:
			return
		}
	}
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
	if c.watcher {
		p.watchers--
		if c.acked != p.gen.Load() {
			p.outdated--
			p.checkWaitsLocked()
		}
	}
	for _, r := range c.regions {
		p.regionBytes -= len(r.Bytes())
		r.Close()
	}
	c.regions = nil
	p.mu.Unlock()
	close(c.done)
	c.conn.Close()
}

// send writes one message (with descriptors in oob, if any) to c. On
// failure it drops c and reports false. Every write has at least half of
// writeTimeout to complete; the deadline is moved only when it gets closer
// than that, because moving it costs a timer update per message (a bump to
// a thousand watchers is a thousand messages).
func (p *Provider) send(c *peer, msg, oob []byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if now := time.Now(); c.deadline.Sub(now) < writeTimeout/2 {
		c.deadline = now.Add(writeTimeout)
		_ = c.conn.SetWriteDeadline(c.deadline)
	}
	if _, _, err := c.conn.WriteMsgUnix(msg, oob, nil); err != nil {
		go p.drop(c)
		return false
	}
	return true
}

// Status reports the provider's state and counters.
func (p *Provider) Status() Status {
	snap, _ := p.page.Snapshot()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{
		Generation:  p.gen.Load(),
		Watchers:    p.watchers,
		Outdated:    p.outdated,
		Clients:     len(p.conns),
		RegionBytes: p.regionBytes,
		Bumps:       p.bumps,
		Backend:     p.backend.String(),
		Source:      p.source.Info(),
		VMGenID:     acpi.Probe(),
		Epoch:       uuid.UUID(snap.Epoch).String(),
		Reason:      snap.Reason.String(),
		State:       snap.State.String(),
		BumpTime:    snap.Time,
		Wiped:       snap.Wiped,
		ProviderPID: os.Getpid(),
		Started:     p.started,
		Dir:         p.dir,
	}
	for c := range p.conns {
		s.Regions += len(c.regions)
		if c.waiting {
			s.Waiting++
		}
	}
	return s
}

// Status is what the status request returns, as JSON.
type Status struct {
	Generation  uint64         `json:"generation"`
	Watchers    int            `json:"watchers"`
	Outdated    int            `json:"outdated"`
	Waiting     int            `json:"waiting"`
	Clients     int            `json:"clients"`
	Regions     int            `json:"regions"`
	RegionBytes int            `json:"region_bytes"`
	Bumps       uint64         `json:"bumps"`
	Backend     string         `json:"backend"`
	Source      api.SourceInfo `json:"source,omitempty"`
	VMGenID     acpi.Info      `json:"vmgenid"` // the ACPI VMGENID probe, whatever the backend
	Epoch       string         `json:"epoch"`
	Reason      string         `json:"reason"`
	State       string         `json:"state"`
	BumpTime    time.Time      `json:"bump_time"`
	Wiped       uint64         `json:"wiped_generation"`
	ProviderPID int            `json:"provider_pid"`
	Started     time.Time      `json:"started"`
	Dir         string         `json:"dir"`
}

// shutdown marks the page stopped and disconnects everyone. Only the first
// call does anything.
func (p *Provider) shutdown() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.page.SetState(shm.StateStopped)
	conns := make([]*peer, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
	}
	for _, c := range conns {
		p.drop(c)
	}
	p.wg.Wait()
	p.log.Info("provider stopped", "generation", p.Generation())
}

// Close stops the provider if it runs and releases the page, the socket
// and the directory lock. It is idempotent.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		p.shutdown()
		p.closeErr = errors.Join(p.page.Close(), p.lock.Close())
	})
	return p.closeErr
}
