package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/snapsafe/snapsafe/shm"
)

// CachedSecret holds secret bytes for the current generation in a wipe
// region (docs/ABI.md, section 4): memory the provider zeroes inside every
// bump, even while this process is not running, so that a snapshot taken
// after the bump holds no copy of the old secret and a restored clone
// cannot use it.
//
// The secret never leaves the region through this API: Use lends it to a
// callback, then checks that the generation did not move while the
// callback ran. Copying the secret out of the region would defeat the
// wipe; so does any copy the callback keeps after it returns (derived
// state, such as the pads of an HMAC, is the callback's own memory and the
// caller's to handle).
//
// Like Cached, a CachedSecret is filled once per generation (concurrent
// Uses share one fill), is a tracked watcher that acknowledges each new
// generation once filled for it, fills again proactively when a new
// generation is announced, and stops lending the secret when the provider
// goes away. Because the region belongs to the Client's own connection,
// which cannot outlive the provider, a CachedSecret whose provider went
// away stays unusable (Use fails with an error matching ErrProviderGone,
// unless RebuildWithoutProvider): attach a new Client and make a new
// CachedSecret when a provider is back.
//
// Concurrent Uses share the region without a lock between them and the
// fill: a fill only ever writes the secret of a newer generation than the
// one a running Use holds (or after that one was forgotten), so that Use's
// re-check fails, just as it does when the provider's wipe lands under it.
//
// A CachedSecret is safe for concurrent use. Its Client must stay open
// until Close has returned.
type CachedSecret struct {
	k      *Cached[struct{}]
	c      *Client
	size   int
	fill   func(ctx context.Context, gen uint64, secret []byte) error
	region *shm.Region
	secret []byte // region's first size bytes

	mu     sync.RWMutex // held shared while the region is read or written; Close unmaps it
	closed bool
}

// NewCachedSecret returns a CachedSecret of size bytes (1 to
// shm.MaxRegionSize) in a new wipe region of c. fill writes the secret for
// generation gen into secret; it is called only once the provider's wipe
// for gen has completed. It must not keep secret, nor call Use or Close.
// Nothing is filled until the first Use. ctx bounds the requests for the
// region and the watcher.
func NewCachedSecret(ctx context.Context, c *Client, size int, fill func(ctx context.Context, gen uint64, secret []byte) error, opts ...CacheOption) (*CachedSecret, error) {
	if c == nil || fill == nil {
		return nil, errors.New("cached secret: a Client and a fill function are needed")
	}
	r, err := c.Region(ctx, size)
	if err != nil {
		return nil, fmt.Errorf("cached secret: %w", err)
	}
	s := &CachedSecret{c: c, size: size, fill: fill, region: r, secret: r.Bytes()[:size:size]}
	s.k, err = newCached(ctx, c, s.build, cacheHooks{needConn: true, discard: s.wipe}, opts)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("cached secret: %w", err)
	}
	return s, nil
}

// build fills the region for generation g, following the client protocol
// of docs/ABI.md section 4: the secret is stored only once the page's wipe
// mark equals g, so that the provider's wipe for g cannot land after the
// store. Cached.lead commits the fill only if the generation is still g
// once it has returned.
func (s *CachedSecret) build(ctx context.Context, g uint64) (struct{}, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return struct{}{}, fmt.Errorf("%w: closed", ErrProviderGone)
	}
	switch err := s.c.Page().AwaitWipe(g); {
	case errors.Is(err, shm.ErrMoved):
		// The generation moved past g: lead discards this round (nothing
		// was stored) and the next one fills for the new generation.
		return struct{}{}, nil
	case err != nil:
		// The provider died inside a bump: the region may never be wiped.
		return struct{}{}, fmt.Errorf("%w: %w", ErrProviderGone, err)
	}
	return struct{}{}, s.fill(ctx, g, s.secret)
}

// wipe zeroes the region: a fill that was not committed, or a secret that
// may no longer be used.
func (s *CachedSecret) wipe() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		clear(s.secret)
	}
}

// Use calls fn with the secret for the current generation, filling it first
// if the generation moved since the last fill. fn must not modify secret,
// keep it (or a copy of it) after it returns, or call Use or Close.
//
// Once fn has returned, Use checks the generation again. If it moved while
// fn ran — a restore, or a bump whose wipe may have zeroed the secret under
// fn — Use returns an error matching ErrNewGeneration: whatever fn produced
// must then be discarded (it may come from a zeroed secret, or from the
// secret a clone also holds), and the caller should call Use again, which
// fills the secret for the new generation. Otherwise it returns fn's error.
// Fill errors, and the other errors of Cached.Get, are returned as they are.
func (s *CachedSecret) Use(ctx context.Context, fn func(secret []byte) error) error {
	e, err := s.k.entry(ctx)
	switch {
	case err == errFallback:
		return s.useFresh(ctx, fn)
	case err != nil:
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("cached secret: %w: closed", ErrProviderGone)
	}
	ferr := fn(s.secret)
	// The re-check (ABI section 4, step 4). The entry is compared too: it
	// is forgotten, and the region zeroed, when the provider goes away
	// without the generation moving.
	if s.c.Generation() != e.gen || s.k.cur.Load() != e {
		err := fmt.Errorf("%w: generation %d ended while its secret was in use: discard what was produced with it, and use the secret again", ErrNewGeneration, e.gen)
		if ferr != nil {
			err = fmt.Errorf("%w (the callback also failed: %w)", err, ferr)
		}
		return err
	}
	return ferr
}

// useFresh lends fn a secret filled for this call alone, in ordinary
// memory zeroed when fn returns (RebuildWithoutProvider, no provider).
func (s *CachedSecret) useFresh(ctx context.Context, fn func(secret []byte) error) error {
	buf := make([]byte, s.size)
	defer clear(buf)
	g := s.c.Generation()
	if err := s.fill(ctx, g, buf); err != nil {
		return fmt.Errorf("filling a secret for generation %d (no provider): %w", g, err)
	}
	ferr := fn(buf)
	if s.c.Generation() != g {
		return fmt.Errorf("%w: the generation moved while the secret was in use: discard what was produced with it", ErrNewGeneration)
	}
	return ferr
}

// Close stops the CachedSecret's goroutine and its watcher (as
// Cached.Close does), waits for running fills and Use callbacks to return,
// zeroes the secret and releases the region. It is idempotent and returns
// the error of unmapping the region, if any.
func (s *CachedSecret) Close() error {
	s.k.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	clear(s.secret)
	return s.region.Close()
}
