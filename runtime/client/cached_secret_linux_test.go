package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"github.com/snapsafe/snapsafe/shm"
)

// secretPattern is what the tests' fill writes for generation g (n >= 8):
// g, then 0xa5 bytes. It is never all zeros.
func secretPattern(g uint64, n int) []byte {
	b := bytes.Repeat([]byte{0xa5}, n)
	binary.LittleEndian.PutUint64(b, g)
	return b
}

// fills records what a fill saw when it was called.
type fills struct {
	hold func(g uint64) // if set, called first: a test holds a fill back

	mu  sync.Mutex
	bad []string // protocol violations
	n   map[uint64]int
}

func (f *fills) fill(c *Client) func(ctx context.Context, g uint64, secret []byte) error {
	return func(ctx context.Context, g uint64, secret []byte) error {
		if f.hold != nil {
			f.hold(g)
		}
		// Read before anything else: the wipe mark, then the region.
		wiped, zero := c.Page().Wiped(), !bytes.ContainsFunc(secret, func(r rune) bool { return r != 0 })
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.n == nil {
			f.n = make(map[uint64]int)
		}
		f.n[g]++
		if wiped < g {
			f.bad = append(f.bad, fmt.Sprintf("fill for generation %d before the wipe mark reached it (%d)", g, wiped))
		}
		if !zero {
			f.bad = append(f.bad, fmt.Sprintf("fill for generation %d into a region that was not wiped", g))
		}
		copy(secret, secretPattern(g, len(secret)))
		return nil
	}
}

func (f *fills) of(g uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[g]
}

func (f *fills) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bad {
		t.Error(b)
	}
}

func newTestSecret(t *testing.T, c *Client, size int, fill func(context.Context, uint64, []byte) error, opts ...CacheOption) *CachedSecret {
	t.Helper()
	s, err := NewCachedSecret(cacheCtx(t), c, size, fill, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCachedSecret: the secret is filled once per generation after the
// wipe mark; a bump zeroes it under a running callback, whose Use then
// fails with ErrNewGeneration; the Cached refills and acknowledges the new
// generation by itself.
func TestCachedSecret(t *testing.T) {
	e := newCacheEnv(t)
	const size = 32
	g := e.c.Generation()
	checked := make(chan struct{})
	// The refill after the bump waits until the callback has seen the wipe.
	g0 := g
	f := fills{hold: func(fg uint64) {
		if fg > g0 {
			<-checked
		}
	}}
	s := newTestSecret(t, e.c, size, f.fill(e.c))
	ctx := cacheCtx(t)
	use := func(want uint64) error {
		return s.Use(ctx, func(secret []byte) error {
			if !bytes.Equal(secret, secretPattern(want, size)) {
				return fmt.Errorf("secret %x, want the one filled for generation %d", secret, want)
			}
			return nil
		})
	}
	for range 3 {
		if err := use(g); err != nil {
			t.Fatal(err)
		}
	}
	if f.of(g) != 1 {
		t.Fatalf("%d fills for generation %d, want 1", f.of(g), g)
	}

	// A callback that straddles a bump: the provider zeroes the region
	// under it, and its output must be discarded.
	err := s.Use(ctx, func(secret []byte) error {
		if !bytes.Equal(secret, secretPattern(g, size)) {
			return fmt.Errorf("secret %x before the bump", secret)
		}
		e.bump()
		defer close(checked)
		if !bytes.Equal(secret, make([]byte, size)) {
			return fmt.Errorf("secret %x after the bump, want zeros (the provider wipes the region)", secret)
		}
		return nil
	})
	if !errors.Is(err, ErrNewGeneration) {
		t.Fatalf("Use across a bump: %v, want ErrNewGeneration", err)
	}
	g++
	eventually.True(t, "the secret refilled and acknowledged", func() bool {
		_, o := e.status()
		return o == 0 && f.of(g) == 1
	})
	if err := use(g); err != nil {
		t.Fatal(err)
	}
	if f.of(g) != 1 {
		t.Fatalf("%d fills for generation %d, want 1", f.of(g), g)
	}
	f.check(t)
}

// TestCachedSecretAwaitsWipe races Uses against bumps whose wipe takes
// milliseconds (the provider holds 15 MiB of other clients' regions): a
// Use that sees the new generation during the wipe must not fill before
// the wipe mark reaches it, nor return a secret the wipe zeroed.
func TestCachedSecretAwaitsWipe(t *testing.T) {
	e := newCacheEnv(t)
	for range 15 {
		other, err := Attach(e.dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { other.Close() })
		for range provider.MaxRegionsPerConn {
			r, err := other.Region(cacheCtx(t), shm.MaxRegionSize)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
		}
	}
	var f fills
	const size = 64
	s := newTestSecret(t, e.c, size, f.fill(e.c))
	ctx := cacheCtx(t)
	var (
		stop   atomic.Bool
		served atomic.Uint64
		wg     sync.WaitGroup
	)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var got []byte
				err := s.Use(ctx, func(secret []byte) error {
					got = append(got[:0], secret...)
					return nil
				})
				if errors.Is(err, ErrNewGeneration) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				g := binary.LittleEndian.Uint64(got)
				if !bytes.Equal(got, secretPattern(g, size)) {
					t.Errorf("Use succeeded with secret %x", got)
					return
				}
				served.Store(g)
			}
		}()
	}
	for range 10 {
		g := e.bump()
		eventually.True(t, fmt.Sprintf("a Use with the secret of generation %d", g), func() bool {
			return served.Load() >= g
		})
	}
	stop.Store(true)
	wg.Wait()
	f.check(t)
}

