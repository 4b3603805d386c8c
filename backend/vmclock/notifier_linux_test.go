package vmclock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitLimit bounds every wait for a condition; it is only reached when a
// test fails.
const waitLimit = 10 * time.Second

func TestNewNotifier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmclock0")
	if err := os.WriteFile(path, Page(testPageSize, FlagCounter|FlagNotify, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := NewNotifier(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ack(); err != nil {
		t.Fatalf("acknowledging on the page file: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewNotifier(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Fatal("NewNotifier opened an absent device")
	}
}

// pipeNotifier returns a Notifier on a pipe, which behaves like the driver
// here (a regular file always polls readable): readable until the reader
// acknowledges, POLLHUP when no more notifications can come. notify sends
// one notification; closing w stops them.
func pipeNotifier(t *testing.T, ack func(r *os.File) error) (n *Notifier, w *os.File, notify func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	n = &Notifier{f: r, ack: func() error { return ack(r) }}
	notify = func() {
		if _, err := w.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	return n, w, notify
}

func readOne(r *os.File) error {
	_, err := r.Read(make([]byte, 1))
	return err
}

func waitRun(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %v", waitLimit)
		return nil
	}
}

// TestNotifierRun: every notification is acknowledged and wakes onWake
// once; POLLHUP wakes it a last time and ends Run with an error.
func TestNotifierRun(t *testing.T) {
	n, w, notify := pipeNotifier(t, readOne)
	wakes := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- n.Run(context.Background(), func() error { wakes <- struct{}{}; return nil })
	}()
	const count = 10
	for range count {
		notify()
		select {
		case <-wakes:
		case <-time.After(waitLimit):
			t.Fatalf("no wake-up within %v", waitLimit)
		}
	}
	// Without the acknowledgements the real device would stay readable
	// and Run would spin.
	waitPipeDrained(t, n.f)
	w.Close() // the notifications stop: POLLHUP
	err := waitRun(t, done)
	if err == nil || !strings.Contains(err.Error(), "notifications stopped") {
		t.Fatalf("Run after POLLHUP = %v, want the notifications-stopped error", err)
	}
	if len(wakes) != 1 {
		t.Fatalf("%d wake-ups after POLLHUP, want 1 (the check that explains it)", len(wakes))
	}
}

func TestNotifierWakeError(t *testing.T) {
	n, _, notify := pipeNotifier(t, readOne)
	done := make(chan error, 1)
	failed := errors.New("check failed")
	go func() { done <- n.Run(context.Background(), func() error { return failed }) }()
	notify()
	if err := waitRun(t, done); !errors.Is(err, failed) {
		t.Fatalf("Run = %v, want onWake's error", err)
	}
}

func TestNotifierCancel(t *testing.T) {
	n, _, _ := pipeNotifier(t, func(*os.File) error { return errors.New("no notification was sent") })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, func() error { return errors.New("no notification was sent") }) }()
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

// waitPipeDrained waits until r has no unread bytes (TIOCINQ is FIONREAD).
func waitPipeDrained(t *testing.T, r *os.File) {
	t.Helper()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var unread int
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		var ierr error
		if err := rc.Control(func(fd uintptr) { unread, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
			t.Fatal(err)
		}
		if ierr != nil {
			t.Fatal(ierr)
		}
		if unread == 0 {
			return
		}
	}
	t.Fatalf("%d notification bytes still unacknowledged after %v", unread, waitLimit)
}
