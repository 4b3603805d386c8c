package backend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/snapsafe/snapsafe/acpi"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// ACPIOptions configures the ACPI VMGENID source.
type ACPIOptions struct {
	// AcceptSynthetic also counts root-written synthetic uevents on the
	// VMGENID device (echo "change <uuid>" > .../uevent).
	AcceptSynthetic bool
	// KmsgMatch names, for tests only, a second kernel-log record that
	// counts as a restore besides the vmgenid driver's fork record (which
	// always counts), written "<LEVEL>TEXT" as dmesg -r prints a kernel
	// record (see acpi.ParseKmsgMatch). It is matched as exactly as the
	// fork record — facility 0, that level, that whole text — so that a
	// test can use a record root can make the kernel print on demand, and
	// nothing a process can forge. Empty means none.
	KmsgMatch string
	Logger    *slog.Logger
}

// ACPISource is the "acpi" Source: it follows the vmgenid driver's kernel
// log record and VMGENID uevents, and coalesces the two signals of one
// restore into one event.
type ACPISource struct {
	opts   ACPIOptions
	info   acpi.Info
	kmsg   *acpi.KmsgFollower
	uevent *acpi.UeventFollower
	// kmsgErr and ueventErr say why a follower could not be opened.
	kmsgErr, ueventErr error
	co                 *coalescer
}

// NewACPISource checks that a VMGENID device with a bound driver is present
// and opens the followers. It fails with an error wrapping ErrNoDevice when
// there is no device or no driver, and when no signal can be followed. It
// logs nothing: a follower that could not be opened is reported by Run and
// by Info (see also SeesRestores).
func NewACPISource(opts ACPIOptions) (*ACPISource, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var also acpi.KmsgMatch
	if opts.KmsgMatch != "" {
		var err error
		if also, err = acpi.ParseKmsgMatch(opts.KmsgMatch); err != nil {
			return nil, fmt.Errorf("acpi backend: test kernel-log match: %w", err)
		}
	}
	if _, err := acpi.Discover(); err != nil {
		// acpi's sentinels are backend's: wrap them once.
		if errors.Is(err, ErrNotSupported) || errors.Is(err, ErrNoDevice) {
			return nil, fmt.Errorf("acpi backend: %w", err)
		}
		// A device without a driver (or a sysfs that cannot be read)
		// reports no restores: to this source it is as good as absent.
		return nil, fmt.Errorf("acpi backend: %w: %w", ErrNoDevice, err)
	}
	s := &ACPISource{opts: opts, info: acpi.Probe(), co: newCoalescer(coalesceWindow)}
	s.kmsg, s.kmsgErr = acpi.NewKmsgFollower(acpi.KmsgOptions{Also: also, Logger: opts.Logger})
	s.uevent, s.ueventErr = acpi.NewUeventFollower(acpi.UeventOptions{AcceptSynthetic: opts.AcceptSynthetic, Logger: opts.Logger})
	if s.kmsgErr != nil && s.ueventErr != nil {
		return nil, fmt.Errorf("acpi backend: cannot follow any kernel signal: %w", errors.Join(s.kmsgErr, s.ueventErr))
	}
	return s, nil
}

// SeesRestores reports whether the source follows a signal this kernel
// actually sends on a restore: the kernel log, or uevents on a kernel that
// sends the VMGENID uevent. Without one it sees only synthetic events, which
// are not restores.
func (s *ACPISource) SeesRestores() bool {
	return s.blindness() == ""
}

// blindness says why the source cannot see a restore on this machine, or
// returns "" when it can.
func (s *ACPISource) blindness() string {
	if s.kmsg != nil {
		return ""
	}
	why := "/dev/kmsg is not readable (run as root or with CAP_SYSLOG)"
	if !errors.Is(s.kmsgErr, fs.ErrPermission) {
		why = "the kernel log cannot be read (" + s.kmsgErr.Error() + ")"
	}
	switch {
	case s.uevent == nil:
		return why + " and no uevent socket can be opened (" + s.ueventErr.Error() + ")"
	case !hasSignal(s.info, acpi.SignalUevent):
		return why + " and this kernel (" + s.info.Kernel + ") sends no VMGENID uevent"
	}
	return ""
}

// Name returns "acpi".
func (s *ACPISource) Name() string { return "acpi" }

