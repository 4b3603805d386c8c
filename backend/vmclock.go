package backend

import (
	"context"
	"encoding/binary"
	"fmt"
	abi "github.com/snapsafe/snapsafe/internal/vmclockabi"
	"github.com/snapsafe/snapsafe/runtime/api"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// DefaultVMClockPath is the character device of the first VMClock, created
// by the Linux ptp_vmclock driver (Linux 6.13 and later).
const DefaultVMClockPath = "/dev/vmclock0"

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

// vmclockSeqWait bounds how long a read waits for the hypervisor to finish
// an update: the same bound the kernel driver uses, so a page stuck
// mid-update is an error rather than a hang. The layout itself is in
// internal/vmclockabi.
const vmclockSeqWait = 100 * time.Millisecond

// vmclockLayout reads the VMClock page held in a byte slice: a mapping of
// the device, or a buffer in tests. Every load is atomic because the
// hypervisor writes the page while we read it; the seqlock detects
// inconsistent reads and atomic loads keep each word whole. The slice must be
// 8-byte aligned (mappings are page-aligned).
type vmclockLayout []byte

// load32 and load64 turn atomic native-order loads into the page's
// little-endian values.
func (l vmclockLayout) load32(off int) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], atomic.LoadUint32((*uint32)(unsafe.Pointer(&l[off]))))
	return binary.LittleEndian.Uint32(b[:])
}

func (l vmclockLayout) load64(off int) uint64 {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], atomic.LoadUint64((*uint64)(unsafe.Pointer(&l[off]))))
	return binary.LittleEndian.Uint64(b[:])
}

// vmclockHeader is the constant part of the page.
type vmclockHeader struct {
	size    uint32
	version uint16
}

// checkVMClockLen rejects a region too small to hold the fields we read.
func checkVMClockLen(n int64) error {
	if n < abi.MinSize {
		return fmt.Errorf("too short: %d bytes, need at least %d (up to vm_generation_counter)", n, abi.MinSize)
	}
	return nil
}

// header checks that l holds a VMClock page this code can read.
func (l vmclockLayout) header() (vmclockHeader, error) {
	if err := checkVMClockLen(int64(len(l))); err != nil {
		return vmclockHeader{}, err
	}
	if m := l.load32(abi.OffMagic); m != abi.Magic {
		return vmclockHeader{}, fmt.Errorf("bad magic %#08x, want %#08x (\"VCLK\"): not a VMClock page", m, abi.Magic)
	}
	h := vmclockHeader{
		size:    l.load32(abi.OffSize),
		version: uint16(l.load32(abi.OffVersion)),
	}
	if h.version != abi.Version {
		return vmclockHeader{}, fmt.Errorf("unsupported VMClock version %d (snapsafe reads version %d): update snapsafe", h.version, abi.Version)
	}
	if h.size < abi.MinSize {
		return vmclockHeader{}, fmt.Errorf("VMClock page declares %d bytes, fewer than the %d that hold vm_generation_counter: the hypervisor offers no generation counter", h.size, abi.MinSize)
	}
	return h, nil
}

// vmclockSnapshot is one consistent read of the words snapsafe uses.
type vmclockSnapshot struct {
	magic   uint32
	flags   uint64
	counter uint64
}

// tryRead makes one seqlock read attempt. It fails when the hypervisor was
// updating the page (seq_count odd) or updated it during the read
// (seq_count changed). Go's atomic loads are sequentially consistent, which
// gives the load ordering a seqlock reader needs.
func (l vmclockLayout) tryRead() (vmclockSnapshot, bool) {
	seq := l.load32(abi.OffSeq)
	if seq&1 != 0 {
		return vmclockSnapshot{}, false
	}
	s := vmclockSnapshot{
		magic:   l.load32(abi.OffMagic),
		flags:   l.load64(abi.OffFlags),
		counter: l.load64(abi.OffCounter),
	}
	return s, l.load32(abi.OffSeq) == seq
}

// read returns a consistent snapshot, retrying for at most vmclockSeqWait.
// It also rejects a page whose magic changed since it was opened.
func (l vmclockLayout) read() (vmclockSnapshot, error) {
	var deadline time.Time
	for {
		if s, ok := l.tryRead(); ok {
			if s.magic != abi.Magic {
				return s, fmt.Errorf("magic changed to %#08x: the VMClock page was reset or replaced", s.magic)
			}
			return s, nil
		}
		// Only a retry pays for the clock read.
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(vmclockSeqWait)
		} else if now.After(deadline) {
			return vmclockSnapshot{}, fmt.Errorf("seq_count stayed odd or kept changing for %v: the hypervisor is stuck updating the VMClock page", vmclockSeqWait)
		}
		runtime.Gosched()
	}
}

