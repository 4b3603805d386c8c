package client

// Cached values per generation: a value built by the caller's function for
// the current generation, checked with one load of the page on every read,
// rebuilt once (for all callers) when the generation moves, and
// acknowledged as a watcher once rebuilt.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Cached holds a value of type T built for the current generation: a
// session-ticket key, an HMAC key, a token, anything that must not outlive
// a restore or be shared between clones. Get returns it while the
// generation is the one it was built for, and builds a new one (once, for
// every caller) when the generation has moved.
//
// The guarantee: Get returns a value only if the build that made it was
// given generation g, the page still showed g once that build had
// returned, and the page showed g again during that Get. A value built for
// an older generation is never returned, and neither is one whose build a
// bump overlapped: it is discarded and built again, a bounded number of
// times (then Get fails with an error matching ErrNewGeneration).
//
// A Cached is a tracked watcher (Client.Watch): after a bump it
// acknowledges the new generation once a value has been built for it, so
// that an orchestrator wait (snapsafectl wait) returns only after this
// cache has adapted. While nothing has asked it for a value yet (no Get),
// it holds nothing that could be stale and acknowledges every generation
// at once. A build that fails leaves the generation unacknowledged; its
// error goes to the caller of Get (or to OnCacheError for a build of the
// Cached's own goroutine), and the next Get builds again. Like every
// watcher, it counts as up to date with the generation current when it
// registers (in NewCached, and when it watches again after a provider
// restart): Get never serves an older value, but may build on first use.
//
// When the provider goes away (the watcher's connection closes), Get fails
// with an error matching ErrProviderGone, unless RebuildWithoutProvider:
// the page no longer moves, so a restore would go unseen, and a cached
// value might be one that every clone shares. That lasts: the Client maps
// the sealed page of the provider it attached to, which never moves again
// once that provider is gone, so after a provider restart attach a new
// Client and make a new Cached (csprng re-attaches by itself).
//
// The value lives in ordinary Go memory, which a snapshot copies: Get never
// returns it after a restore the provider has seen, but the bytes may
// remain in memory until the garbage collector reuses them. Keep secret
// bytes in a CachedSecret instead, which the provider zeroes.
//
// A Cached is safe for concurrent use. Its Client must stay open until
// Close has returned.
type Cached[T any] struct {
	c     *Client
	build func(ctx context.Context, gen uint64) (T, error)
	cfg   cacheConfig
	hooks cacheHooks

	cur    atomic.Pointer[cacheEntry[T]] // the committed value; nil while none is usable
	wanted atomic.Bool                   // a caller asked for a value: rebuild after bumps

	mu     sync.Mutex
	flight *cacheFlight // the build in progress, if any
	gone   error        // set while no provider is watched: nothing is served
	closed bool

	kick      chan struct{} // a caller committed a value: run acknowledges it
	cancel    context.CancelFunc
	done      chan struct{} // closed when run returns
	pumps     sync.WaitGroup
	closeOnce sync.Once
}

// cacheEntry is a committed value and the generation it was built for.
type cacheEntry[T any] struct {
	gen uint64
	val T
}

// cacheFlight is one build in progress; callers that need a value
// meanwhile wait for it rather than build their own.
type cacheFlight struct {
	gen     uint64
	done    chan struct{} // closed when the build has ended
	err     error         // the build's error, set before done closes
	ctxErr  bool          // the build failed because its caller's context ended
	waiters int           // callers waiting for it (under Cached.mu; for tests)
}

// cacheHooks adapt the Cached to what it holds (CachedSecret).
type cacheHooks struct {
	needConn bool   // the Client's own connection must stay up (it holds the regions)
	discard  func() // forget a value that is not (or no longer) committed
}

type cacheConfig struct {
	rebuildWithoutProvider bool
	onError                func(error)
}

// A CacheOption configures NewCached and NewCachedSecret.
type CacheOption func(*cacheConfig)

// RebuildWithoutProvider makes Get (and CachedSecret.Use) build a fresh
// value on every call while no provider is watched, instead of failing
// with an error matching ErrProviderGone. Such values are neither cached
// nor shared, and their generation is whatever the page last showed (0 if
// it never showed one). Without a provider nothing would tell the process
// about a restore: a value kept across one would be shared with every
// clone. Use this when every call may pay for a build (a key derived
// locally, a token from a service that tolerates the load); the default
// fails closed.
func RebuildWithoutProvider() CacheOption {
	return func(c *cacheConfig) { c.rebuildWithoutProvider = true }
}

