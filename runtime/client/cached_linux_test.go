package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"github.com/snapsafe/snapsafe/shm"
)

// cacheEnv is an in-process provider and a client attached to it.
type cacheEnv struct {
	t   *testing.T
	dir string
	tp  *testprovider.Provider
	c   *Client
}

func newCacheEnv(t *testing.T) *cacheEnv {
	t.Helper()
	e := &cacheEnv{t: t, dir: t.TempDir()}
	e.tp = testprovider.Start(t, provider.Config{Dir: e.dir})
	c, err := Attach(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e.c = c
	return e
}

// bump forces a new generation and returns it; when Bump returns, the page
// shows it and every region is wiped.
func (e *cacheEnv) bump() uint64 {
	e.t.Helper()
	g, err := e.tp.Bump(shm.ReasonForced, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// status is the provider's own view: watchers and outdated watchers.
func (e *cacheEnv) status() (watchers, outdated int) {
	s := e.tp.Status()
	return s.Watchers, s.Outdated
}

func cacheCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), eventually.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// builds counts a build function's calls per generation.
type builds struct {
	mu sync.Mutex
	n  map[uint64]int
}

func (b *builds) add(g uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n == nil {
		b.n = make(map[uint64]int)
	}
	b.n[g]++
}

func (b *builds) of(g uint64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n[g]
}

func (b *builds) total() (n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.n {
		n += v
	}
	return n
}

// value is what the tests' build functions make: the generation the build
// was given, and whether the page had already moved past it when the build
// returned (such a value must never be returned).
type value struct {
	gen   uint64
	stale bool
}

func newTestCached(t *testing.T, c *Client, build func(ctx context.Context, gen uint64) (value, error), opts ...CacheOption) *Cached[value] {
	t.Helper()
	k, err := NewCached(cacheCtx(t), c, build, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// TestCachedNeverStale races readers against bumps, some of which land in
// the middle of a build. For every Get, with before and after the page's
// generation loaded just before and just after it:
//   - before <= v.gen <= after: no Get returns a value built for a
//     generation older than one the page showed when the Get began;
//   - !v.stale: no Get returns a value whose build a bump overlapped (the
//     page had moved past v.gen when the build returned);
//   - each generation is built at most once (builds never fail here, and a
//     discarded build's generation is never current again).
func TestCachedNeverStale(t *testing.T) {
	e := newCacheEnv(t)
	const rounds = 40
	var (
		bs       builds
		overlap  atomic.Uint64 // a build for this generation blocks until the bump that follows it
		bumped   = make(chan struct{}, 1)
		started  atomic.Uint64 // the newest generation a build began for
		served   atomic.Uint64 // the newest generation a Get returned
		stop     atomic.Bool
		newGens  atomic.Int64
		getCount atomic.Int64
	)
	build := func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		started.Store(g)
		if g == overlap.Load() {
			select {
			case <-bumped:
			case <-ctx.Done():
				return value{}, ctx.Err()
			}
		}
		runtime.Gosched()
		return value{gen: g, stale: e.c.Generation() != g}, nil
	}
	k := newTestCached(t, e.c, build)
	ctx := cacheCtx(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				before := e.c.Generation()
				v, err := k.Get(ctx)
				after := e.c.Generation()
				if errors.Is(err, ErrNewGeneration) {
					newGens.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				getCount.Add(1)
				if v.stale || v.gen < before || v.gen > after {
					t.Errorf("Get between generations %d and %d returned a value built for %d (stale build: %v)", before, after, v.gen, v.stale)
					return
				}
				for s := served.Load(); v.gen > s && !served.CompareAndSwap(s, v.gen); s = served.Load() {
				}
			}
		}()
	}
	for i := range rounds {
		g := e.c.Generation()
		if i%2 == 0 {
			// The build for the next generation blocks until the bump after
			// it: its value is stale when it returns.
			overlap.Store(g + 1)
			if got := e.bump(); got != g+1 {
				t.Fatalf("bump: generation %d, want %d", got, g+1)
			}
			eventually.True(t, fmt.Sprintf("a build for generation %d", g+1), func() bool { return started.Load() == g+1 })
			e.bump()
			bumped <- struct{}{}
		} else {
			e.bump()
		}
		cur := e.c.Generation()
		eventually.True(t, fmt.Sprintf("a Get returning generation %d", cur), func() bool { return served.Load() >= cur })
	}
	stop.Store(true)
	wg.Wait()
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for g, n := range bs.n {
		if n > 1 {
			t.Errorf("generation %d built %d times, want at most 1", g, n)
		}
	}
	t.Logf("%d Gets, %d gave up with ErrNewGeneration, %d builds", getCount.Load(), newGens.Load(), len(bs.n))
}

// TestCachedGetFastPath: while the generation holds, Get allocates nothing
// and takes no lock (it returns while the test holds the Cached's mutex).
func TestCachedGetFastPath(t *testing.T) {
	e := newCacheEnv(t)
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) { return value{gen: g}, nil })
	ctx := cacheCtx(t)
	if _, err := k.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { k.Get(ctx) }); n != 0 {
		t.Fatalf("Get allocates %v times per call, want 0", n)
	}
	k.mu.Lock()
	defer k.mu.Unlock() // also when eventually fails: Close needs it
	var done atomic.Bool
	go func() {
		if v, err := k.Get(ctx); err != nil || v.gen != e.c.Generation() {
			t.Errorf("Get: %+v, %v", v, err)
		}
		done.Store(true)
	}()
	eventually.True(t, "Get returning while the Cached's mutex is held", done.Load)
}

