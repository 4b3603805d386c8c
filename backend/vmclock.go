package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// DefaultVMClockInterval is how often VMClockSource reads the counter when
// the device cannot notify.
//
// Cost: each interval is one timer wake-up of one goroutine (about 100 a
// second) and one seqlock read — five atomic loads from an already mapped
// page, no system call, well under a microsecond of CPU. Latency: the provider sees a
// restore at most one interval (plus scheduling delay) after the vCPUs
// resume. Processes that read vm_generation_counter from their own mapping
// on their hot path are not exposed to that latency at all.
const DefaultVMClockInterval = 10 * time.Millisecond

// VMClockOptions configures a VMClockSource.
type VMClockOptions struct {
	// Interval is how often the counter is read when the device cannot
	// notify. Zero means DefaultVMClockInterval.
	Interval time.Duration
}

// VMClockSource is the "vmclock" Source: it reports a change of the VMClock
// vm_generation_counter.
//
// The hypervisor moves the counter when it restores the VM from a snapshot
// (or starts a clone), before any vCPU runs again. Where the device notifies
// (flag bit 9), Run sleeps in poll(2) on the device; otherwise it reads the
// counter every Interval.
//
// Every change seen by one read is one Event. A jump by more than one between
// two reads is still reported once: restores that follow each other faster
// than we read are indistinguishable from one restore, and one bump of the
// generation covers them all. A decrease (a clone started from an older
// snapshot) is a change like any other.
type VMClockSource struct {
	clock    *vmclock.VMClock
	interval time.Duration
	// notify is set when the device notifies: a private descriptor of the
	// device, so that nothing a client does with File can consume the
	// notification.
	notify notifier
	// last is the counter value already accounted for, read when the source
	// was created so that a restore between creation and Run is reported.
	last uint64
}

// notifier waits for device notifications: a *vmclock.Notifier, or a
// stand-in in tests.
type notifier interface {
	Run(ctx context.Context, onWake func() error) error
	Close() error
}

// NewVMClockSource opens the VMClock at path (usually vmclock.DefaultPath).
// It fails with an error wrapping ErrNoDevice when there is no device there,
// and with one wrapping ErrNotSupported when the device does not maintain
// vm_generation_counter. Close releases the device.
func NewVMClockSource(path string, opts VMClockOptions) (*VMClockSource, error) {
	if opts.Interval < 0 {
		return nil, fmt.Errorf("VMClock poll interval %v is negative", opts.Interval)
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultVMClockInterval
	}
	c, err := vmclock.Open(path)
	if err != nil {
		return nil, err
	}
	gen, ok, err := c.Counter()
	if err == nil && !ok {
		err = fmt.Errorf("VMClock %s does not maintain vm_generation_counter (flag bit 8 clear), so it cannot report snapshot restores: %w; use the acpi backend", path, ErrNotSupported)
	}
	s := &VMClockSource{clock: c, interval: opts.Interval, last: gen}
	if err == nil && c.Notifies() {
		var n *vmclock.Notifier
		if n, err = vmclock.NewNotifier(path); err == nil {
			s.notify = n
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// Clock returns the VMClock the source reads, for handing its File to
// clients.
func (s *VMClockSource) Clock() *vmclock.VMClock { return s.clock }

// Close releases the device. Run must have returned.
func (s *VMClockSource) Close() error {
	err := s.clock.Close()
	if s.notify != nil {
		if nerr := s.notify.Close(); err == nil {
			err = nerr
		}
		s.notify = nil
	}
	return err
}

// Name returns "vmclock".
func (s *VMClockSource) Name() string { return "vmclock" }

// Info describes the device and the current counter.
func (s *VMClockSource) Info() api.SourceInfo {
	info := api.SourceInfo{
		Name:            "vmclock",
		DetectsRestores: true,
		Path:            s.clock.Path(),
		Magic:           fmt.Sprintf("%#08x", uint32(vmclock.Magic)),
		Version:         vmclock.Version, // the only version Open accepts
		Size:            s.clock.Size(),
		CounterPresent:  s.clock.HasCounter(),
		Notifications:   s.clock.Notifies(),
	}
	if s.notify != nil {
		info.Mode = "notify"
	} else {
		info.Mode = "poll"
		info.PollInterval = s.interval.String()
	}
	if gen, ok, err := s.clock.Counter(); err != nil {
		info.CounterError = err.Error()
	} else if ok {
		info.Counter = &gen
	}
	return info
}

// Run reports every change of vm_generation_counter until ctx is done. It
// fails when the page can no longer be read, its magic changes, or the
// hypervisor stops maintaining the counter. Run must not be called
// concurrently with itself.
func (s *VMClockSource) Run(ctx context.Context, emit func(Event)) error {
	check := func() error { return s.check(emit) }
	if err := check(); err != nil {
		return err
	}
	if s.notify != nil {
		return s.notify.Run(ctx, check)
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := check(); err != nil {
				return err
			}
		}
	}
}

// check reads the counter and emits one Event if it changed.
func (s *VMClockSource) check(emit func(Event)) error {
	gen, ok, err := s.clock.Counter()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("VMClock %s: the hypervisor stopped maintaining vm_generation_counter (flag bit 8 cleared): restores can no longer be seen; restart snapsafed with the acpi backend", s.clock.Path())
	}
	if gen == s.last {
		return nil
	}
	emit(Event{
		Kind:   KindVMClock,
		Signal: "vmclock",
		Detail: fmt.Sprintf("vm_generation_counter %d -> %d", s.last, gen),
		Time:   time.Now(),
	})
	s.last = gen
	return nil
}
