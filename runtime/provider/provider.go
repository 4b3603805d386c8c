// Package provider is snapsafe's provider core: the generation state,
// bumps, watchers and their acknowledgements, the orchestrator wait, the
// wipe regions, and the server side of the control protocol (docs/ABI.md).
// snapsafed is a thin main around it; applications use runtime/client.
package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/shm"
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
	// TrackGroup, when set, names a group: only root, the provider's own
	// user and members of the group register as tracked watchers (that hold
	// up orchestrator waits); anyone else may watch, untracked. When empty,
	// every watcher is tracked.
	TrackGroup string
	// OnAdapted, when set, is called (under the provider's lock: keep it
	// short) once per bump with the time from the bump until no tracked
	// watcher was outdated: the host endpoint's adapt histogram.
	OnAdapted func(time.Duration)
	// HooksDir, when set, is the restore hooks' directory (hooks.go,
	// docs/hooks.md): its executables run on every new generation after
	// the start-up one. HookTimeout bounds each run (DefaultHookTimeout
	// when zero).
	HooksDir    string
	HookTimeout time.Duration
	// Logger receives the provider's logs; slog.Default() when nil.
	Logger *slog.Logger

	// Bounds on what connected clients hold (see bounds.go); zero means
	// the default. Root and the provider's own user are bounded only by
	// MaxClients and MaxRegionBytes; everyone else also per uid, and all of
	// them together to MaxClients-ReservedClients connections and three
	// quarters of MaxRegionBytes, so that root is never locked out.
	MaxClients           int // all connections (DefaultMaxClients)
	MaxClientsPerUID     int // connections of one uid (DefaultMaxClientsPerUID)
	ReservedClients      int // kept for root and the provider's user (DefaultReservedClients)
	MaxRegionBytes       int // wipe-region bytes of all (shm.MaxRegionBytes, also the most allowed)
	MaxRegionBytesPerUID int // wipe-region bytes of one uid (DefaultMaxRegionBytesPerUID)

	// RestartGrace is how long the provider, at start, counts the tracked
	// watchers of the previous one whose processes still run as expected
	// watchers, which hold up waits until they register again (expected.go);
	// 0 means DefaultRestartGrace, a negative value expects none.
	RestartGrace time.Duration
}