// TestCachedSecretProviderGone: once the provider is gone Use fails with
// ErrProviderGone, the secret is zeroed, and Close still works.
func TestCachedSecretProviderGone(t *testing.T) {
	e := newCacheEnv(t)
	var f fills
	s := newTestSecret(t, e.c, 16, f.fill(e.c))
	ctx := cacheCtx(t)
	if err := s.Use(ctx, func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.tp.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "Use failing with ErrProviderGone", func() bool {
		return errors.Is(s.Use(ctx, func([]byte) error { return nil }), ErrProviderGone)
	})
	s.mu.RLock()
	zero := bytes.Equal(s.secret, make([]byte, 16))
	s.mu.RUnlock()
	if !zero {
		t.Fatal("the secret was not zeroed when the provider went away")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Use(ctx, func([]byte) error { return nil }); !errors.Is(err, ErrProviderGone) {
		t.Fatalf("Use after Close: %v, want ErrProviderGone", err)
	}
	f.check(t)
}

// TestCachedSecretRebuildWithoutProvider: with the option, each Use gets a
// secret filled for it alone while the provider is gone.
func TestCachedSecretRebuildWithoutProvider(t *testing.T) {
	e := newCacheEnv(t)
	var n atomic.Int64
	s := newTestSecret(t, e.c, 8, func(ctx context.Context, g uint64, secret []byte) error {
		n.Add(1)
		copy(secret, secretPattern(g, len(secret)))
		return nil
	}, RebuildWithoutProvider())
	ctx := cacheCtx(t)
	if err := e.tp.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the CachedSecret noticing the provider is gone", func() bool {
		s.k.mu.Lock()
		defer s.k.mu.Unlock()
		return s.k.gone != nil
	})
	before := n.Load()
	g := e.c.Generation()
	for range 3 {
		if err := s.Use(ctx, func(secret []byte) error {
			if !bytes.Equal(secret, secretPattern(g, 8)) {
				return fmt.Errorf("secret %x", secret)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if d := n.Load() - before; d != 3 {
		t.Fatalf("3 Uses without a provider ran %d fills, want 3", d)
	}
}
