package provider

import (
	"net"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// unread returns the bytes queued unread on uc's receive side (SIOCINQ: on
// SOCK_SEQPACKET, the sum of every queued message), without reading them.
func unread(t *testing.T, uc *net.UnixConn) int {
	t.Helper()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// eventSize is one generation event on the wire.
const eventSize = wire.HeaderSize + 8

// TestSlowWatcherCoalesced replays "events are not coalesced on the wire": a
// watcher that stops reading while 600 bumps happen used to get a backlog
// (hundreds of queued events) and, after the 2 s write deadline, was
// silently disconnected, so that the orchestrator wait returned 0 although
// it never adapted. Now it has exactly one event queued (the first bump's,
// sent while it had read everything), stays connected and counted as
// outdated for as long as it does not read, holds the wait up, and once it
// reads that event it gets exactly one more, carrying the newest
// generation; its ack then releases the wait.
func TestSlowWatcherCoalesced(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	c := attach(t, dir)
	slow := rawConn(t, dir)
	if _, err := slow.Write(wire.Encode(wire.Watch, 1, nil)); err != nil {
		t.Fatal(err)
	}
	m, err := readMsg(t, slow)
	if err != nil || m.Type != wire.WatchOK {
		t.Fatalf("watch reply %+v, %v", m, err)
	}
	g0 := m.U64()

	// The first bump: the watcher has read everything, so its event goes
	// out at once. Then the watcher stops reading, and 599 more bumps land.
	first, _ := tp.Bump(shm.ReasonForced, 0)
	eventually.True(t, "the first bump's event to be queued", func() bool { return unread(t, slow) >= eventSize })
	// A bump every millisecond, as a script running snapsafectl bump in a
	// loop makes them (each of those takes longer): slow enough that every
	// bump would get an event of its own if events were not coalesced.
	var last uint64
	for range 599 {
		last, _ = tp.Bump(shm.ReasonForced, 0)
		time.Sleep(time.Millisecond)
	}
	if n := unread(t, slow); n != eventSize {
		t.Errorf("%d bytes queued for the slow watcher after %d bumps (%d events' worth), want exactly one event (%d bytes)",
			n, last-g0, n/eventSize, eventSize)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait(ctxT(t, 30*time.Second)) }()
	eventually.True(t, "the wait to register", func() bool { return status(t, c).Waiting == 1 })

	// The hazard is a deadline: the old provider gave up on the full socket
	// after writeTimeout and dropped the watcher. Let it pass (this waits
	// for time itself, not for something to happen); the status request
	// after it is the fence for everything the provider did meanwhile.
	time.Sleep(writeTimeout + 500*time.Millisecond)
	s := status(t, c)
	if s.Watchers != 1 || s.Outdated != 1 || s.Waiting != 1 {
		t.Errorf("after %v of not reading: watchers %d, outdated %d, waiting %d; want the slow watcher still there, outdated, holding the wait",
			writeTimeout+500*time.Millisecond, s.Watchers, s.Outdated, s.Waiting)
	}
	select {
	case err := <-waitErr:
		t.Fatalf("the wait ended (%v) while the slow watcher had not acknowledged generation %d", err, last)
	default:
	}
	if n := unread(t, slow); n != eventSize {
		t.Fatalf("%d bytes queued for the slow watcher after %d bumps (%d events' worth), want exactly one event (%d bytes)",
			n, last-g0, n/eventSize, eventSize)
	}

	// It reads: the first bump's event, then exactly one more carrying the
	// newest generation; nothing else comes before the reply to its ack.
	for _, want := range []uint64{first, last} {
		m, err := readMsg(t, slow)
		if err != nil || m.Type != wire.Generation || m.ID != 0 || m.U64() != want {
			t.Fatalf("event %+v, %v; want generation %d", m, err, want)
		}
	}
	if _, err := slow.Write(wire.Encode(wire.Ack, 2, wire.U64(last))); err != nil {
		t.Fatal(err)
	}
	if m, err := readMsg(t, slow); err != nil || m.Type != wire.AckOK || m.ID != 2 {
		t.Fatalf("after the newest event: %+v, %v; want the ack's reply and no other event", m, err)
	}
	if err := <-waitErr; err != nil {
		t.Fatalf("the wait after the slow watcher acked the newest generation: %v", err)
	}
}

// TestUnreadReplyDefersEvents: an event never queues behind anything
// unread, replies included, and a peek does not count as reading; the
// watcher's next request, or its reading, lets the newest one through.
func TestUnreadReplyDefersEvents(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	w := rawConn(t, dir)
	if _, err := w.Write(wire.Encode(wire.Watch, 1, nil)); err != nil {
		t.Fatal(err)
	}
	// The watch reply is queued, unread (peeked at only).
	eventually.True(t, "the watch reply", func() bool { return unread(t, w) == eventSize })
	buf := make([]byte, wire.MaxMessage)
	if n, _, err := unix.Recvfrom(fdOf(t, w), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT); err != nil || n != eventSize {
		t.Fatalf("peek: %d bytes, %v", n, err)
	}
	var last uint64
	for range 10 {
		last, _ = tp.Bump(shm.ReasonForced, 0)
	}
	// Fence: the notifier deferred the event at least once after the last
	// bump (it looks at the generation when it tries), so an event it was
	// going to queue behind the reply would be there now.
	d := tp.deferredEvents.Load()
	eventually.True(t, "the notifier to try again", func() bool { return tp.deferredEvents.Load() > d || unread(t, w) != eventSize })
	if n := unread(t, w); n != eventSize {
		t.Fatalf("%d bytes queued behind the unread watch reply, want none but the reply", n)
	}
	if m, err := readMsg(t, w); err != nil || m.Type != wire.WatchOK {
		t.Fatalf("first message %+v, %v; want the watch reply", m, err)
	}
	if m, err := readMsg(t, w); err != nil || m.Type != wire.Generation || m.U64() != last {
		t.Fatalf("after reading the reply: %+v, %v; want one event with the newest generation %d", m, err, last)
	}
}

func fdOf(t *testing.T, uc *net.UnixConn) int {
	t.Helper()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}
