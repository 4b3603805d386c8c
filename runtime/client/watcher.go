package client

import (
	"context"
	"fmt"
	"sync"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// WatchOption configures a watcher.
type WatchOption func(*watchConfig)

type watchConfig struct {
	label string
}

// WithLabel names the watcher: status lists it under this label, and a wait
// that times out names it (snapsafectl watch --label). At most 64 bytes of
// printable UTF-8.
func WithLabel(label string) WatchOption { return func(c *watchConfig) { c.label = label } }

// Watch registers a new watcher on its own connection. The watcher is up to
// date with the generation current when Watch returns.
func (c *Client) Watch(ctx context.Context, opts ...WatchOption) (*Watcher, error) {
	var cfg watchConfig
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.label) > wire.MaxLabel {
		return nil, fmt.Errorf("watch: label of %d bytes: at most %d", len(cfg.label), wire.MaxLabel)
	}
	w := &Watcher{wake: make(chan struct{}, 1)}
	var err error
	w.ctl, err = dialCtl(c.dir, w.announce, w.gone)
	if err != nil {
		return nil, err
	}
	r, err := w.ctl.call(ctx, wire.Watch, wire.EncodeWatch(0, cfg.label))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("watch: %w", err)
	}
	w.mu.Lock()
	w.seen = r.m.U64()
	w.latest = max(w.latest, w.seen)
	w.mu.Unlock()
	return w, nil
}

// Watcher is a tracked client: after every bump it is outdated until it
// acknowledges the new generation with Ack, and orchestrator waits wait for
// it. It stops counting when closed or when its process dies.
type Watcher struct {
	ctl    *ctlConn
	waitMu sync.Mutex

	mu     sync.Mutex
	seen   uint64 // the generation Next last returned (or the one at Watch)
	latest uint64 // the newest generation the provider announced
	wake   chan struct{}
	efd    fdNotifier // made by Fd; nil until then
	closed bool
}

// Generation returns the newest generation the provider announced.
func (w *Watcher) Generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// Next blocks until a generation newer than the last one it returned (or
// than the one current at Watch) is announced, and returns it. Several
// bumps in a row may be returned as one: only the newest matters. It
// returns an error matching ErrProviderGone when the provider goes away.
func (w *Watcher) Next(ctx context.Context) (uint64, error) {
	for {
		w.mu.Lock()
		if w.latest > w.seen {
			w.seen = w.latest
			if w.efd != nil {
				w.efd.drain()
			}
			w.mu.Unlock()
			return w.seen, nil
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-w.ctl.done:
			return 0, w.ctl.error()
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Ack acknowledges gen, which must be the current generation; any other
// value is refused with an error matching ErrBadAck and changes nothing.
func (w *Watcher) Ack(ctx context.Context, gen uint64) error {
	if _, err := w.ctl.call(ctx, wire.Ack, wire.U64(gen)); err != nil {
		return fmt.Errorf("ack of generation %d: %w", gen, err)
	}
	return nil
}

// Wait is the orchestrator wait on the watcher's own connection. Besides the
// results of Client.Wait, it returns ErrNewGeneration at once while this
// watcher has not acknowledged the current generation.
func (w *Watcher) Wait(ctx context.Context) error {
	w.waitMu.Lock()
	defer w.waitMu.Unlock()
	return w.ctl.wait(ctx, 0)
}

// Close stops watching. It is idempotent.
func (w *Watcher) Close() error {
	w.ctl.close()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.efd == nil {
		return nil
	}
	return w.efd.close()
}

// gone makes Fd readable when the provider goes away.
func (w *Watcher) gone() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.efd != nil {
		w.efd.signal()
	}
}

// announce records a generation event (called by the connection's reader).
func (w *Watcher) announce(gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen <= w.latest {
		return
	}
	w.latest = gen
	if gen > w.seen {
		if w.efd != nil {
			w.efd.signal()
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// fdNotifier is the descriptor behind Watcher.Fd: readable while an event
// is pending. Only systems that have one (Linux: eventfd) make it.
type fdNotifier interface {
	signal()
	drain()
	close() error
}
