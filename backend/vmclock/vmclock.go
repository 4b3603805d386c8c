// Package vmclock reads a VMClock device: the page a hypervisor shares with
// the guest, whose vm_generation_counter it moves each time it restores the
// VM from a snapshot (or starts a clone), before any vCPU runs again.
//
// Open maps the device read-only, VMClock reads the counter under the page's
// seqlock (or hands a hot path the counter's word), and Notifier waits for
// the device's notifications. The package is all a client needs to compare
// the counter itself; the event source that bumps the generation on a change
// is backend.VMClockSource.
//
// The layout constants follow the Linux UAPI header
// include/uapi/linux/vmclock-abi.h. Everything is little-endian. Only the
// fields snapsafe reads are named; the clock fields between the flags and
// the counter (status, leap seconds, counter period, time) are not.
package vmclock

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/snapsafe/snapsafe/internal/errs"
)

// The layout of the page.
const (
	OffMagic   = 0x00 // uint32: Magic
	OffSize    = 0x04 // uint32: bytes of the region the page describes
	OffVersion = 0x08 // uint16 version, then uint8 counter_id and uint8 time_type
	OffSeq     = 0x0c // uint32 seq_count: odd while the hypervisor updates the page
	OffFlags   = 0x18 // uint64 flags (after the uint64 disruption_marker at 0x10)
	OffCounter = 0x68 // uint64 vm_generation_counter, last field of version 1

	// MinSize is how much of the page snapsafe reads: everything up to the
	// end of vm_generation_counter.
	MinSize = OffCounter + 8

	// Magic is "VCLK" read as a little-endian uint32.
	Magic = 0x4b4c4356
	// Version is the only layout version snapsafe knows.
	Version = 1

	// FlagCounter says the hypervisor maintains vm_generation_counter: it
	// moves it on every restore of the VM from a snapshot, before the
	// guest's vCPUs run again.
	FlagCounter = 1 << 8
	// FlagNotify says the hypervisor raises a notification each time
	// seq_count becomes a new even value; the driver turns it into poll(2)
	// readiness on the device (Linux 7.0 and later).
	FlagNotify = 1 << 9
)

// DefaultPath is the character device of the first VMClock, created by the
// Linux ptp_vmclock driver (Linux 6.13 and later).
const DefaultPath = "/dev/vmclock0"

// ErrNotSupported is returned (wrapped) on operating systems without the
// ptp_vmclock driver. It is the same value as backend.ErrNotSupported.
var ErrNotSupported = errs.ErrNotSupported

// ErrNoDevice is returned (wrapped) by Open when there is no VMClock device.
// It is the same value as backend.ErrNoDevice.
var ErrNoDevice = errs.ErrNoDevice

// Page returns a page of size bytes (at least MinSize) holding a valid
// header, flags and counter, as a hypervisor would publish it: for tests
// and tools that stand in for the hypervisor with a file.
func Page(size int, flags, counter uint64) []byte {
	b := make([]byte, max(size, MinSize))
	binary.LittleEndian.PutUint32(b[OffMagic:], Magic)
	binary.LittleEndian.PutUint32(b[OffSize:], uint32(len(b)))
	binary.LittleEndian.PutUint16(b[OffVersion:], Version)
	b[OffVersion+2] = 0xff // counter_id: no clock counter offered
	binary.LittleEndian.PutUint64(b[OffFlags:], flags)
	binary.LittleEndian.PutUint64(b[OffCounter:], counter)
	return b
}

// seqWait bounds how long a read waits for the hypervisor to finish an
// update: the same bound the kernel driver uses, so a page stuck mid-update
// is an error rather than a hang.
const seqWait = 100 * time.Millisecond

// layout reads the VMClock page held in a byte slice: a mapping of the
// device, or a buffer in tests. Every load is atomic because the hypervisor
// writes the page while we read it; the seqlock detects inconsistent reads
// and atomic loads keep each word whole. The slice must be 8-byte aligned
// (mappings are page-aligned).
type layout []byte

// load32 and load64 turn atomic native-order loads into the page's
// little-endian values.
func (l layout) load32(off int) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], atomic.LoadUint32((*uint32)(unsafe.Pointer(&l[off]))))
	return binary.LittleEndian.Uint32(b[:])
}

func (l layout) load64(off int) uint64 {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], atomic.LoadUint64((*uint64)(unsafe.Pointer(&l[off]))))
	return binary.LittleEndian.Uint64(b[:])
}

// header is the constant part of the page.
type header struct {
	size    uint32
	version uint16
}

// checkLen rejects a region too small to hold the fields we read.
func checkLen(n int64) error {
	if n < MinSize {
		return fmt.Errorf("too short: %d bytes, need at least %d (up to vm_generation_counter)", n, MinSize)
	}
	return nil
}

