package backend

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/internal/testvmclock"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// The tests stand in for the hypervisor with a regular file holding a
// VMClock page (see internal/testvmclock); the reader itself is tested in
// backend/vmclock.

// waitLimit bounds every wait for a condition; it is only reached when a
// test fails.
const waitLimit = 10 * time.Second

// runSource runs s in the background. Its events arrive on the returned
// channel; stop cancels Run and returns its result.
func runSource(t *testing.T, s Source) (events chan Event, done chan error, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events = make(chan Event, 100)
	done = make(chan error, 1)
	go func() { done <- s.Run(ctx, func(e Event) { events <- e }) }()
	stop = func() error {
		cancel()
		return waitDone(t, done)
	}
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return events, done, stop
}

func waitEvent(t *testing.T, events chan Event) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(waitLimit):
		t.Fatalf("no event within %v", waitLimit)
		return Event{}
	}
}

func waitDone(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		done <- err // for the cleanup
		return err
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %v", waitLimit)
		return nil
	}
}

func checkEvent(t *testing.T, e Event, from, to uint64) {
	t.Helper()
	want := fmt.Sprintf("vm_generation_counter %d -> %d", from, to)
	if e.Kind != KindVMClock || e.Signal != "vmclock" || e.Detail != want || e.Lost || e.Time.IsZero() {
		t.Fatalf("event = %+v, want KindVMClock/vmclock %q with a time", e, want)
	}
}

func TestVMClockSourceCounterAbsent(t *testing.T) {
	s, err := NewVMClockSource(testvmclock.WritePage(t, vmclock.FlagNotify, 9), VMClockOptions{})
	if err == nil {
		s.Close()
		t.Fatal("NewVMClockSource accepted a device without vm_generation_counter")
	}
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "flag bit 8 clear") {
		t.Fatalf("NewVMClockSource error = %v, want ErrNotSupported naming flag bit 8", err)
	}
}

