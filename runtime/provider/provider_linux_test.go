package provider

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// testProvider runs a manual provider on a fresh directory until the test
// ends.
type testProvider struct {
	*Provider
	cancel context.CancelFunc
	done   chan error
}

func startProvider(t testing.TB, dir string) *testProvider {
	t.Helper()
	return startWith(t, Config{Dir: dir}, nil)
}

// startWith runs a provider made with cfg (logs discarded unless
// cfg.Logger is set) until the test ends; setup, if any, adjusts it before
// it runs.
func startWith(t testing.TB, cfg Config, setup func(*Provider)) *testProvider {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tp := &testProvider{Provider: p, cancel: cancel, done: make(chan error, 1)}
	go func() { tp.done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-tp.done:
		t.Fatalf("provider stopped before it was ready: %v", err)
	}
	t.Cleanup(tp.stop)
	return tp
}

// withLog points cfg's log at a buffer for the test to read, printed if
// the test fails.
func withLog(t testing.TB, cfg *Config) *logBuffer {
	logs := new(logBuffer)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("provider log:\n%s", logs)
		}
	})
	return logs
}

func (tp *testProvider) stop() {
	tp.cancel()
	if err := <-tp.done; err != nil {
		panic(err)
	}
	tp.done <- nil // let a second stop return
}

