package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// WatchOption configures a watcher.
type WatchOption func(*watchConfig)

type watchConfig struct {
	label       string
	noReconnect bool
	lost        func(error)
	regained    func(uint64)
}

// WithLabel names the watcher: status lists it under this label, and a wait
// that times out names it (snapsafectl watch --label). At most 64 bytes of
// printable UTF-8.
func WithLabel(label string) WatchOption { return func(c *watchConfig) { c.label = label } }

// NoReconnect makes the watcher end with its connection, as watchers did
// before they re-attached: once the provider goes away, Next returns an
// error matching ErrProviderGone and Fd becomes readable.
func NoReconnect() WatchOption { return func(c *watchConfig) { c.noReconnect = true } }

// OnConnection reports the watcher's connection to the provider: lost (if
// not nil) is called with the reason when the connection ends, and again
// whenever re-attaching fails for another reason than before, other than
// there being no provider yet (the provider's directory is no longer
// trusted, or it refused the connection); regained (if not nil) with the
// provider's generation once the watcher has registered again. Both run on
// the watcher's reconnect goroutine, before Next returns that generation:
// they must return promptly and must not call Close. They are never called
// with NoReconnect.
func OnConnection(lost func(err error), regained func(gen uint64)) WatchOption {
	return func(c *watchConfig) { c.lost, c.regained = lost, regained }
}

// Re-attaching waits reconnectMin after the connection ended, then doubles
// the wait between attempts up to reconnectMax; each wait is shortened by a
// random part of up to a half, so that the watchers of a restarted provider
// do not all come back at once.
const (
	reconnectMin = 20 * time.Millisecond
	reconnectMax = 500 * time.Millisecond
)

// errClosed is what a closed watcher reports.
var errClosed = fmt.Errorf("%w: closed by the client", ErrProviderGone)

// Watch registers a new watcher on its own connection. The watcher is up to
// date with the generation current when Watch returns. The connection is
// checked like Attach's: an error matching ErrUntrusted or ErrRefused is
// returned as Attach would.
func (c *Client) Watch(ctx context.Context, opts ...WatchOption) (*Watcher, error) {
	var cfg watchConfig
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.label) > wire.MaxLabel {
		return nil, fmt.Errorf("watch: label of %d bytes: at most %d", len(cfg.label), wire.MaxLabel)
	}
	w := &Watcher{
		dir:  c.dir,
		cfg:  cfg,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	ctl, _, err := w.register(ctx, true)
	if err != nil {
		w.cancel()
		return nil, err
	}
	if cfg.noReconnect {
		close(w.done)
	} else {
		go w.reconnect(ctl)
	}
	return w, nil
}

// Watcher is a tracked client: after every bump it is outdated until it
// acknowledges the new generation with Ack, and orchestrator waits wait for
// it. It stops counting when closed or when its process dies.
//
// A watcher outlives its provider. When the connection ends (the provider
// stopped, or died), it dials the same state directory again, with the
// checks Attach makes (it never attaches to a provider it would not trust;
// an untrusted directory or a refusal only makes it try again later), at
// first after 20 ms, then less and less often, at least every 500 ms. Once
// a provider is back it registers again, naming the generation it last
// acknowledged, so that the new provider counts it outdated; Next then
// returns the new provider's generation (its start-up generation) as a new
// one, to rebuild for and acknowledge. While it is disconnected,
// Generation reports the last generation known, Ack and Wait fail with an
// error matching ErrProviderGone, and Next waits. NoReconnect turns this
// off.
//
// Goroutines: the connection has a reader goroutine; the watcher, unless
// NoReconnect, one reconnect goroutine that waits for the connection to end
// and re-attaches. Both are the watcher's: Close stops them and returns
// once the reconnect goroutine has ended.
type Watcher struct {
	dir    string
	cfg    watchConfig
	waitMu sync.Mutex
	ctx    context.Context // ends with Close; re-attaching stops with it
	cancel context.CancelFunc
	done   chan struct{} // closed when the reconnect goroutine has ended

	mu         sync.Mutex
	ctl        *ctlConn // the current connection; nil while re-attaching
	epoch      uint64   // counts connections; events of an older one are ignored
	registered bool     // the current connection's watch request was answered
	early      uint64   // the newest event on the current connection before that
	seen       uint64   // the generation Next last returned (or the one at Watch)
	latest     uint64   // the newest generation the provider announced
	acked      uint64   // the generation last acknowledged (or up to date with at Watch)
	restarted  bool     // a new provider's generation is pending for Next
	wake       chan struct{}
	efd        fdNotifier // made by Fd; nil until then
	closed     bool
}