func TestVMClockSourcePolling(t *testing.T) {
	path := testvmclock.WritePage(t, vmclock.FlagCounter, 5)
	hv := testvmclock.New(t, path)
	s, err := NewVMClockSource(path, VMClockOptions{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	events, _, stop := runSource(t, s)

	const n = 20
	for k := uint64(1); k <= n; k++ {
		hv.SetCounter(5 + k)
		checkEvent(t, waitEvent(t, events), 4+k, 5+k)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if len(events) != 0 {
		t.Fatalf("%d events beyond the %d increments, first %+v", len(events), n, <-events)
	}
}

// TestVMClockSourceJumps checks that a change made before Run is reported,
// that a jump by several is one event, and that a decrease is reported.
func TestVMClockSourceJumps(t *testing.T) {
	path := testvmclock.WritePage(t, vmclock.FlagCounter, 5)
	hv := testvmclock.New(t, path)
	s, err := NewVMClockSource(path, VMClockOptions{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	hv.SetCounter(8)
	events, _, stop := runSource(t, s)
	checkEvent(t, waitEvent(t, events), 5, 8)
	hv.SetCounter(2)
	checkEvent(t, waitEvent(t, events), 8, 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(events) != 0 {
		t.Fatalf("unexpected event %+v", <-events)
	}
}

func TestVMClockSourceRuntimeFailures(t *testing.T) {
	tests := []struct {
		name    string
		change  func(hv *testvmclock.Hypervisor)
		wantErr string
	}{
		{"counter flag cleared", func(hv *testvmclock.Hypervisor) { hv.Store64(vmclock.OffFlags, 0) }, "stopped maintaining vm_generation_counter"},
		{"magic changed", func(hv *testvmclock.Hypervisor) { hv.Store32(vmclock.OffMagic, 0) }, "magic changed to 0x000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := testvmclock.WritePage(t, vmclock.FlagCounter, 5)
			hv := testvmclock.New(t, path)
			s, err := NewVMClockSource(path, VMClockOptions{Interval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			events, done, _ := runSource(t, s)
			hv.Update(func() { tt.change(hv) })
			err = waitDone(t, done)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.wantErr)
			}
			if len(events) != 0 {
				t.Fatalf("unexpected event %+v", <-events)
			}
		})
	}
}

func TestVMClockSourceInfo(t *testing.T) {
	path := testvmclock.WritePage(t, vmclock.FlagCounter, 77)
	s, err := NewVMClockSource(path, VMClockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name() != "vmclock" {
		t.Errorf("Name() = %q", s.Name())
	}
	counter := uint64(77)
	want := api.SourceInfo{
		Name:            "vmclock",
		DetectsRestores: true,
		Path:            path,
		Magic:           "0x4b4c4356",
		Version:         1,
		Size:            testvmclock.PageSize,
		CounterPresent:  true,
		Notifications:   false,
		Mode:            "poll",
		PollInterval:    "10ms",
		Counter:         &counter,
	}
	if info := s.Info(); !reflect.DeepEqual(info, want) {
		t.Errorf("Info() = %+v, want %+v", info, want)
	}
	if _, err := NewVMClockSource(path, VMClockOptions{Interval: -time.Second}); err == nil {
		t.Error("NewVMClockSource accepted a negative interval")
	}
}

// fakeNotifier stands in for the device's notifications (a regular file
// cannot: it always polls readable; backend/vmclock tests the real wait):
// Run calls onWake once for each value sent on wake, and fails when wake
// is closed, as the real one does on POLLHUP.
type fakeNotifier struct {
	wake   chan struct{}
	closed atomic.Bool
}

func (n *fakeNotifier) Run(ctx context.Context, onWake func() error) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-n.wake:
			if !ok {
				return errors.New("notifications stopped")
			}
			if err := onWake(); err != nil {
				return err
			}
		}
	}
}

func (n *fakeNotifier) Close() error {
	n.closed.Store(true)
	return nil
}

// TestVMClockSourceNotify drives the notification path: a source on a
// device that notifies waits for notifications instead of polling, checks
// the counter on each, and ends when they stop.
func TestVMClockSourceNotify(t *testing.T) {
	path := testvmclock.WritePage(t, vmclock.FlagCounter|vmclock.FlagNotify, 5)
	hv := testvmclock.New(t, path)
	s, err := NewVMClockSource(path, VMClockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.notify.(*vmclock.Notifier); !ok || s.Info().Mode != "notify" {
		t.Fatalf("source with the notification flag does not wait for notifications: %+v", s.Info())
	}
	s.notify.Close()
	fake := &fakeNotifier{wake: make(chan struct{})}
	s.notify = fake

	events, done, _ := runSource(t, s)
	fake.wake <- struct{}{} // a wake-up without a change reports nothing
	const n = 10
	for k := uint64(1); k <= n; k++ {
		hv.SetCounter(5 + k)
		fake.wake <- struct{}{}
		checkEvent(t, waitEvent(t, events), 4+k, 5+k)
	}
	close(fake.wake)
	err = waitDone(t, done)
	if err == nil || !strings.Contains(err.Error(), "notifications stopped") {
		t.Fatalf("Run after the notifications stopped = %v, want their error", err)
	}
	if len(events) != 0 {
		t.Fatalf("%d events beyond the %d changes, first %+v", len(events), n, <-events)
	}
	if err := s.Close(); err != nil || !fake.closed.Load() {
		t.Fatalf("Close() = %v, notifier closed %v", err, fake.closed.Load())
	}
}

func TestIntegrationVMClockSource(t *testing.T) {
	c, err := vmclock.Open(vmclock.DefaultPath)
	if errors.Is(err, ErrNoDevice) {
		t.Skipf("no VMClock device on this machine: needs a hypervisor that offers VMClock and the ptp_vmclock driver (Linux 6.13+, CONFIG_PTP_1588_CLOCK_VMCLOCK): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	_, ok, err := c.Counter()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}

	s, err := NewVMClockSource(vmclock.DefaultPath, VMClockOptions{})
	if !ok {
		if !errors.Is(err, ErrNotSupported) {
			t.Fatalf("NewVMClockSource on a device without the counter = %v, want ErrNotSupported", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Info() = %+v", s.Info())
	events, _, stop := runSource(t, s)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for len(events) > 0 {
		t.Logf("event during the run: %+v", <-events)
	}
}