// Provider publishes the generation and coordinates clients.
//
// Goroutines. Run owns every goroutine the provider starts and returns only
// after all of them have ended:
//   - the accept loop and the event source's Run: started by Run, stopped by
//     closing the listener and cancelling the source's context; Run waits for
//     both on errc;
//   - the page file's checker (watchPage): started by Run, stopped by the
//     same context; Run waits for it before shutdown;
//   - the reactors (serve_linux.go), a few goroutines that read and answer
//     the requests of every client: started by Run, ended by shutdown
//     (stopServer closes their epoll descriptors) once every peer is
//     dropped; counted in wg;
//   - one short-lived handler per request other than ack, and per ack reply
//     that cannot be written at once (handOff), while the reactor does not
//     read that client: started by its reactor, ends once the request is
//     answered (a reply waits at most writeTimeout); counted in wg;
//   - the notifier's dispatcher and retrier (notify.go), which send every
//     watcher its generation events: started by Run, stopped by shutdown
//     (closing events.stop) once every peer is dropped; counted in wg. The
//     dispatcher's helpers for one fan-out end before it goes on;
//   - one short-lived sender per ended orchestrator wait (so that a slow peer
//     never holds mu): started by endWaitLocked, ends when its one write
//     completes or times out; counted in wg;
//   - the restore-hook runner (hooks_linux.go) and, while a hook runs, its
//     waiter and two output readers: started by Run (startHooks), stopped
//     by Run before shutdown, which kills a running hook's process group
//     and waits for the runner;
//   - the refusal log's timer, while a window of refused clients is open:
//     started by noteRefusalLocked, stopped (or waited for) by shutdown;
//     counted in wg;
//   - the watchers' tender (tendWatchers), which records the tracked
//     watchers for the next provider and checks the expected ones: started
//     by Run, stopped by Run's context; Run waits for it before shutdown.
//
// shutdown closes the listener, drops every peer and waits for wg.
type Provider struct {
	dir      string
	log      *slog.Logger
	source   backend.Source
	backend  shm.Backend
	bumpGID  int // -1: no bump group
	trackGID int // -1: every watcher is tracked
	started  time.Time

	state *statedir.Dir // the checked state directory, open for its life
	page  *shm.Writer
	hw    *highWater
	lock  *os.File
	ln    *net.UnixListener

	gen   atomic.Uint64 // current generation; written under mu
	ready chan struct{}

	deferredEvents atomic.Uint64 // generation events deferred (notifier), for tests

	bounds bounds
	hooks  *hookSet    // restore hooks; nil when off (hooks.go)
	exp    expectation // expected watchers and the watchers file (expected.go)

	events *notifier // sends the generation events (notify.go)
	srv    *server   // reads and answers requests (serve_linux.go); nil until Run

	mu           sync.Mutex
	conns        map[*peer]struct{}
	waiters      map[*peer]struct{} // peers with a wait in progress
	ledger       ledger             // what each uid holds
	refusals     refusalLog
	changed      chan struct{} // closed (and replaced) when gen or outdated changes; WaitAdapted sleeps on it
	bumpedAt     time.Time     // when the last bump was published; zero once it was adapted to
	onAdapted    func(time.Duration)
	bumpsBy      map[shm.Reason]uint64
	reseed       reseedState // the kernel RNG's reseed for the current generation
	reseedWarned bool
	watchers     int // peers that are watchers
	tracked      int // watchers that are tracked
	outdated     int // watchers whose ack is older than gen
	regionBytes  int
	bumps        uint64
	closed       bool
	wg           sync.WaitGroup

	// Incidents of the page file and the high-water file, under mu: each
	// is logged once.
	pageIncident     bool // the page file is damaged (logged)
	pageRepairFailed bool // republishing it failed (logged)
	hwFailed         bool // recording the high-water mark failed (logged)

	closeOnce sync.Once
	closeErr  error
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
	prior := p.resume() // 0 for a new state directory
	p.gen.Store(prior)
	// Before the start-up bump, which leaves them outdated, and before any
	// client: the previous provider's watchers hold up waits from the start.
	p.loadExpected()
	// The reactors and the notifier, before Ready: a client may come once
	// the start-up bump is out.
	if err := p.startServer(); err != nil {
		return err
	}
	p.startNotifier()
	// The provider cannot know whether it missed a restore while it was not
	// running, so it always bumps when it starts.
	if _, err := p.Bump(shm.ReasonStartup, 0); err != nil {
		return err
	}
	stopHooks := p.startHooks() // hooks.go: scans once; no hook runs for the start-up generation
	close(p.ready)
	p.log.Info("provider ready", "dir", p.dir, "generation", p.Generation(), "backend", p.backend.String(), "prior", prior)
	p.checkFDLimit()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- p.accept() }()
	checked := make(chan struct{})
	go func() { defer close(checked); p.watchPage(ctx) }()
	tended := make(chan struct{})
	go func() { defer close(tended); p.tendWatchers(ctx) }()
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
	<-checked
	stopHooks() // hooks.go: kills a running hook's process group, waits for the runner
	<-tended
	p.shutdown()
	// Both goroutines end promptly now (listener closed, ctx done); wait for
	// them so that the caller may close the source once Run returns.
	for ; pending > 0; pending-- {
		<-errc
	}
	return err
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
	window, other, flush := p.stopRefusalsLocked()
	record, save := p.shutdownWatchersLocked()
	p.mu.Unlock()
	if save {
		// The watchers that run now, before they are dropped: the next
		// provider expects them.
		p.saveWatchers(record)
	}
	if flush {
		p.logRefusalSummary(window, other, p.refusalEvery())
	}
	p.closeListener()
	for _, c := range conns {
		p.drop(c)
	}
	close(p.events.stop)
	p.stopServer()
	p.wg.Wait()
	p.log.Info("provider stopped", "generation", p.Generation())
}

// Close stops the provider if it runs and releases the page, the socket
// and the directory lock. It is idempotent.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		p.shutdown()
		p.closeErr = errors.Join(p.page.Close(), p.hw.Close(), p.lock.Close(), p.state.Close())
	})
	return p.closeErr
}