// TestCachedRecheckAfterBuild: a bump during the build discards its value;
// Get builds again and returns the value for the new generation.
func TestCachedRecheckAfterBuild(t *testing.T) {
	e := newCacheEnv(t)
	var bs builds
	var once sync.Once
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		once.Do(func() { e.bump() })
		return value{gen: g}, nil
	})
	g := e.c.Generation()
	v, err := k.Get(cacheCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if now := e.c.Generation(); v.gen != now || now != g+1 {
		t.Fatalf("Get returned the value built for generation %d; the page shows %d (bumped during the build for %d)", v.gen, now, g)
	}
	if bs.of(g) != 1 || bs.of(g+1) != 1 {
		t.Fatalf("builds: %d for generation %d, %d for %d; want 1 and 1", bs.of(g), g, bs.of(g+1), g+1)
	}
}

// TestCachedOneBuildPerGeneration: N concurrent Gets share one build, at
// start-up and after a bump.
func TestCachedOneBuildPerGeneration(t *testing.T) {
	e := newCacheEnv(t)
	const n = 8
	var bs builds
	var gate atomic.Pointer[chan struct{}] // builds wait until it is closed
	release := make(chan struct{})
	gate.Store(&release)
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		select {
		case <-*gate.Load():
		case <-ctx.Done():
			return value{}, ctx.Err()
		}
		return value{gen: g}, nil
	})
	ctx := cacheCtx(t)
	for round := range 2 {
		if round == 1 {
			// The Cached's own goroutine rebuilds after this bump too; its
			// build is one of the n + 1 callers that share one build.
			next := make(chan struct{})
			gate.Store(&next)
			e.bump()
		}
		g := e.c.Generation()
		var wg sync.WaitGroup
		errc := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := k.Get(ctx)
				if err == nil && v.gen != g {
					err = fmt.Errorf("Get returned generation %d, want %d", v.gen, g)
				}
				errc <- err
			}()
		}
		// Release the build once every Get either built or waits for a build:
		// one build and n-1 waiters, unless Gets build on their own.
		waiters := func() int {
			k.mu.Lock()
			defer k.mu.Unlock()
			if k.flight == nil {
				return 0
			}
			return k.flight.waiters
		}
		eventually.True(t, "every Get building or waiting", func() bool { return bs.of(g)+waiters() >= n })
		close(*gate.Load())
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := bs.of(g); got != 1 {
			t.Fatalf("round %d: %d concurrent Gets ran %d builds for generation %d, want 1", round, n, got, g)
		}
	}
}