// OnCacheError sets a function told about the errors of the Cached's own
// goroutine, which has no caller to return them to: failed background
// builds (the generation then stays unacknowledged), failed
// acknowledgements, the provider going away, and a returning provider
// whose page is not the one the Client mapped. It is called from that
// goroutine and must not block for long or call Close.
func OnCacheError(f func(error)) CacheOption {
	return func(c *cacheConfig) { c.onError = f }
}

// Bounds of the Cached's work.
const (
	// maxCacheRounds bounds how often one Get goes round its loop (each
	// round is a build, or a wait for another caller's build, that a bump
	// made stale) before it gives up with ErrNewGeneration.
	maxCacheRounds = 16
	// Re-watching after the provider went away: the first retry's delay,
	// doubling up to the last, and the time one attempt may take.
	rewatchFirst, rewatchMax = 100 * time.Millisecond, 2 * time.Second
	rewatchTimeout           = 5 * time.Second
)

// errFallback tells Get that the provider is gone and the caller asked for
// a fresh value on every call (RebuildWithoutProvider).
var errFallback = errors.New("no provider: build a fresh value")

// NewCached returns a Cached whose values build makes. build is called
// with the generation the value is for (and the context of the Get that
// needs it, or the Cached's own context, ended by Close, for a rebuild
// after a bump); it must not call Get or Close of the same Cached. Nothing
// is built until the first Get.
//
// NewCached registers a watcher on its own connection (ctx bounds that)
// and starts a goroutine that the Cached owns until Close: it follows the
// watcher, rebuilds as soon as a new generation is announced (so that the
// acknowledgement does not wait for the next Get), acknowledges, and
// watches again if its watcher's connection alone was lost.
func NewCached[T any](ctx context.Context, c *Client, build func(ctx context.Context, gen uint64) (T, error), opts ...CacheOption) (*Cached[T], error) {
	return newCached(ctx, c, build, cacheHooks{}, opts)
}

