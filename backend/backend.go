// Package backend holds snapsafe's restore-event sources behind one small
// interface, and the wiring that picks one.
//
// A Source watches for evidence that the machine was restored from a snapshot
// (or cloned) and reports each piece of evidence as an Event. The provider
// turns every Event into exactly one bump of the generation; sources that see
// the same restore through two signals coalesce them before reporting.
package backend

import (
	"context"
	"os"
	"time"

	"github.com/snapsafe/snapsafe/internal/errs"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// ErrNotSupported is returned (wrapped) when a source cannot run on this
// operating system or machine. Match it with errors.Is. It is the same value
// as acpi.ErrNotSupported and shm.ErrNotSupported.
var ErrNotSupported = errs.ErrNotSupported

// ErrNoDevice is returned (wrapped) when the device a source needs is absent.
// It is the same value as acpi.ErrNoDevice.
var ErrNoDevice = errs.ErrNoDevice

// Kind says why a source reported an Event. It maps onto the reason stored
// in the generation page.
type Kind int

const (
	// KindACPI is a VMGENID notification seen through the kernel.
	KindACPI Kind = iota + 1
	// KindVMClock is a change of the VMClock vm_generation_counter.
	KindVMClock
)

// Event is one piece of evidence of a restore.
type Event struct {
	Kind Kind
	// Signal names the signal that carried the event, such as "kmsg",
	// "uevent" or "vmclock".
	Signal string
	// Lost is true when the source may have missed an event (a kernel
	// buffer overran) and reports one conservatively.
	Lost bool
	// Detail is a short human-readable description for logs.
	Detail string
	// Time is when the source saw the event.
	Time time.Time
}

// Source is a restore-event source.
type Source interface {
	// Name is the backend name shown to users: "manual", "acpi" or "vmclock".
	Name() string
	// Run reports events with emit until ctx is done or the source fails.
	// It returns nil when ctx is done.
	Run(ctx context.Context, emit func(Event)) error
	// Info describes the source for status output.
	Info() api.SourceInfo
	// Close releases the source's descriptors. It is idempotent.
	Close() error
}

// DeviceFile returns the open device of a source whose device clients may
// map themselves (the VMClock page), or nil.
func DeviceFile(s Source) *os.File {
	for {
		switch x := s.(type) {
		case *VMClockSource:
			return x.Clock().File()
		case interface{ Unwrap() Source }:
			s = x.Unwrap()
		default:
			return nil
		}
	}
}