func attach(t testing.TB, dir string) *client.Client {
	t.Helper()
	c, err := client.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func watch(t testing.TB, c *client.Client) *client.Watcher {
	t.Helper()
	w, err := c.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func status(t testing.TB, c *client.Client) client.Status {
	t.Helper()
	s, err := c.Status(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStartupBumpAndRestart(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	c := attach(t, dir)
	file, err := shm.MapPage(filepath.Join(dir, statedir.PageFile))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if g := c.Generation(); g != 1 {
		t.Fatalf("first start: generation %d, want 1", g)
	}
	s, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if s.Reason != shm.ReasonStartup || s.State != shm.StateRunning || s.PID != uint32(os.Getpid()) || s.Wiped != 1 {
		t.Fatalf("snapshot after start = %+v", s)
	}
	tp.stop()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client did not notice the provider stopping")
	}
	if !errors.Is(c.Err(), client.ErrProviderGone) {
		t.Fatalf("Err after stop = %v", c.Err())
	}
	if s, _ := c.Snapshot(); s.State != shm.StateStopped {
		t.Fatalf("state after stop = %v, want stopped", s.State)
	}
	if _, err := client.Attach(dir); !errors.Is(err, client.ErrNoProvider) {
		t.Fatalf("client.Attach with no provider = %v, want client.ErrNoProvider", err)
	}

	startProvider(t, dir)
	// A mapping of the page file keeps working across the restart: the new
	// provider keeps the file's inode.
	if g := file.Generation(); g != 2 {
		t.Fatalf("after restart: the page file shows generation %d, want 2", g)
	}
	// The client's page is the memfd of the provider that is gone: it stays
	// readable, frozen and marked stopped; attaching again follows the new
	// provider.
	if s, _ := c.Snapshot(); s.Generation != 1 || s.State != shm.StateStopped {
		t.Fatalf("the old provider's page after the restart: generation %d, state %v; want 1, stopped", s.Generation, s.State)
	}
	if g := attach(t, dir).Generation(); g != 2 {
		t.Fatalf("after restart: a new client sees generation %d, want 2", g)
	}
}

// TestCloseWithoutRun: a provider that was made but never run leaves the
// page alone; in particular the generation does not go back.
func TestCloseWithoutRun(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	tp.Bump(shm.ReasonForced, 41)
	tp.stop()
	p, err := New(Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	page, err := shm.MapPage(filepath.Join(dir, statedir.PageFile))
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	if s, _ := page.Snapshot(); s.Generation != 41 || s.State != shm.StateStopped {
		t.Fatalf("page after New and Close: generation %d, state %v; want 41, stopped", s.Generation, s.State)
	}
}

func TestSecondProviderRefused(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	_, err := New(Config{Dir: dir})
	if !errors.Is(err, ErrProviderRunning) {
		t.Fatalf("second provider: %v, want ErrProviderRunning", err)
	}
}

func TestBumpMin(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	c := attach(t, dir)
	ctx := ctxT(t, 5*time.Second)
	for _, tc := range []struct{ min, want uint64 }{{100, 100}, {50, 101}, {0, 102}, {102, 103}} {
		g, err := c.Bump(ctx, tc.min)
		if err != nil {
			t.Fatal(err)
		}
		if g != tc.want || c.Generation() != tc.want {
			t.Fatalf("bump --min %d = %d (page %d), want %d", tc.min, g, c.Generation(), tc.want)
		}
	}
	if s := status(t, c); s.Reason != "forced" || s.Generation != 103 {
		t.Fatalf("status after bumps = %+v", s)
	}
}

// TestBumpFloorBounded replays the bricking bump: a privileged
// `bump --min 2^64-2` used to leave the provider unable to bump again (real
// restores included) or to start. Floors far above the generation are now
// refused, changing nothing; the largest permitted sequence still leaves
// restores and restarts working.
func TestBumpFloorBounded(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	c := attach(t, dir)
	ctx := ctxT(t, 5*time.Second)
	before := c.Generation()
	for _, floor := range []uint64{math.MaxUint64 - 1, math.MaxUint64, before + MaxForcedStep + 1, ForcedCeiling + 1} {
		_, err := c.Bump(ctx, floor)
		if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "at most") && !strings.Contains(err.Error(), "2^63") {
			t.Fatalf("bump --min %d: %v, want ErrInvalid naming the bound", floor, err)
		}
		if g := c.Generation(); g != before {
			t.Fatalf("refused bump --min %d moved the generation %d -> %d", floor, before, g)
		}
	}
	if g, err := c.Bump(ctx, before+MaxForcedStep); err != nil || g != before+MaxForcedStep {
		t.Fatalf("bump by exactly the step = %d, %v", g, err)
	}
	// Forced bumps stop at the ceiling. (Reaching it by forced bumps alone
	// takes 2^31 requests; the provider's own unbounded Bump gets there.)
	if _, err := tp.Bump(shm.ReasonACPI, ForcedCeiling-3); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.Bump(ctx, 0); err != nil {
			t.Fatalf("forced bump below the ceiling: %v", err)
		}
	}
	if g := c.Generation(); g != ForcedCeiling {
		t.Fatalf("generation %d, want the ceiling %d", g, uint64(ForcedCeiling))
	}
	if _, err := c.Bump(ctx, 0); !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "2^63") {
		t.Fatalf("forced bump past the ceiling: %v, want ErrInvalid naming 2^63", err)
	}
	// Restore events and restarts still bump.
	if g, err := tp.Bump(shm.ReasonACPI, 0); err != nil || g != ForcedCeiling+1 {
		t.Fatalf("restore bump after the forced ceiling = %d, %v", g, err)
	}
	c.Close()
	tp.stop()
	tp2 := startProvider(t, dir)
	if g := tp2.Generation(); g <= ForcedCeiling {
		t.Fatalf("restart after the ceiling: generation %d", g)
	}
}

func TestWatchersAckAndWait(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	c := attach(t, dir)
	probe := attach(t, dir) // probe-only: must never count
	w1 := watch(t, c)
	w2 := watch(t, c)
	if s := status(t, c); s.Watchers != 2 || s.Outdated != 0 || s.Clients != 4 {
		t.Fatalf("status = watchers %d outdated %d clients %d, want 2, 0, 4", s.Watchers, s.Outdated, s.Clients)
	}
	if err := c.Wait(ctxT(t, time.Second)); err != nil {
		t.Fatalf("wait with every watcher up to date: %v", err)
	}

	gen, err := tp.Bump(shm.ReasonForced, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*client.Watcher{w1, w2} {
		if g, err := w.Next(ctxT(t, 5*time.Second)); err != nil || g != gen {
			t.Fatalf("Next = %d, %v; want %d", g, err, gen)
		}
	}
	if s := status(t, c); s.Outdated != 2 {
		t.Fatalf("outdated after bump = %d, want 2", s.Outdated)
	}

	// A wrong ack is refused and changes nothing.
	if err := w1.Ack(ctxT(t, time.Second), gen-1); !errors.Is(err, client.ErrBadAck) {
		t.Fatalf("ack of an old generation: %v, want client.ErrBadAck", err)
	}
	if err := w1.Ack(ctxT(t, time.Second), gen+1); !errors.Is(err, client.ErrBadAck) {
		t.Fatalf("ack of a future generation: %v, want client.ErrBadAck", err)
	}
	if s := status(t, c); s.Outdated != 2 {
		t.Fatalf("outdated after refused acks = %d, want 2", s.Outdated)
	}
	if err := w1.Ack(ctxT(t, time.Second), gen); err != nil {
		t.Fatal(err)
	}
	if err := w1.Ack(ctxT(t, time.Second), gen); err != nil {
		t.Fatalf("repeated ack: %v", err)
	}
	if s := status(t, c); s.Outdated != 1 {
		t.Fatalf("outdated after one ack = %d, want 1", s.Outdated)
	}

	// The outdated watcher holds the wait until it times out.
	err = c.Wait(ctxT(t, 100*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait with an outdated watcher: %v, want deadline exceeded", err)
	}
	// An outdated watcher's own wait reports the new generation at once.
	if err := w2.Wait(ctxT(t, time.Second)); !errors.Is(err, client.ErrNewGeneration) {
		t.Fatalf("outdated watcher's wait: %v, want client.ErrNewGeneration", err)
	}

	// A bump while waiting ends the wait with client.ErrNewGeneration.
	errc := make(chan error, 1)
	go func() { errc <- c.Wait(ctxT(t, 5*time.Second)) }()
	eventually.True(t, "the wait to register", func() bool { return status(t, probe).Waiting == 1 })
	gen2, _ := tp.Bump(shm.ReasonForced, 0)
	if err := <-errc; !errors.Is(err, client.ErrNewGeneration) {
		t.Fatalf("wait across a bump: %v, want client.ErrNewGeneration", err)
	}

	// Acks release the wait.
	go func() { errc <- c.Wait(ctxT(t, 5*time.Second)) }()
	eventually.True(t, "the wait to register", func() bool { return status(t, probe).Waiting == 1 })
	if err := w1.Ack(ctxT(t, time.Second), gen2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		t.Fatalf("wait ended with one watcher outdated: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// A watcher that goes away stops counting.
	w2.Close()
	if err := <-errc; err != nil {
		t.Fatalf("wait after the outdated watcher left: %v", err)
	}
	if s := status(t, c); s.Watchers != 1 || s.Outdated != 0 {
		t.Fatalf("status = watchers %d outdated %d, want 1, 0", s.Watchers, s.Outdated)
	}
}

func TestWaitSeenGeneration(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	c := attach(t, dir)
	// A caller that read an older generation is told at once.
	if err := c.WaitSince(ctxT(t, time.Second), c.Generation()+5); !errors.Is(err, client.ErrNewGeneration) {
		t.Fatalf("wait with a stale generation: %v", err)
	}
	// After a cancelled wait the connection is usable again.
	w := watch(t, c)
	if _, err := c.Bump(ctxT(t, time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctxT(t, 20*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait = %v, want deadline exceeded", err)
	}
	g, _ := w.Next(ctxT(t, time.Second))
	if err := w.Ack(ctxT(t, time.Second), g); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctxT(t, time.Second)); err != nil {
		t.Fatalf("wait after cancel and ack: %v", err)
	}
}

func TestWatcherFdPollable(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	// Without NoReconnect the watcher would wait for the next provider
	// (runtime/client's reconnect tests).
	w, err := attach(t, dir).Watch(context.Background(), client.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	fd, err := w.Fd()
	if err != nil {
		t.Fatal(err)
	}
	readable := func(timeout time.Duration) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		return n == 1
	}
	if readable(0) {
		t.Fatal("fd readable before any bump")
	}
	gen, _ := tp.Bump(shm.ReasonForced, 0)
	if !readable(5 * time.Second) {
		t.Fatal("fd not readable after a bump")
	}
	if g, err := w.Next(ctxT(t, time.Second)); err != nil || g != gen {
		t.Fatalf("Next = %d, %v", g, err)
	}
	if readable(0) {
		t.Fatal("fd still readable after Next consumed the event")
	}
	tp.stop()
	if !readable(5 * time.Second) {
		t.Fatal("fd not readable after the provider went away")
	}
	if _, err := w.Next(ctxT(t, time.Second)); !errors.Is(err, client.ErrProviderGone) {
		t.Fatalf("Next after provider stop: %v", err)
	}
}

// rawConn is a protocol-level client for misbehaviour tests.
func rawConn(t *testing.T, dir string) *net.UnixConn {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: filepath.Join(dir, statedir.SocketFile), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

// wantErrorReply sends msg on a new raw connection and checks that the
// provider answers it with an error of code and id, then closes the
// connection.
func wantErrorReply(t *testing.T, dir string, msg []byte, code wire.Code, id uint32) {
	t.Helper()
	uc := rawConn(t, dir)
	if _, err := uc.Write(msg); err != nil {
		t.Fatal(err)
	}
	m, err := readMsg(t, uc)
	if err != nil {
		t.Fatalf("no error reply: %v", err)
	}
	if m.Type != wire.Error || len(m.Payload) < 4 || wire.Code(m.U32()) != code || m.ID != id {
		t.Fatalf("reply %#x payload %q id %d, want error code %d id %d", m.Type, m.Payload, m.ID, code, id)
	}
	if _, err := readMsg(t, uc); err != io.EOF {
		t.Fatalf("connection not closed after the error: %v", err)
	}
}

func readMsg(t *testing.T, uc *net.UnixConn) (wire.Message, error) {
	buf := make([]byte, wire.MaxMessage)
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := uc.Read(buf)
	if err != nil {
		return wire.Message{}, err
	}
	return wire.Decode(buf[:n])
}

func TestMisbehavingPeersAreClosed(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	good := attach(t, dir)
	reserved := wire.Encode(wire.Status, 7, nil)
	reserved[2] = 1
	for _, tc := range []struct {
		name string
		msg  []byte
		code wire.Code
		id   uint32 // the datagram's id whenever it has a whole header of version 1 (ABI §3)
	}{
		{"garbage", []byte("hello provider"), wire.CodeVersion, 0},
		{"short", []byte{1, 2}, wire.CodeMalformed, 0},
		{"oversized", append(wire.Encode(wire.Status, 1, nil), make([]byte, wire.MaxMessage)...), wire.CodeMalformed, 1},
		{"unknown type", wire.Encode(0x33, 2, nil), wire.CodeUnknown, 2},
		{"bad payload", wire.Encode(wire.Ack, 3, []byte{1}), wire.CodeMalformed, 3},
		{"reply type", wire.Encode(wire.BumpOK, 4, wire.U64(1)), wire.CodeUnknown, 4},
		{"reply type, bad payload", wire.Encode(wire.BumpOK, 5, nil), wire.CodeUnknown, 5},
		{"event type", wire.Encode(wire.Generation, 6, wire.U64(1)), wire.CodeUnknown, 6},
		{"reserved bytes", reserved, wire.CodeMalformed, 7},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErrorReply(t, dir, tc.msg, tc.code, tc.id) })
	}
	// Everyone else is still served.
	if _, err := good.Bump(ctxT(t, time.Second), 0); err != nil {
		t.Fatalf("provider stopped serving others: %v", err)
	}
}

// TestSilentPeerDoesNotBlock: a watcher that never reads its socket must not
// delay bumps or other watchers.
func TestSilentPeerDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	silent := rawConn(t, dir)
	silent.Write(wire.Encode(wire.Watch, 1, nil))
	w := watch(t, attach(t, dir))
	var last uint64
	for range 5000 {
		last, _ = tp.Bump(shm.ReasonForced, 0)
	}
	eventually.True(t, "the reading watcher to see the last bump", func() bool { return w.Generation() == last })
}

func TestRegionWipedOnBump(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	c := attach(t, dir)
	r, err := c.Region(ctxT(t, time.Second), 100)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	copy(r.Bytes(), "live key material")
	if s := status(t, c); s.Regions != 1 || s.RegionBytes != os.Getpagesize() {
		t.Fatalf("status regions %d bytes %d", s.Regions, s.RegionBytes)
	}
	tp.Bump(shm.ReasonForced, 0)
	for i, b := range r.Bytes() {
		if b != 0 {
			t.Fatalf("byte %d = %#x after bump", i, b)
		}
	}
	// Bounds.
	for _, n := range []int{0, shm.MaxRegionSize + 1} {
		if _, err := c.Region(ctxT(t, time.Second), n); err == nil {
			t.Fatalf("region of %d bytes granted", n)
		}
	}
	var held []*shm.Region
	for range MaxRegionsPerConn - 1 {
		r, err := c.Region(ctxT(t, time.Second), 1)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	if _, err := c.Region(ctxT(t, time.Second), 1); !errors.Is(err, client.ErrLimit) {
		t.Fatalf("region beyond the per-connection bound: %v, want client.ErrLimit", err)
	}
	for _, r := range held {
		r.Close()
	}
	// Regions go with their connection.
	c.Close()
	probe := attach(t, dir)
	eventually.True(t, "regions to be released", func() bool { return status(t, probe).Regions == 0 })
}

// TestRegionProtocolConcurrentWipe runs the client side of the region
// protocol (docs/ABI.md) against a provider bumping as fast as it can: a
// client stores a secret only once the wipe for the generation it read is
// marked complete, and whenever it finds its secret damaged, the generation
// must have moved. A wipe that landed on a secret stored for the current
// generation — the failure the protocol exists to prevent — fails the test.
func TestRegionProtocolConcurrentWipe(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	c := attach(t, dir)
	r, err := c.Region(ctxT(t, time.Second), 64)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	page := c.Page()

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			tp.Bump(shm.ReasonForced, 0)
		}
	}()
	mem := r.Bytes()[:64]
	var stores, damaged int
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		g := page.Generation()
		if page.Wiped() != g {
			continue // the wipe for g is not complete: storing now could be wiped
		}
		for i := range mem {
			mem[i] = byte(g) | 1 // never zero
		}
		stores++
		for i := range mem {
			if mem[i] != byte(g)|1 {
				if page.Generation() == g {
					t.Fatalf("secret for generation %d damaged while the generation stood still", g)
				}
				damaged++
				break
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d stores, %d of them wiped by a later bump", stores, damaged)
	if stores < 100 {
		t.Fatalf("only %d stores: the test did not exercise the protocol", stores)
	}
}

func TestNoDescriptorLeaks(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	before := countFDs(t)
	for range 20 {
		c, err := client.Attach(dir)
		if err != nil {
			t.Fatal(err)
		}
		w, err := c.Watch(ctxT(t, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Region(ctxT(t, time.Second), 1)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		w.Close()
		c.Close()
	}
	probe := attach(t, dir)
	eventually.True(t, "the provider to drop closed clients", func() bool { return status(t, probe).Clients == 1 })
	probe.Close()
	eventually.True(t, "descriptors to be released", func() bool { return countFDs(t) <= before })
	_ = tp
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v (needs /proc)", err)
	}
	return len(ents)
}

func TestParseProcStatus(t *testing.T) {
	const st = "Name:\tmy daemon\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nCapInh:\t0000000000000000\nCapEff:\t0000010000000000\n"
	info := parseProcStatus(st)
	if info.capEff != 1<<capCheckpointRestore {
		t.Fatalf("CapEff = %#x", info.capEff)
	}
	if !slices.Equal(info.groups, []uint32{4, 24, 27, 1000}) {
		t.Fatalf("groups = %v", info.groups)
	}
	if info.comm != "my daemon" {
		t.Fatalf("comm = %q, want the Name line's text after the tab", info.comm)
	}
}

func TestVMClockPassedToClients(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(t.TempDir(), "vmclock0")
	if err := os.WriteFile(page, vmclock.Page(4096, vmclock.FlagCounter, 41), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := backend.NewVMClockSource(page, backend.VMClockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p, err := New(Config{Dir: dir, Source: src, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-p.Ready()

	c := attach(t, dir)
	vc, err := c.VMClock(ctxT(t, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	if g, ok, err := vc.Counter(); err != nil || !ok || g != 41 {
		t.Fatalf("client reads counter %d, %v, %v; want 41", g, ok, err)
	}
	word := vc.CounterWord()
	// The hypervisor moves the counter: the client's mapping sees it, and
	// the provider bumps.
	f, err := os.OpenFile(page, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 42)
	if _, err := f.WriteAt(b[:], vmclock.OffCounter); err != nil {
		t.Fatal(err)
	}
	if got := atomic.LoadUint64(word); got != 42 {
		t.Fatalf("client's counter word reads %d after the change, want 42", got)
	}
	eventually.True(t, "the provider to bump on the counter change", func() bool { return c.Generation() == 2 })
	if s, _ := c.Snapshot(); s.Reason != shm.ReasonVMClock || s.Backend != shm.BackendVMClock {
		t.Fatalf("snapshot after the change: %+v", s)
	}

	// A provider without VMClock says so.
	mdir := t.TempDir()
	startProvider(t, mdir)
	if _, err := attach(t, mdir).VMClock(ctxT(t, time.Second)); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("VMClock from a manual provider: %v, want client.ErrUnavailable", err)
	}
}

// TestPeerPidfd: the provider gets the peer's pidfd from the kernel
// (SO_PEERPIDFD, Linux 6.5+; pidfd_open otherwise), and it names the peer.
func TestPeerPidfd(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.DialUnix("unixpacket", nil, ln.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cred, err := peerCred(sc)
	if err != nil {
		t.Fatal(err)
	}
	fd := peerPidfd(sc, cred.Pid)
	if fd < 0 {
		t.Skip("this kernel has neither SO_PEERPIDFD nor pidfd_open")
	}
	defer unix.Close(fd)
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Pid:\t%d\n", os.Getpid()); !strings.Contains(string(info), want) {
		t.Fatalf("pidfd fdinfo does not name this process:\n%s", info)
	}
	if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
		t.Fatalf("signal 0 to a live peer: %v", err)
	}
}