// register dials the provider and registers the watcher on the new
// connection, which becomes the current one, and returns it with the
// provider's generation. The first registration is up to date. A later one
// names the generation last acknowledged, so that the provider counts the
// watcher outdated; its events are held back until restart makes the
// provider's generation pending for Next.
func (w *Watcher) register(ctx context.Context, first bool) (*ctlConn, uint64, error) {
	w.mu.Lock()
	w.epoch++
	epoch := w.epoch
	w.registered, w.early = false, 0
	seen := w.acked
	w.mu.Unlock()
	ctl, err := dialCtl(w.dir, func(gen uint64) { w.announce(epoch, gen) }, func() { w.gone(epoch) })
	if err != nil {
		return nil, 0, err
	}
	r, err := ctl.call(ctx, wire.Watch, wire.EncodeWatch(seen, w.cfg.label))
	if err != nil {
		ctl.close()
		return nil, 0, fmt.Errorf("watch: %w", err)
	}
	cur := r.m.U64()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock() // closing calls gone, which takes mu
		ctl.close()
		return nil, 0, errClosed
	}
	w.ctl = ctl
	if first {
		// An event may have overtaken the reply.
		w.registered = true
		w.seen, w.latest, w.acked = cur, max(cur, w.early), cur
	}
	w.mu.Unlock()
	return ctl, cur, nil
}

// restart makes the generation of the provider the watcher registered
// with again on ctl pending for Next: it is new to the watcher even if it
// is not above the old provider's (a provider that lost its state starts
// again at 1).
func (w *Watcher) restart(ctl *ctlConn, cur uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctl != ctl {
		return // closed meanwhile
	}
	w.registered = true
	w.latest, w.restarted = max(cur, w.early), true
	w.signalLocked()
}

// reconnect is the watcher's reconnect goroutine: it waits for the
// connection ctl to end and re-attaches, until Close.
func (w *Watcher) reconnect(ctl *ctlConn) {
	defer close(w.done)
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-ctl.done:
		}
		if w.ctx.Err() != nil {
			return // closed: Close closed the connection
		}
		w.mu.Lock()
		if w.ctl == ctl {
			w.ctl = nil
		}
		w.mu.Unlock()
		if w.cfg.lost != nil {
			w.cfg.lost(ctl.error())
		}
		if ctl = w.reattach(); ctl == nil {
			return
		}
	}
}

// reattach dials and registers again, with backoff, until it succeeds or
// the watcher is closed (then it returns nil).
func (w *Watcher) reattach() *ctlConn {
	delay := reconnectMin
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	reported := ""
	for {
		timer.Reset(delay - rand.N(delay/2))
		select {
		case <-w.ctx.Done():
			return nil
		case <-timer.C:
		}
		ctl, cur, err := w.register(w.ctx, false)
		if err == nil {
			if w.cfg.regained != nil {
				w.cfg.regained(cur)
			}
			w.restart(ctl, cur)
			return ctl
		}
		if w.ctx.Err() != nil {
			return nil
		}
		// No provider yet is what re-attaching expects; anything else
		// (an untrusted directory, a refusal) is worth saying, once.
		if !errors.Is(err, ErrNoProvider) && err.Error() != reported && w.cfg.lost != nil {
			reported = err.Error()
			w.cfg.lost(err)
		}
		delay = min(2*delay, reconnectMax)
	}
}

