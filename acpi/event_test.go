package acpi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeConn is a conn whose messages a test hands over one at a time.
type fakeConn struct {
	msgs chan fakeMsg

	mu      sync.Mutex
	expired chan struct{} // closed while the read deadline is in the past
	closed  bool
}

// fakeMsg is what one recv returns.
type fakeMsg struct {
	b      []byte
	sender uint32
	err    error
}

func newFakeConn() *fakeConn {
	return &fakeConn{msgs: make(chan fakeMsg), expired: make(chan struct{})}
}

func (c *fakeConn) recv(b []byte) (int, uint32, error) {
	c.mu.Lock()
	expired := c.expired
	c.mu.Unlock()
	select {
	case m := <-c.msgs:
		return copy(b, m.b), m.sender, m.err
	case <-expired:
		return 0, 0, os.ErrDeadlineExceeded
	}
}

func (c *fakeConn) setReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.expired:
		if t.IsZero() {
			c.expired = make(chan struct{})
		}
	default:
		if !t.IsZero() && t.Before(time.Now()) {
			close(c.expired)
		}
	}
	return nil
}

func (c *fakeConn) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// runFake runs a follower's Run over c in a goroutine, hands over msgs (each
// send returns once Run has taken the message), then cancels Run and returns
// the events it emitted and its result.
func runFake(t *testing.T, c *fakeConn, run func(context.Context, func(Event)) error, msgs ...fakeMsg) ([]Event, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var events []Event
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(e Event) { events = append(events, e) }) }()
	for _, m := range msgs {
		select {
		case c.msgs <- m:
		case err := <-done:
			cancel()
			return events, err
		}
	}
	// Run handles a message before it asks for the next one, so once
	// cancelled it has handled them all.
	cancel()
	select {
	case err := <-done:
		return events, err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
		return nil, nil
	}
}

// testLogger returns a logger writing to the returned buffer.
func testLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func TestKmsgFollowerLoop(t *testing.T) {
	recs := kmsgCapture(t)
	log, logBuf := testLogger()
	c := newFakeConn()
	f := &KmsgFollower{c: c, also: synthUevent, log: log}
	events, err := runFake(t, c, f.Run,
		fakeMsg{b: recs[0]},    // boot banner
		fakeMsg{b: recs[341]},  // the driver's fork record
		fakeMsg{b: recs[410]},  // the same text written by root: facility 1
		fakeMsg{b: recs[1708]}, // the tmpfs forgery: facility 0, not the whole text
		fakeMsg{b: recs[1709]}, // root's copy at level 5: facility 1
		fakeMsg{err: errLost},
		fakeMsg{b: []byte("garbage")},
		fakeMsg{b: recs[345]}, // the second record of a malformed synthetic uevent
		fakeMsg{b: recs[344]}, // the test match
		fakeMsg{b: recs[341]},
	)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []Event{
		{Signal: SignalKmsg, Seq: 341},
		{Signal: SignalKmsg, Lost: true},
		{Signal: SignalKmsg, Seq: 344},
		{Signal: SignalKmsg, Seq: 341},
	}
	checkEvents(t, events, want)
	if n := f.Imitations(); n != 3 {
		t.Errorf("Imitations() = %d, want 3 (records 410, 1708, 1709)", n)
	}
	if !strings.Contains(events[0].Detail, ForkMessage) {
		t.Errorf("Detail = %q, want the record's text", events[0].Detail)
	}
	if n := strings.Count(logBuf.String(), "ignoring kernel log record"); n != 1 {
		t.Errorf("logged %d warnings for the garbage record, want 1:\n%s", n, logBuf)
	}
}

func TestUeventFollowerLoop(t *testing.T) {
	linux68 := readTestdata(t, "uevent-linux68-newvmgenid.bin")
	synthetic := readTestdata(t, "uevent-synthetic-platform.bin")
	other := readTestdata(t, "uevent-kernel-net-add.bin")
	for _, accept := range []bool{false, true} {
		log, logBuf := testLogger()
		c := newFakeConn()
		f := &UeventFollower{c: c, accept: accept, log: log}
		events, err := runFake(t, c, f.Run,
			fakeMsg{b: linux68, sender: 4242}, // forged by a process
			fakeMsg{b: other},
			fakeMsg{b: linux68},
			fakeMsg{b: synthetic},
			fakeMsg{err: errLost},
			fakeMsg{b: linux68, sender: 4243},
			fakeMsg{b: readTestdata(t, "uevent-libudev.bin")},
		)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		want := []Event{{Signal: SignalUevent, Seq: 2467}}
		if accept {
			want = append(want, Event{Signal: SignalUevent, Seq: 823})
		}
		want = append(want, Event{Signal: SignalUevent, Lost: true})
		checkEvents(t, events, want)
		if n, want := f.IgnoredSynthetic(), map[bool]uint64{false: 1, true: 0}[accept]; n != want {
			t.Errorf("accept=%v: IgnoredSynthetic() = %d, want %d", accept, n, want)
		}
		logs := logBuf.String()
		if n := strings.Count(logs, "not the kernel"); n != 1 {
			t.Errorf("accept=%v: logged %d warnings about userspace senders, want 1:\n%s", accept, n, logs)
		}
		if !strings.Contains(logs, "sender_port=4242") {
			t.Errorf("accept=%v: the warning does not name the sender:\n%s", accept, logs)
		}
		if n := strings.Count(logs, "ignoring kernel uevent"); n != 1 {
			t.Errorf("accept=%v: logged %d warnings for the libudev message, want 1:\n%s", accept, n, logs)
		}
	}
}

// checkEvents compares events with want on the fields a test controls, and
// checks that every event has a time.
func checkEvents(t *testing.T, events, want []Event) {
	t.Helper()
	if len(events) != len(want) {
		t.Fatalf("got %d events %+v, want %d", len(events), events, len(want))
	}
	for i, e := range events {
		w := want[i]
		if e.Signal != w.Signal || e.Lost != w.Lost || e.Seq != w.Seq || e.Time.IsZero() || e.Detail == "" {
			t.Errorf("event %d = %+v, want signal %s lost %v seq %d, a time and a detail", i, e, w.Signal, w.Lost, w.Seq)
		}
	}
}

func TestFollowReturnsErrors(t *testing.T) {
	boom := errors.New("boom")
	c := newFakeConn()
	f := &KmsgFollower{c: c, log: slog.Default()}
	_, err := runFake(t, c, f.Run, fakeMsg{err: boom}, fakeMsg{})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), kmsgPath) {
		t.Errorf("Run = %v, want an error naming %s and wrapping %v", err, kmsgPath, boom)
	}
}

func TestFollowCancelledBeforeRun(t *testing.T) {
	c := newFakeConn()
	f := &UeventFollower{c: c, log: slog.Default()}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Run(ctx, func(Event) { t.Error("emit called") }); err != nil {
		t.Fatalf("Run with a cancelled context = %v, want nil", err)
	}
	// A later Run must not inherit the expired deadline.
	events, err := runFake(t, c, f.Run, fakeMsg{b: readTestdata(t, "uevent-linux68-newvmgenid.bin")})
	if err != nil || len(events) != 1 {
		t.Fatalf("second Run: %d events, err %v; want 1 event, nil", len(events), err)
	}
}