// Info describes the device, the kernel and the signals followed.
func (s *ACPISource) Info() api.SourceInfo {
	var followed []string
	if s.kmsg != nil {
		followed = append(followed, acpi.SignalKmsg)
	}
	if s.uevent != nil {
		followed = append(followed, acpi.SignalUevent)
	}
	info := api.SourceInfo{
		Name:            "acpi",
		DetectsRestores: s.SeesRestores(),
		Kernel:          s.info.Kernel,
		KernelSignals:   s.info.Signals,
		Followed:        followed,
		ForkRecords:     s.info.ForkRecords,
		AcceptSynthetic: s.opts.AcceptSynthetic,
		Coalesced:       s.co.absorbedCount(),
		KmsgMatch:       s.opts.KmsgMatch,
	}
	if why := s.blindness(); why != "" {
		info.Why = "restores will not be detected: " + why
	}
	if s.kmsg != nil {
		info.IgnoredImitations = s.kmsg.Imitations()
	}
	if s.uevent != nil {
		info.IgnoredSynthetic = s.uevent.IgnoredSynthetic()
	}
	if len(s.info.Devices) > 0 {
		d := s.info.Devices[0]
		info.Device = d.SysfsPath
		info.Driver = d.Driver
	}
	return info
}

// Run follows both signals until ctx is done or a follower fails.
func (s *ACPISource) Run(ctx context.Context, emit func(Event)) error {
	switch {
	case s.kmsgErr != nil:
		// Without the kernel log only 6.8 kernels (and synthetic events)
		// signal a restore; say so loudly.
		s.opts.Logger.Warn("acpi backend: not following the kernel log; most kernels signal restores only there", "err", s.kmsgErr)
	case s.ueventErr != nil:
		s.opts.Logger.Warn("acpi backend: not following uevents", "err", s.ueventErr)
	}
	if s.opts.KmsgMatch != "" {
		s.opts.Logger.Warn("acpi backend: for tests, a second kernel log record also counts as a restore", "record", s.opts.KmsgMatch)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex // one event at a time through the coalescer
	relay := func(ev acpi.Event) {
		mu.Lock()
		defer mu.Unlock()
		if !s.co.take(ev.Signal, ev.Lost, ev.Time) {
			s.opts.Logger.Debug("coalesced a second signal of one restore", "signal", ev.Signal, "detail", ev.Detail)
			return
		}
		emit(Event{Kind: KindACPI, Signal: ev.Signal, Lost: ev.Lost, Detail: ev.Detail, Time: ev.Time})
	}
	var followers []interface {
		Run(context.Context, func(acpi.Event)) error
	}
	if s.kmsg != nil {
		followers = append(followers, s.kmsg)
	}
	if s.uevent != nil {
		followers = append(followers, s.uevent)
	}
	errc := make(chan error, len(followers))
	for _, f := range followers {
		go func() { errc <- f.Run(ctx, relay) }()
	}
	var first error
	for range followers {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel() // one follower failing stops the source
		}
	}
	return first
}

// Close releases the followers. It is idempotent.
func (s *ACPISource) Close() error {
	var errs []error
	if s.kmsg != nil {
		errs = append(errs, s.kmsg.Close())
	}
	if s.uevent != nil {
		errs = append(errs, s.uevent.Close())
	}
	return errors.Join(errs...)
}

// coalesceWindow bounds how far apart the two signals of one restore may
// arrive. A 6.8 kernel sends both from the same driver callback, within
// microseconds.
const coalesceWindow = time.Second

// coalescer turns the events of several signals into restores when some
// kernels report each restore on more than one signal.
//
// The rule: each signal counts its events, and the n-th event of any
// signal is the n-th restore. An event is a new restore when its signal's
// count exceeds the number of restores so far; otherwise another signal
// already reported it and it is absorbed — but only if that report came
// within the window. An event that finds the last restore older than the
// window is a new restore whatever the counts say, and the counts are
// realigned, so a signal that once missed an event cannot hold back later
// restores. A possibly lost event is always a restore and also realigns.
// Every restore is reported on its first signal, so coalescing never
// delays a bump; a spurious extra bump is possible, a missed one is not.
type coalescer struct {
	window   time.Duration
	counts   map[string]uint64
	restores uint64
	last     time.Time
	absorbed uint64
	mu       sync.Mutex // guards absorbed for Info
}

func newCoalescer(window time.Duration) *coalescer {
	return &coalescer{window: window, counts: map[string]uint64{}}
}

// take reports whether an event of signal at time t is a new restore.
func (c *coalescer) take(signal string, lost bool, t time.Time) bool {
	c.counts[signal]++
	switch {
	case lost:
	case c.counts[signal] > c.restores:
		c.restores = c.counts[signal]
		c.last = t
		return true
	case t.Sub(c.last) <= c.window:
		c.mu.Lock()
		c.absorbed++
		c.mu.Unlock()
		return false
	}
	// A new restore whatever the counts say: realign them so that this
	// event is its signal's report of it and the other signals' next
	// events are theirs.
	c.restores++
	c.last = t
	for s := range c.counts {
		c.counts[s] = c.restores - 1
	}
	c.counts[signal] = c.restores
	return true
}

func (c *coalescer) absorbedCount() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.absorbed
}