// current returns the current connection and its epoch, or an error
// matching ErrProviderGone while there is none.
func (w *Watcher) current() (*ctlConn, uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return nil, 0, errClosed
	case w.ctl == nil:
		return nil, 0, fmt.Errorf("%w: re-attaching to the provider on %s", ErrProviderGone, w.dir)
	}
	return w.ctl, w.epoch, nil
}

// Generation returns the newest generation the provider announced (while
// re-attaching, the last one known).
func (w *Watcher) Generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// Next blocks until a generation newer than the last one it returned (or
// than the one current at Watch) is announced, and returns it. Several
// bumps in a row may be returned as one: only the newest matters. After
// the watcher re-attached to a new provider, Next returns that provider's
// generation. It returns an error matching ErrProviderGone once the watcher
// is closed, or, with NoReconnect, when the provider goes away.
func (w *Watcher) Next(ctx context.Context) (uint64, error) {
	for {
		w.mu.Lock()
		if w.restarted || w.latest > w.seen {
			w.seen, w.restarted = w.latest, false
			if w.efd != nil {
				w.efd.drain()
			}
			w.mu.Unlock()
			return w.seen, nil
		}
		ended, ctl := w.ctx.Done(), (*ctlConn)(nil)
		if w.cfg.noReconnect {
			ctl = w.ctl
			ended = ctl.done
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return 0, errClosed
		}
		select {
		case <-w.wake:
		case <-ended:
			if ctl != nil {
				return 0, ctl.error()
			}
			return 0, errClosed
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Ack acknowledges gen, which must be the current generation; any other
// value is refused with an error matching ErrBadAck and changes nothing.
// While the watcher is re-attaching it fails with an error matching
// ErrProviderGone: the generation is then the gone provider's, and Next
// returns the new provider's once it is back.
func (w *Watcher) Ack(ctx context.Context, gen uint64) error {
	ctl, epoch, err := w.current()
	if err == nil {
		_, err = ctl.call(ctx, wire.Ack, wire.U64(gen))
	}
	if err != nil {
		return fmt.Errorf("ack of generation %d: %w", gen, err)
	}
	w.mu.Lock()
	if w.epoch == epoch {
		w.acked = gen
	}
	w.mu.Unlock()
	return nil
}

// Wait is the orchestrator wait on the watcher's own connection. Besides the
// results of Client.Wait, it returns ErrNewGeneration at once while this
// watcher has not acknowledged the current generation. It does not wait
// for a provider to come back: while the watcher is re-attaching, and when
// the connection ends during the wait, it fails with an error matching
// ErrProviderGone (a new provider's generation is new to the watcher
// anyway: Next it, acknowledge it, and wait again).
func (w *Watcher) Wait(ctx context.Context) error {
	w.waitMu.Lock()
	defer w.waitMu.Unlock()
	ctl, _, err := w.current()
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	return ctl.wait(ctx, 0)
}

// Close stops watching: it closes the connection and ends the reconnect
// goroutine, and returns once that has ended. It is idempotent.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	ctl := w.ctl
	w.cancel()
	w.mu.Unlock()
	if ctl != nil {
		ctl.close()
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.efd == nil {
		return nil
	}
	return w.efd.close()
}

// gone makes Fd readable when the provider goes away, for a watcher that
// does not re-attach (called by the connection's reader).
func (w *Watcher) gone(epoch uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cfg.noReconnect && w.epoch == epoch && w.efd != nil {
		w.efd.signal()
	}
}

// announce records a generation event of the connection of epoch (called
// by that connection's reader).
func (w *Watcher) announce(epoch, gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case epoch != w.epoch:
		return // a connection that has since been replaced
	case !w.registered:
		w.early = max(w.early, gen)
		return
	case gen <= w.latest:
		return
	}
	w.latest = gen
	if gen > w.seen {
		w.signalLocked()
	}
}

// signalLocked tells Next, and Fd's readers, that a generation is pending.
func (w *Watcher) signalLocked() {
	if w.efd != nil {
		w.efd.signal()
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// fdNotifier is the descriptor behind Watcher.Fd: readable while an event
// is pending. Only systems that have one (Linux: eventfd) make it.
type fdNotifier interface {
	signal()
	drain()
	close() error
}