// TestCachedAcks: after a bump the Cached rebuilds and acknowledges by
// itself, with no Get; a Cached that was never read acknowledges at once
// without building; Get then serves the rebuilt value.
func TestCachedAcks(t *testing.T) {
	e := newCacheEnv(t)
	var bs, idle builds
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		return value{gen: g}, nil
	})
	newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		idle.add(g)
		return value{gen: g}, nil
	})
	if w, o := e.status(); w != 2 || o != 0 {
		t.Fatalf("status: %d watchers, %d outdated; want 2, 0", w, o)
	}
	ctx := cacheCtx(t)
	if _, err := k.Get(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		g := e.bump()
		eventually.True(t, fmt.Sprintf("both caches acknowledging generation %d", g), func() bool {
			_, o := e.status()
			return o == 0
		})
		if bs.of(g) != 1 {
			t.Fatalf("generation %d acknowledged after %d builds, want 1 (the background rebuild)", g, bs.of(g))
		}
		if err := e.c.Wait(ctx); err != nil {
			t.Fatalf("orchestrator wait after the rebuild: %v", err)
		}
		if v, err := k.Get(ctx); err != nil || v.gen != g || bs.of(g) != 1 {
			t.Fatalf("Get after the background rebuild: %+v, %v, %d builds; want generation %d, 1 build", v, err, bs.of(g), g)
		}
	}
	if n := idle.total(); n != 0 {
		t.Fatalf("a Cached nobody read built %d values", n)
	}
}

// TestCachedBuildError: a failed build leaves the generation
// unacknowledged; Get returns the error and the next Get builds again; a
// successful Get's value is then acknowledged.
func TestCachedBuildError(t *testing.T) {
	e := newCacheEnv(t)
	errBoom := errors.New("boom")
	var (
		bs       builds
		fail     atomic.Bool
		reported = make(chan error, 16)
	)
	fail.Store(true)
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		if fail.Load() {
			return value{}, errBoom
		}
		return value{gen: g}, nil
	}, OnCacheError(func(err error) {
		select {
		case reported <- err:
		default:
		}
	}))
	ctx := cacheCtx(t)
	// A failed Get commits nothing and kicks nothing: from here on the
	// Cached's goroutine acts on the bump alone.
	if _, err := k.Get(ctx); !errors.Is(err, errBoom) {
		t.Fatalf("Get with a failing build: %v, want the build's error", err)
	}
	g := e.bump()
	// The background rebuild fails and is reported (the report is the
	// fence: the Cached has decided not to acknowledge).
	select {
	case err := <-reported:
		if !errors.Is(err, errBoom) {
			t.Fatalf("reported %v, want the build's error", err)
		}
	case <-ctx.Done():
		t.Fatal("the failed background build was not reported")
	}
	if _, o := e.status(); o != 1 || bs.of(g) != 1 {
		t.Fatalf("after a failed build: %d outdated, %d builds; want 1, 1", o, bs.of(g))
	}
	if _, err := k.Get(ctx); !errors.Is(err, errBoom) {
		t.Fatalf("Get with a failing build: %v, want the build's error", err)
	}
	if _, o := e.status(); o != 1 || bs.of(g) != 2 {
		t.Fatalf("after a failed Get: %d outdated, %d builds; want 1, 2 (Get retries)", o, bs.of(g))
	}
	fail.Store(false)
	if v, err := k.Get(ctx); err != nil || v.gen != g {
		t.Fatalf("Get once the build works: %+v, %v", v, err)
	}
	eventually.True(t, "the value Get built acknowledged", func() bool {
		_, o := e.status()
		return o == 0
	})
	if bs.of(g) != 3 {
		t.Fatalf("%d builds for generation %d, want 3", bs.of(g), g)
	}
}

// TestCachedContextOfLeader: a Get whose context ends during the build it
// leads does not fail the Gets waiting for it; one of them builds again.
func TestCachedContextOfLeader(t *testing.T) {
	e := newCacheEnv(t)
	var bs builds
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		if bs.total() == 1 {
			<-ctx.Done()
			return value{}, ctx.Err()
		}
		return value{gen: g}, nil
	})
	lctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lerr := make(chan error, 1)
	go func() {
		_, err := k.Get(lctx)
		lerr <- err
	}()
	eventually.True(t, "the first build running", func() bool { return bs.total() == 1 })
	werr := make(chan error, 1)
	go func() {
		v, err := k.Get(cacheCtx(t))
		if err == nil && v.gen != e.c.Generation() {
			err = fmt.Errorf("generation %d", v.gen)
		}
		werr <- err
	}()
	eventually.True(t, "a Get waiting for the build", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.flight != nil && k.flight.waiters == 1
	})
	cancel()
	if err := <-lerr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the leader's Get: %v, want context.Canceled", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("the waiting Get: %v, want the value of a second build", err)
	}
}