// VMClock is an open, read-only mapping of a VMClock device (or of a file
// with the same layout). Counter may be called from any number of
// goroutines at once, but no method concurrently with Close.
type VMClock struct {
	path   string
	f      *os.File
	layout vmclockLayout // the mapping; nil after Close
	hdr    vmclockHeader
	flags  uint64 // flags at open
}

// Counter reads vm_generation_counter under the page's seqlock. ok is false
// when the hypervisor does not maintain the counter (flag bit 8 clear).
// An error means the page could not be read consistently, its magic
// changed, or the VMClock is closed.
func (c *VMClock) Counter() (gen uint64, ok bool, err error) {
	if c.layout == nil {
		return 0, false, fmt.Errorf("reading VMClock %s: %w", c.path, os.ErrClosed)
	}
	s, err := c.layout.read()
	if err != nil {
		return 0, false, fmt.Errorf("reading VMClock %s: %w", c.path, err)
	}
	if s.flags&abi.FlagCounter == 0 {
		return 0, false, nil
	}
	return s.counter, true, nil
}

// CounterWord returns the address of vm_generation_counter in the mapping,
// for a hot path that only needs to notice a change: one aligned 64-bit
// atomic load sees the old or the new value, never a mix, so it needs no
// seqlock for that. It is nil when the counter is absent (flag bit 8 clear
// at open) or the VMClock is closed, and valid until Close.
func (c *VMClock) CounterWord() *uint64 {
	if c.layout == nil || c.flags&abi.FlagCounter == 0 {
		return nil
	}
	return (*uint64)(unsafe.Pointer(&c.layout[abi.OffCounter]))
}

// Notifies reports whether the hypervisor notifies the guest of every page
// update (flag bit 9), so that poll(2) on the device wakes on a restore
// (Linux 7.0 and later). The flag is read when the device is opened, as the
// driver does when it sets up the notification.
func (c *VMClock) Notifies() bool { return c.flags&abi.FlagNotify != 0 }

// File returns the open read-only device so that the provider can hand it to
// clients over a Unix socket with SCM_RIGHTS. The VMClock keeps ownership: do
// not close it; it is nil after Close.
//
// A client maps the descriptor itself, read-only: mmap of exactly one page at
// offset 0 with PROT_READ and MAP_SHARED (the driver refuses anything else),
// and reads vm_generation_counter under seq_count as Counter does. Clients
// should only map it: read(2) on a VMClock descriptor moves the driver's
// notification state, which every copy of the descriptor shares — which is
// why VMClockSource waits for notifications on a descriptor of its own.
func (c *VMClock) File() *os.File { return c.f }

// Path returns the path the VMClock was opened from.
func (c *VMClock) Path() string { return c.path }

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
	clock    *VMClock
	interval time.Duration
	// notify is set when the device notifies: a private descriptor of the
	// device, so that nothing a client does with File can consume the
	// notification.
	notify *vmclockNotifier
	// last is the counter value already accounted for, read when the source
	// was created so that a restore between creation and Run is reported.
	last uint64
}

// vmclockNotifier waits for device notifications. Its run method is
// platform-specific.
type vmclockNotifier struct {
	f *os.File
	// ack consumes a notification so that the next wait blocks until the
	// next one.
	ack func() error
}

func (n *vmclockNotifier) close() error { return n.f.Close() }

// NewVMClockSource opens the VMClock at path (usually DefaultVMClockPath).
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
	c, err := OpenVMClock(path)
	if err != nil {
		return nil, err
	}
	gen, ok, err := c.Counter()
	if err == nil && !ok {
		err = fmt.Errorf("VMClock %s does not maintain vm_generation_counter (flag bit 8 clear), so it cannot report snapshot restores: %w; use the acpi backend", path, ErrNotSupported)
	}
	s := &VMClockSource{clock: c, interval: opts.Interval, last: gen}
	if err == nil && c.Notifies() {
		s.notify, err = newVMClockNotifier(path)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// Clock returns the VMClock the source reads, for handing its File to
// clients.
func (s *VMClockSource) Clock() *VMClock { return s.clock }

// Close releases the device. Run must have returned.
func (s *VMClockSource) Close() error {
	err := s.clock.Close()
	if s.notify != nil {
		if nerr := s.notify.close(); err == nil {
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
		Name:           "vmclock",
		Path:           s.clock.path,
		Magic:          fmt.Sprintf("%#08x", uint32(abi.Magic)),
		Version:        s.clock.hdr.version,
		Size:           s.clock.hdr.size,
		CounterPresent: s.clock.flags&abi.FlagCounter != 0,
		Notifications:  s.clock.Notifies(),
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
		return s.notify.run(ctx, check)
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
		return fmt.Errorf("VMClock %s: the hypervisor stopped maintaining vm_generation_counter (flag bit 8 cleared): restores can no longer be seen; restart snapsafed with the acpi backend", s.clock.path)
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
