package client_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"golang.org/x/sys/unix"
)

// A watcher outlives its provider: it re-attaches when a provider is back
// on the same directory and hands its start-up generation to Next.

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustAttach(t *testing.T, dir string) *client.Client {
	t.Helper()
	c, err := client.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connEvents records what OnConnection reports.
type connEvents struct {
	lost     chan error
	regained chan uint64
}

func (e *connEvents) option() client.WatchOption {
	return client.OnConnection(
		func(err error) { e.lost <- err },
		func(gen uint64) { e.regained <- gen },
	)
}

func newConnEvents() *connEvents {
	return &connEvents{lost: make(chan error, 16), regained: make(chan uint64, 16)}
}

func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(eventually.Timeout):
		t.Fatalf("timed out after %v waiting for %s", eventually.Timeout, what)
	}
	panic("unreachable")
}

func readable(t *testing.T, fd int, timeout time.Duration) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(timeout.Milliseconds()))
	if err != nil && !errors.Is(err, unix.EINTR) {
		t.Fatal(err)
	}
	return n == 1
}

// TestWatcherReconnects: across a provider restart, Next returns the new
// provider's start-up generation, Fd (the same descriptor) becomes readable
// for it, the new provider counts the watcher outdated until it acks, and
// Ack and Wait go to the new connection.
func TestWatcherReconnects(t *testing.T) {
	dir := t.TempDir()
	p1 := testprovider.Start(t, provider.Config{Dir: dir})
	c := mustAttach(t, dir)
	ev := newConnEvents()
	w, err := c.Watch(ctxFor(t, 5*time.Second), client.WithLabel("reconnect"), ev.option())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := w.Fd()
	if err != nil {
		t.Fatal(err)
	}
	old := w.Generation()
	if err := p1.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := receive(t, "the watcher to lose the provider", ev.lost); !errors.Is(err, client.ErrProviderGone) {
		t.Fatalf("lost: %v, want ErrProviderGone", err)
	}
	if g := w.Generation(); g != old {
		t.Fatalf("Generation while disconnected = %d, want the last known %d", g, old)
	}
	if err := w.Ack(ctxFor(t, time.Second), old); !errors.Is(err, client.ErrProviderGone) {
		t.Fatalf("Ack while disconnected: %v, want ErrProviderGone", err)
	}
	if err := w.Wait(ctxFor(t, time.Second)); !errors.Is(err, client.ErrProviderGone) {
		t.Fatalf("Wait while disconnected: %v, want ErrProviderGone", err)
	}

	p2 := testprovider.Start(t, provider.Config{Dir: dir})
	gen := p2.Generation()
	if gen <= old {
		t.Fatalf("start-up generation %d, not above %d", gen, old)
	}
	if g := receive(t, "the watcher to re-attach", ev.regained); g != gen {
		t.Fatalf("regained at generation %d, want %d", g, gen)
	}
	if !readable(t, fd, 5*time.Second) {
		t.Fatal("Fd not readable for the new provider's generation")
	}
	if g, err := w.Next(ctxFor(t, 5*time.Second)); err != nil || g != gen {
		t.Fatalf("Next after the restart = %d, %v; want the start-up generation %d", g, err, gen)
	}
	if readable(t, fd, 0) {
		t.Fatal("Fd still readable after Next consumed the generation")
	}
	probe := mustAttach(t, dir)
	s, err := probe.Status(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if s.Watchers != 1 || s.Outdated != 1 || len(s.WatcherList) != 1 || s.WatcherList[0].Label != "reconnect" ||
		s.WatcherList[0].Expected || s.WatcherList[0].PID != int32(os.Getpid()) || s.WatcherList[0].Acked != old {
		t.Fatalf("status after the re-registration: watchers %d, outdated %d, %+v; want the watcher, outdated, acked %d", s.Watchers, s.Outdated, s.WatcherList, old)
	}
	if err := w.Wait(ctxFor(t, time.Second)); !errors.Is(err, client.ErrNewGeneration) {
		t.Fatalf("the outdated watcher's own wait: %v, want ErrNewGeneration", err)
	}
	if err := w.Ack(ctxFor(t, time.Second), gen); err != nil {
		t.Fatal(err)
	}
	if err := probe.Wait(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("wait after the ack: %v", err)
	}
	// Events keep coming on the new connection.
	next, err := probe.Bump(ctxFor(t, time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := w.Next(ctxFor(t, 5*time.Second)); err != nil || g != next {
		t.Fatalf("Next after a bump = %d, %v; want %d", g, err, next)
	}
}

// TestWatcherNoReconnect: with NoReconnect the watcher ends with its
// provider, as before.
func TestWatcherNoReconnect(t *testing.T) {
	dir := t.TempDir()
	p := testprovider.Start(t, provider.Config{Dir: dir})
	w, err := mustAttach(t, dir).Watch(ctxFor(t, 5*time.Second), client.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := w.Fd()
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	if !readable(t, fd, 5*time.Second) {
		t.Fatal("Fd not readable after the provider went away")
	}
	if _, err := w.Next(ctxFor(t, 5*time.Second)); !errors.Is(err, client.ErrProviderGone) {
		t.Fatalf("Next after the provider stopped: %v, want ErrProviderGone", err)
	}
}

// reconnectGoroutines counts the goroutines running the watchers' reconnect
// loops.
func reconnectGoroutines() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "client.(*Watcher).reconnect(")
}

// TestWatcherCloseStopsReconnect: Close ends the reconnect goroutine, also
// while it is waiting for a provider to come back.
func TestWatcherCloseStopsReconnect(t *testing.T) {
	dir := t.TempDir()
	p := testprovider.Start(t, provider.Config{Dir: dir})
	c := mustAttach(t, dir)
	before := reconnectGoroutines()
	ev := newConnEvents()
	connected, err := c.Watch(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := c.Watch(ctxFor(t, 5*time.Second), ev.option())
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "a reconnect goroutine for each watcher", func() bool { return reconnectGoroutines() == before+2 })
	if err := connected.Close(); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	receive(t, "the watcher to lose the provider", ev.lost)
	nexted := make(chan error, 1)
	go func() {
		_, err := waiting.Next(context.Background())
		nexted <- err
	}()
	closed := make(chan error, 1)
	go func() { closed <- waiting.Close() }()
	if err := receive(t, "Close to return", closed); err != nil {
		t.Fatal(err)
	}
	if err := receive(t, "Next to end at Close", nexted); !errors.Is(err, client.ErrProviderGone) {
		t.Fatalf("Next ended by Close: %v, want ErrProviderGone", err)
	}
	// Close returns once the reconnect goroutine is done (it may take a
	// moment more to leave the stack).
	eventually.True(t, "the reconnect goroutines to end", func() bool { return reconnectGoroutines() == before })
	if err := waiting.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// watchThenStop starts a provider on dir, watches it with connEvents and
// stops it, returning once the watcher reported the loss. The caller closes
// the watcher.
func watchThenStop(t *testing.T, dir string) (*client.Watcher, *connEvents) {
	t.Helper()
	p := testprovider.Start(t, provider.Config{Dir: dir})
	ev := newConnEvents()
	w, err := mustAttach(t, dir).Watch(ctxFor(t, 5*time.Second), ev.option())
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	receive(t, "the watcher to lose the provider", ev.lost)
	return w, ev
}

// TestWatcherRetriesRefusal: a provider that refuses the watcher (its bound
// on clients is reached) is asked again until it admits it.
func TestWatcherRetriesRefusal(t *testing.T) {
	dir := t.TempDir()
	w, ev := watchThenStop(t, dir)
	defer w.Close()
	p2 := testprovider.Start(t, provider.Config{Dir: dir, MaxClients: 2, ReservedClients: 1})
	// Fill the bound; the watcher may have taken a place first.
	var fillers []*client.Client
	for len(fillers) < 2 {
		c, err := client.Attach(dir)
		if errors.Is(err, client.ErrRefused) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, c)
	}
	if len(fillers) == 2 {
		if err := receive(t, "the watcher to be refused", ev.lost); !errors.Is(err, client.ErrRefused) {
			t.Fatalf("re-attaching: %v, want ErrRefused", err)
		}
	}
	for _, c := range fillers {
		c.Close()
	}
	if g := receive(t, "the watcher to re-attach", ev.regained); g != p2.Generation() {
		t.Fatalf("regained at generation %d, want %d", g, p2.Generation())
	}
	if g, err := w.Next(ctxFor(t, 5*time.Second)); err != nil || g != p2.Generation() {
		t.Fatalf("Next = %d, %v; want %d", g, err, p2.Generation())
	}
}

// TestWatcherNeverReattachesUntrusted: while the control socket belongs to
// another user, re-attaching fails with ErrUntrusted and the watcher never
// connects to whoever listens there; it re-attaches once a provider it
// trusts is back.
func TestWatcherNeverReattachesUntrusted(t *testing.T) {
	testdevice.RequireRoot(t, "to give the socket to uid 65534")
	dir := t.TempDir()
	w, ev := watchThenStop(t, dir)
	defer w.Close()
	// A listener at the socket's name, owned by uid 65534.
	path := filepath.Join(dir, statedir.SocketFile)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Lchown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			uc, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			accepted.Add(1)
			uc.Close()
		}
	}()
	if err := receive(t, "the watcher to refuse the socket", ev.lost); !errors.Is(err, client.ErrUntrusted) {
		t.Fatalf("re-attaching to a socket of uid 65534: %v, want ErrUntrusted", err)
	}
	ln.Close()
	<-acceptDone
	p2 := testprovider.Start(t, provider.Config{Dir: dir})
	if g := receive(t, "the watcher to re-attach", ev.regained); g != p2.Generation() {
		t.Fatalf("regained at generation %d, want %d", g, p2.Generation())
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the watcher connected %d times to the socket of uid 65534", n)
	}
}
