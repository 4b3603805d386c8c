// Package vmclockabi holds the layout of the VMClock shared page, as the
// hypervisor lays it out (see the Linux UAPI header
// include/uapi/linux/vmclock-abi.h), for the VMClock source and for tests
// that build pages of their own. Everything is little-endian. Only the
// fields snapsafe reads are named; the clock fields between the flags and
// the counter (status, leap seconds, counter period, time) are not.
package vmclockabi

import "encoding/binary"

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

// Page returns a page of size bytes (at least MinSize) holding a valid
// header, flags and counter, as a hypervisor would publish it.
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