// TestCachedBuildPanics: a panicking build releases its waiters and the
// next Get builds again.
func TestCachedBuildPanics(t *testing.T) {
	e := newCacheEnv(t)
	var calls atomic.Int64
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		if calls.Add(1) == 1 {
			panic("build failed")
		}
		return value{gen: g}, nil
	})
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the build's panic did not reach Get")
			}
		}()
		k.Get(cacheCtx(t))
	}()
	if v, err := k.Get(cacheCtx(t)); err != nil || v.gen != e.c.Generation() {
		t.Fatalf("Get after a panicking build: %+v, %v", v, err)
	}
}

// TestCachedProviderGone: once the provider is gone Get fails with
// ErrProviderGone (the page no longer moves: a restore would go unseen),
// and keeps failing when a provider starts again on the directory, since
// the Client's sealed page belongs to the provider that is gone; a new
// Client's Cached serves the new provider's generation.
func TestCachedProviderGone(t *testing.T) {
	e := newCacheEnv(t)
	var bs builds
	reported := make(chan error, 16)
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		return value{gen: g}, nil
	}, OnCacheError(func(err error) {
		select {
		case reported <- err:
		default:
		}
	}))
	ctx := cacheCtx(t)
	if _, err := k.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.tp.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "Get failing with ErrProviderGone", func() bool {
		_, err := k.Get(ctx)
		return errors.Is(err, ErrProviderGone)
	})
	if err := <-reported; !errors.Is(err, ErrProviderGone) {
		t.Fatalf("reported %v, want ErrProviderGone", err)
	}

	// A new provider does not revive it: its Client's page belongs to the
	// provider that is gone. Fence: the new provider is serving, and a new
	// Client's Cached adapts to it, while the old one still refuses.
	tp := testprovider.Start(t, provider.Config{Dir: e.dir}) // bumps at start
	c2, err := Attach(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var bs2 builds
	k2 := newTestCached(t, c2, func(ctx context.Context, g uint64) (value, error) {
		bs2.add(g)
		return value{gen: g}, nil
	})
	g := tp.Generation()
	if v, err := k2.Get(ctx); err != nil || v.gen != g {
		t.Fatalf("a new Client's Cached after the restart: %+v, %v; want generation %d", v, err, g)
	}
	if _, err := k.Get(ctx); !errors.Is(err, ErrProviderGone) {
		t.Fatalf("the old Client's Cached after the restart: %v, want ErrProviderGone", err)
	}
	if bs.of(g) != 0 {
		t.Fatalf("the old Client's Cached built for the new provider's generation %d", g)
	}

}

// TestCachedRebuildWithoutProvider: with the option, Get builds a fresh
// value on every call while the provider is gone.
func TestCachedRebuildWithoutProvider(t *testing.T) {
	e := newCacheEnv(t)
	var bs builds
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) {
		bs.add(g)
		return value{gen: g}, nil
	}, RebuildWithoutProvider())
	ctx := cacheCtx(t)
	g := e.c.Generation()
	for range 3 {
		if _, err := k.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if bs.of(g) != 1 {
		t.Fatalf("%d builds with a provider, want 1", bs.of(g))
	}
	if err := e.tp.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the Cached noticing the provider is gone", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.gone != nil
	})
	before := bs.of(g)
	for range 3 {
		if v, err := k.Get(ctx); err != nil || v.gen != g {
			t.Fatalf("Get without a provider: %+v, %v", v, err)
		}
	}
	if n := bs.of(g) - before; n != 3 {
		t.Fatalf("3 Gets without a provider ran %d builds, want 3", n)
	}
}

// TestCachedClose: Close is idempotent, ends the watcher and fails later
// Gets.
func TestCachedClose(t *testing.T) {
	e := newCacheEnv(t)
	k := newTestCached(t, e.c, func(ctx context.Context, g uint64) (value, error) { return value{gen: g}, nil })
	ctx := cacheCtx(t)
	if _, err := k.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx); !errors.Is(err, ErrProviderGone) {
		t.Fatalf("Get after Close: %v, want ErrProviderGone", err)
	}
	eventually.True(t, "the watcher gone", func() bool {
		w, _ := e.status()
		return w == 0
	})
}