// header checks that l holds a VMClock page this code can read.
func (l layout) header() (header, error) {
	if err := checkLen(int64(len(l))); err != nil {
		return header{}, err
	}
	if m := l.load32(OffMagic); m != Magic {
		return header{}, fmt.Errorf("bad magic %#08x, want %#08x (\"VCLK\"): not a VMClock page", m, Magic)
	}
	h := header{
		size:    l.load32(OffSize),
		version: uint16(l.load32(OffVersion)),
	}
	if h.version != Version {
		return header{}, fmt.Errorf("unsupported VMClock version %d (snapsafe reads version %d): update snapsafe", h.version, Version)
	}
	if h.size < MinSize {
		return header{}, fmt.Errorf("VMClock page declares %d bytes, fewer than the %d that hold vm_generation_counter: the hypervisor offers no generation counter", h.size, MinSize)
	}
	return h, nil
}

// snapshot is one consistent read of the words snapsafe uses.
type snapshot struct {
	magic   uint32
	flags   uint64
	counter uint64
}

// tryRead makes one seqlock read attempt. It fails when the hypervisor was
// updating the page (seq_count odd) or updated it during the read
// (seq_count changed). Go's atomic loads are sequentially consistent, which
// gives the load ordering a seqlock reader needs.
func (l layout) tryRead() (snapshot, bool) {
	seq := l.load32(OffSeq)
	if seq&1 != 0 {
		return snapshot{}, false
	}
	s := snapshot{
		magic:   l.load32(OffMagic),
		flags:   l.load64(OffFlags),
		counter: l.load64(OffCounter),
	}
	return s, l.load32(OffSeq) == seq
}

// read returns a consistent snapshot, retrying for at most seqWait. It also
// rejects a page whose magic changed since it was opened.
func (l layout) read() (snapshot, error) {
	var deadline time.Time
	for {
		if s, ok := l.tryRead(); ok {
			if s.magic != Magic {
				return s, fmt.Errorf("magic changed to %#08x: the VMClock page was reset or replaced", s.magic)
			}
			return s, nil
		}
		// Only a retry pays for the clock read.
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(seqWait)
		} else if now.After(deadline) {
			return snapshot{}, fmt.Errorf("seq_count stayed odd or kept changing for %v: the hypervisor is stuck updating the VMClock page", seqWait)
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
	layout layout // the mapping; nil after Close
	hdr    header
	flags  uint64 // flags at open
}

// checkOpen finishes validating a freshly mapped page and records its flags.
func (c *VMClock) checkOpen(regular bool) error {
	// A file shorter than the region it declares is a truncated capture. A
	// device may declare more than the one page the driver lets us map; our
	// fields all lie in that page.
	if regular && int(c.hdr.size) > len(c.layout) {
		return fmt.Errorf("page declares %d bytes but the file holds only %d: truncated copy", c.hdr.size, len(c.layout))
	}
	s, err := c.layout.read()
	if err != nil {
		return err
	}
	c.flags = s.flags
	return nil
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
	if s.flags&FlagCounter == 0 {
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
	if c.layout == nil || !c.HasCounter() {
		return nil
	}
	return (*uint64)(unsafe.Pointer(&c.layout[OffCounter]))
}

// HasCounter reports whether the hypervisor maintained vm_generation_counter
// (flag bit 8) when the device was opened.
func (c *VMClock) HasCounter() bool { return c.flags&FlagCounter != 0 }

// Notifies reports whether the hypervisor notifies the guest of every page
// update (flag bit 9), so that poll(2) on the device wakes on a restore
// (Linux 7.0 and later). The flag is read when the device is opened, as the
// driver does when it sets up the notification.
func (c *VMClock) Notifies() bool { return c.flags&FlagNotify != 0 }

// Size returns the size of the region the page declares, in bytes. The
// version it declares is always Version: Open refuses the others.
func (c *VMClock) Size() uint32 { return c.hdr.size }

// File returns the open read-only device so that the provider can hand it to
// clients over a Unix socket with SCM_RIGHTS. The VMClock keeps ownership: do
// not close it; it is nil after Close.
//
// A client maps the descriptor itself, read-only: mmap of exactly one page at
// offset 0 with PROT_READ and MAP_SHARED (the driver refuses anything else),
// and reads vm_generation_counter under seq_count as Counter does. Clients
// should only map it: read(2) on a VMClock descriptor moves the driver's
// notification state, which every copy of the descriptor shares — which is
// why whoever waits for notifications does so with a Notifier, on a
// descriptor of its own.
func (c *VMClock) File() *os.File { return c.f }

// Path returns the path the VMClock was opened from.
func (c *VMClock) Path() string { return c.path }

// Notifier waits for a VMClock device's notifications on a private
// descriptor of the device, so that nothing done with the descriptors
// handed to clients can consume a notification. NewNotifier opens one.
type Notifier struct {
	f *os.File
	// ack consumes a notification so that the next wait blocks until the
	// next one.
	ack func() error
}

// Close releases the notifier's descriptor. Run must have returned.
func (n *Notifier) Close() error { return n.f.Close() }
