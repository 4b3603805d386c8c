package acpi

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"golang.org/x/sys/unix"
)

// requireRoot skips tests that drive the kernel as root.
func requireRoot(t *testing.T) {
	t.Helper()
	testdevice.RequireRoot(t, "to read /dev/kmsg and write sysfs uevent files")
}

// requireVMGenID skips tests that need the VMGENID platform device, and
// takes the device from tests in other packages that drive it too.
func requireVMGenID(t *testing.T) { testdevice.Require(t) }

// writeFile writes s to a kernel file in one write(2), and returns the write
// error (the kernel's answer).
func writeFile(t *testing.T, path, s string) error {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := f.WriteString(s)
	if err := f.Close(); err != nil && werr == nil {
		t.Fatal(err)
	}
	return werr
}

// running is a follower's Run in a goroutine, its events on a channel.
type running struct {
	events chan Event
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, run func(context.Context, func(Event)) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{events: make(chan Event, 1024), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, func(e Event) { r.events <- e }) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// next waits for the next event.
func (r *running) next(t *testing.T) Event {
	t.Helper()
	select {
	case e := <-r.events:
		return e
	case err := <-r.done:
		t.Fatalf("Run returned %v while an event was awaited", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return Event{}
}

// stop cancels Run, checks that it returns nil promptly, and returns the
// events not taken yet. It may be called more than once.
func (r *running) stop(t *testing.T) []Event {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	var rest []Event
	for {
		select {
		case e := <-r.events:
			rest = append(rest, e)
		default:
			return rest
		}
	}
}

// waitDrained waits until c has nothing left to read: the follower reading
// it has taken every record or message queued so far. (poll(2) on /dev/kmsg
// reports whether this reader has unread records; on a socket, whether its
// queue is empty.) A follower handles what it took before it takes more, so
// once stopped after this it has handled all of it.
func waitDrained(t *testing.T, c conn) {
	t.Helper()
	fc := c.(*fileConn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		var perr error
		if err := fc.rc.Control(func(fd uintptr) {
			n, perr = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		}); err != nil {
			t.Fatal(err)
		}
		if perr != nil && perr != unix.EINTR {
			t.Fatal(perr)
		}
		if n == 0 && perr == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower did not read what was queued within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// kmsgReader reads /dev/kmsg independently of the code under test, from the
// end of the log at the time it is made.
type kmsgReader struct{ fd int }

func newKmsgReader(t *testing.T) *kmsgReader {
	t.Helper()
	fd, err := unix.Open(kmsgPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		t.Fatal(err)
	}
	return &kmsgReader{fd: fd}
}

// records returns the records logged since the last call.
func (k *kmsgReader) records(t *testing.T) []Record {
	t.Helper()
	var recs []Record
	buf := make([]byte, kmsgMaxRecord)
	for {
		n, err := unix.Read(k.fd, buf)
		if err == unix.EAGAIN {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseKmsg(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
}

// TestIntegrationKmsgForgedFork plays the forgers of the fork record for
// real: root writes it to /dev/kmsg at the kernel's own level, and uid 65534
// makes the kernel itself log it, at facility 0, inside a tmpfs complaint
// (a mount option in a user namespace of its own). Neither is a restore. The
// fence — a record the kernel logs after them, which the follower is told
// to count — must be the one and only event: the follower reads the log in
// order, so by the time it reports the fence it has judged the forgeries.
func TestIntegrationKmsgForgedFork(t *testing.T) {
	requireVMGenID(t)
	f, err := NewKmsgFollower(KmsgOptions{Also: synthUevent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // after start's cleanup stops Run
	reader := newKmsgReader(t)
	r := start(t, f.Run)

	if err := writeFile(t, kmsgPath, "<5>"+ForkMessage+"\n"); err != nil {
		t.Fatal(err)
	}
	testdevice.ForgeUnprivileged(t, ForkMessage)
	testdevice.LogMalformed(t) // the fence

	e := r.next(t)
	var fence []uint64
	forged := 0
	for _, rec := range reader.records(t) {
		switch {
		case rec.Matches(synthUevent):
			fence = append(fence, rec.Seq)
		case strings.Contains(rec.Message, ForkMessage):
			forged++
			if rec.IsRestore() {
				t.Errorf("a forgery passes for the fork record: %+v", rec)
			}
		}
	}
	if forged != 2 || len(fence) != 1 {
		t.Fatalf("the kernel logged %d records with the fork text and %d fences; want 2 and 1", forged, len(fence))
	}
	if e.Signal != SignalKmsg || e.Lost || e.Seq != fence[0] {
		t.Fatalf("first event %+v, want the fence, record %d: a forgery counted as a restore", e, fence[0])
	}
	if n := f.Imitations(); n != 2 {
		t.Errorf("Imitations() = %d after two forgeries, want 2", n)
	}
	waitDrained(t, f.c)
	if events := r.stop(t); len(events) != 0 {
		t.Errorf("events after the fence: %+v", events)
	}
}

// TestIntegrationKmsgFollower causes a real facility-0 record — the kernel's
// complaint about a malformed synthetic uevent — and checks that a follower
// matching it reports exactly one event per write, with the record's sequence
// number, and nothing for the same text written by a process.
func TestIntegrationKmsgFollower(t *testing.T) {
	requireVMGenID(t)
	f, err := NewKmsgFollower(KmsgOptions{Also: synthUevent})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reader := newKmsgReader(t)
	r := start(t, f.Run)

	// The same text by root, at the same level: facility 1, no event.
	if err := writeFile(t, kmsgPath, "<4>"+synthUeventMessage+"\n"); err != nil {
		t.Fatal(err)
	}
	const writes = 3
	var got []Event
	for i := 0; i < writes; i++ {
		if err := testdevice.Write("change not-a-uuid extra"); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("writing malformed arguments to %s: %v, want EINVAL", testdevice.UeventPath, err)
		}
		e := r.next(t)
		if e.Signal != SignalKmsg || e.Lost || !strings.Contains(e.Detail, synthUeventMessage) {
			t.Errorf("event %+v, want a kmsg event for the record", e)
		}
		got = append(got, e)
	}
	waitDrained(t, f.c)
	got = append(got, r.stop(t)...)

	var want []uint64
	for _, rec := range reader.records(t) {
		if rec.Matches(synthUevent) {
			want = append(want, rec.Seq)
		}
	}
	if len(want) != writes {
		t.Fatalf("the kernel logged %d facility-0 records for %d writes", len(want), writes)
	}
	if len(got) != writes {
		t.Fatalf("got %d events %+v for %d writes", len(got), got, writes)
	}
	for i := range got {
		if got[i].Seq != want[i] {
			t.Errorf("event %d has sequence number %d, want %d", i, got[i].Seq, want[i])
		}
	}
}

// TestIntegrationFollowersRelease checks that followers stop promptly on
// cancel, and leave no descriptor or goroutine behind once closed.
func TestIntegrationFollowersRelease(t *testing.T) {
	requireRoot(t)
	// The runtime opens its poller's descriptors on first use: use it once
	// before counting.
	warm, err := NewUeventFollower(UeventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start(t, warm.Run).stop(t)
	warm.Close()
	fdsBefore := countFDs(t)
	goroutinesBefore := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		k, err := NewKmsgFollower(KmsgOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := NewUeventFollower(UeventOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, run := range []func(context.Context, func(Event)) error{k.Run, u.Run} {
			r := start(t, run)
			r.stop(t)
		}
		for _, c := range []interface{ Close() error }{k, u, k, u} {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	}
	if n := countFDs(t); n != fdsBefore {
		t.Errorf("%d descriptors open after closing the followers, %d before", n, fdsBefore)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines remain, %d before", runtime.NumGoroutine(), goroutinesBefore)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIntegrationCloseStopsRun checks that Close wakes a blocked Run, which
// then returns an error rather than hanging.
func TestIntegrationCloseStopsRun(t *testing.T) {
	requireRoot(t)
	f, err := NewKmsgFollower(KmsgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background(), func(Event) {}) }()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run after Close = nil, want an error")
		}
		t.Logf("Run after Close: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of Close")
	}
}

// countFDs counts this process's open descriptors.
func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