func newCached[T any](ctx context.Context, c *Client, build func(context.Context, uint64) (T, error), hooks cacheHooks, opts []CacheOption) (*Cached[T], error) {
	if c == nil || build == nil {
		return nil, errors.New("cached value: a Client and a build function are needed")
	}
	k := &Cached[T]{
		c:     c,
		build: build,
		hooks: hooks,
		kick:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	for _, o := range opts {
		o(&k.cfg)
	}
	w, err := c.Watch(ctx, NoReconnect()) // this Client's page cannot follow a new provider: see rewatch
	if err != nil {
		return nil, fmt.Errorf("cached value: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	go k.run(runCtx, w)
	return k, nil
}

// Get returns the value for the current generation, building it first if
// the generation moved since the last build (or it was never built).
// Concurrent calls share one build. It returns build's error (wrapped) when
// the build fails, an error matching ErrNewGeneration when bumps kept
// overlapping the builds, and one matching ErrProviderGone while no
// provider is watched (unless RebuildWithoutProvider) or after Close.
//
// When the generation has not moved, Get is one atomic load from the page
// and one of the committed value: no lock, no system call.
func (k *Cached[T]) Get(ctx context.Context) (T, error) {
	g := k.c.Generation()
	if e := k.cur.Load(); e != nil && e.gen == g {
		return e.val, nil
	}
	e, err := k.entry(ctx)
	switch {
	case err == errFallback:
		return k.fresh(ctx)
	case err != nil:
		var zero T
		return zero, err
	}
	return e.val, nil
}

// entry returns the committed entry once it is for the current generation,
// leading a build or waiting for the one in progress.
func (k *Cached[T]) entry(ctx context.Context) (*cacheEntry[T], error) {
	k.wanted.Store(true)
	for round := 0; ; round++ {
		g := k.c.Generation()
		if e := k.cur.Load(); e != nil && e.gen == g {
			return e, nil
		}
		if round == maxCacheRounds {
			return nil, fmt.Errorf("%w: the generation moved %d times while a cached value was built for it: try again", ErrNewGeneration, round)
		}
		k.mu.Lock()
		// Look again under the lock, where flights start and commit: a
		// flight may have committed since the look above, and a flight for
		// a generation that is no longer current must never start (its
		// discard would wipe a newer value's secret under its users).
		g = k.c.Generation()
		if e := k.cur.Load(); e != nil && e.gen == g {
			k.mu.Unlock()
			return e, nil
		}
		if err := k.unusableLocked(g); err != nil {
			k.mu.Unlock()
			return nil, err
		}
		if f := k.flight; f != nil {
			f.waiters++
			k.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			// A build for an older generation, or one whose caller gave up,
			// says nothing about ours: go round (and lead one if needed).
			if f.err != nil && !f.ctxErr && k.c.Generation() == f.gen {
				return nil, f.err
			}
			continue
		}
		f := &cacheFlight{gen: g, done: make(chan struct{})}
		k.flight = f
		k.mu.Unlock()
		e, err := k.lead(ctx, f)
		if e != nil || err != nil {
			return e, err
		}
		// Discarded: the generation moved during the build.
	}
}

// unusableLocked says why no value may be built or served for generation g.
func (k *Cached[T]) unusableLocked(g uint64) error {
	var err error
	switch {
	case k.closed:
		return fmt.Errorf("cached value: %w: closed", ErrProviderGone)
	case k.gone != nil:
		err = k.gone
	case g == 0:
		err = fmt.Errorf("cached value: %w: the page shows no generation", ErrProviderGone)
	default:
		return nil
	}
	if k.cfg.rebuildWithoutProvider {
		return errFallback
	}
	return err
}

// lead runs the build of f and commits its value if the generation is
// still f.gen once the build has returned; otherwise the value is
// discarded and lead returns neither an entry nor an error.
func (k *Cached[T]) lead(ctx context.Context, f *cacheFlight) (*cacheEntry[T], error) {
	ended := false
	defer func() {
		if !ended { // build panicked: release the waiters, let the panic go on
			k.land(f, fmt.Errorf("cached value: the build for generation %d panicked", f.gen), false)
		}
	}()
	v, err := k.build(ctx, f.gen)
	ended = true
	if err != nil {
		err = fmt.Errorf("building the cached value for generation %d: %w", f.gen, err)
		k.land(f, err, ctx.Err() != nil)
		return nil, err
	}
	k.mu.Lock()
	if err := k.unusableLocked(f.gen); err != nil {
		k.mu.Unlock()
		k.release(f)
		return nil, err
	}
	// The re-check: the value is returned only if the page still shows the
	// generation it was built for now that the build has returned. A bump
	// that landed during the build makes it stale, whatever the build did.
	var e *cacheEntry[T]
	if k.c.Generation() == f.gen {
		e = &cacheEntry[T]{gen: f.gen, val: v}
		k.cur.Store(e)
		k.flight = nil
	}
	k.mu.Unlock()
	if e == nil {
		k.release(f)
		return nil, nil
	}
	close(f.done)
	select {
	case k.kick <- struct{}{}: // run acknowledges it
	default:
	}
	return e, nil
}

// land ends a failed flight.
func (k *Cached[T]) land(f *cacheFlight, err error, ctxErr bool) {
	f.err, f.ctxErr = err, ctxErr // published to the waiters by close(f.done)
	k.release(f)
}

// release ends a flight that committed nothing. What it wrote is discarded
// before the next flight can start, so that no discard ever lands on the
// next flight's value.
func (k *Cached[T]) release(f *cacheFlight) {
	if k.hooks.discard != nil {
		k.hooks.discard()
	}
	k.mu.Lock()
	k.flight = nil
	k.mu.Unlock()
	close(f.done)
}

// fresh builds an uncached value (RebuildWithoutProvider, no provider).
func (k *Cached[T]) fresh(ctx context.Context) (T, error) {
	var zero T
	for round := 0; round < maxCacheRounds; round++ {
		g := k.c.Generation()
		v, err := k.build(ctx, g)
		if err != nil {
			return zero, fmt.Errorf("building a value for generation %d (no provider): %w", g, err)
		}
		if k.c.Generation() == g {
			return v, nil
		}
	}
	return zero, fmt.Errorf("%w: the generation kept moving while a value was built", ErrNewGeneration)
}

// lose stops serving values: the provider (or the Client's connection) is
// gone, so the page no longer moves and a restore would go unseen.
func (k *Cached[T]) lose(err error) {
	k.mu.Lock()
	if k.gone == nil && !k.closed {
		k.gone = fmt.Errorf("cached value: %w", err)
	}
	k.cur.Store(nil)
	k.mu.Unlock()
	if k.hooks.discard != nil {
		k.hooks.discard()
	}
	k.report(err)
}

func (k *Cached[T]) report(err error) {
	if k.cfg.onError != nil {
		k.cfg.onError(err)
	}
}

// run is the goroutine the Cached owns: it follows one watcher after
// another until Close, or until the Client's own connection is gone for a
// Cached that needs it.
func (k *Cached[T]) run(ctx context.Context, w *Watcher) {
	defer close(k.done)
	// The first watcher starts with nothing to adapt: Get builds for the
	// generation it finds. After a re-watch, the value (if anyone wanted
	// one) is rebuilt for the provider's new generation at once.
	for refresh := false; w != nil; refresh = true {
		w = k.follow(ctx, w, refresh && k.wanted.Load())
	}
}

// follow serves w until it fails, and returns the next watcher (nil when
// the Cached is closed or can never serve again). w is closed on return.
// With refresh, it adapts before waiting for the first event.
func (k *Cached[T]) follow(ctx context.Context, w *Watcher, refresh bool) *Watcher {
	defer w.Close()
	var connDone <-chan struct{}
	if k.hooks.needConn {
		connDone = k.c.Done()
	}
	events, stop := make(chan error), make(chan struct{})
	defer close(stop)
	k.pumps.Add(1)
	go k.pump(ctx, w, events, stop)
	// The newest generation acknowledged on w: only there to save
	// redundant acks (the provider accepts an ack of the current
	// generation at any time). Not w.Generation(), which may already name
	// a generation announced after the watcher registered.
	var acked uint64
	for {
		if refresh {
			acked = k.adapt(ctx, w, acked)
		}
		refresh = true
		select {
		case err := <-events:
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			k.lose(fmt.Errorf("watcher: %w", err))
			return k.rewatch(ctx, connDone)
		case <-k.kick:
		case <-connDone:
			k.lose(fmt.Errorf("the client's connection holding the wipe region: %w", k.c.Err()))
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// pump turns w.Next into events: nil for each new generation (several
// bumps may arrive as one), then the error that ends the watcher. It
// returns once it has sent that error, or when follow is done with w.
func (k *Cached[T]) pump(ctx context.Context, w *Watcher, events chan<- error, stop <-chan struct{}) {
	defer k.pumps.Done()
	for {
		_, err := w.Next(ctx)
		select {
		case events <- err:
		case <-stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// adapt brings the value up to the current generation (if anyone asked for
// one) and acknowledges that generation; it returns the newest generation
// acknowledged.
func (k *Cached[T]) adapt(ctx context.Context, w *Watcher, acked uint64) uint64 {
	var g uint64
	if k.wanted.Load() {
		e, err := k.entry(ctx)
		if err != nil {
			if ctx.Err() == nil && err != errFallback {
				k.report(err)
			}
			return acked
		}
		g = e.gen
	} else {
		g = k.c.Generation() // nothing held: adapted to any generation
	}
	if g <= acked {
		return acked
	}
	switch err := w.Ack(ctx, g); {
	case err == nil:
		return g
	case errors.Is(err, ErrBadAck), errors.Is(err, ErrProviderGone), ctx.Err() != nil:
		// A newer generation (its event follows) or a failing watcher
		// (the pump reports it).
	default:
		k.report(err)
	}
	return acked
}

// rewatch registers a new watcher after the watcher's connection was lost
// while the Client's stays up, retrying with a growing delay; it returns nil
// when ctx ends, when connDone (if any) closes, or when the Client's own
// connection is gone: the Client's page is the sealed page of the provider
// it attached to, which never moves again once that provider is gone, so a
// Cached of that Client never serves again (attach a new Client).
func (k *Cached[T]) rewatch(ctx context.Context, connDone <-chan struct{}) *Watcher {
	delay := rewatchFirst
	for {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-connDone:
			t.Stop()
			return nil
		case <-k.c.Done():
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		delay = min(2*delay, rewatchMax)
		if connDone != nil {
			select {
			case <-connDone:
				return nil // the region's connection is gone: nothing to serve again
			default:
			}
		}
		wctx, cancel := context.WithTimeout(ctx, rewatchTimeout)
		w, err := k.c.Watch(wctx, NoReconnect())
		cancel()
		if err != nil {
			if !errors.Is(err, ErrNoProvider) && ctx.Err() == nil {
				k.report(fmt.Errorf("cached value: watching again: %w", err))
			}
			continue
		}
		// The provider must write the page this Client mapped: the page
		// keeps its inode across restarts, but a page replaced on disk
		// would never move here again.
		if pg, wg := k.c.Generation(), w.Generation(); pg < wg {
			w.Close()
			k.report(fmt.Errorf("cached value: %w: the provider is back on generation %d but this client's page shows %d: attach a new Client", ErrProviderGone, wg, pg))
			continue
		}
		k.mu.Lock()
		if k.closed {
			k.mu.Unlock()
			w.Close()
			return nil
		}
		k.gone = nil
		k.mu.Unlock()
		return w
	}
}

// Close stops the Cached's goroutine, closes its watcher (it no longer
// counts for orchestrator waits) and forgets the value; later Gets fail
// with an error matching ErrProviderGone. A build of the Cached's own
// goroutine sees its context end, and Close waits for it to return. Close
// is idempotent and always returns nil.
func (k *Cached[T]) Close() error {
	k.closeOnce.Do(func() {
		k.mu.Lock()
		k.closed = true
		k.cur.Store(nil)
		k.mu.Unlock()
		k.cancel()
		<-k.done
		k.pumps.Wait()
	})
	return nil
}
