// Package shm defines snapsafe's generation page — the shared, read-only,
// seqlock-protected page through which a provider publishes the generation
// to every process — and the wipe-on-restore regions it zeroes on every bump.
//
// The page is one 4096-byte little-endian page. Its exact layout and the read
// protocol are the ABI documented in docs/ABI.md; the constants below are the
// single source of truth for the Go side.
//
// The hot path of a client is Page.Generation: one atomic 64-bit load from a
// word that sits alone on its own cache line. Everything else is read with
// Page.Snapshot under the seqlock.
package shm

import (
	"errors"

	"github.com/snapsafe/snapsafe/internal/errs"
)

// Page geometry and identification.
const (
	// PageSize is the size of the generation page in bytes.
	PageSize = 4096
	// Magic is the little-endian uint32 at offset 0: the bytes "SNSF".
	Magic uint32 = 0x46534e53
	// Version is the ABI version at offset 4. Readers reject other versions.
	Version uint16 = 1
)

// Byte offsets of the page fields. All multi-byte fields are little-endian
// and naturally aligned.
const (
	OffMagic   = 0x000 // uint32 Magic
	OffVersion = 0x004 // uint16 Version
	OffSize    = 0x008 // uint32 size of the page in bytes (PageSize)

	// OffGeneration is the generation: the only word on its cache line so
	// that the hot-path load never shares a line with the fields a bump
	// rewrites under the seqlock.
	OffGeneration = 0x040 // uint64

	OffSeq      = 0x080 // uint64 seqlock sequence: odd while a write is in progress
	OffWiped    = 0x088 // uint64 generation whose wipe of all regions has completed
	OffEpoch    = 0x090 // [16]byte random UUID, fresh every generation
	OffRealtime = 0x0a0 // uint64 CLOCK_REALTIME of the bump, nanoseconds since the Unix epoch
	OffMonotime = 0x0a8 // uint64 CLOCK_MONOTONIC of the bump, nanoseconds
	OffReason   = 0x0b0 // uint32 Reason
	OffState    = 0x0b4 // uint32 State
	OffPID      = 0x0b8 // uint32 provider process id
	OffBackend  = 0x0bc // uint32 Backend
)

// Reason says why a generation was bumped.
type Reason uint32

// Reasons stored at OffReason.
const (
	ReasonNone    Reason = 0 // no bump yet
	ReasonStartup Reason = 1 // the provider started (it may have missed events while down)
	ReasonACPI    Reason = 2 // the ACPI VMGENID device signalled a restore
	ReasonVMClock Reason = 3 // the VMClock vm_generation_counter changed
	ReasonForced  Reason = 4 // a privileged client forced a bump
	ReasonHost    Reason = 5 // the host pushed a restore (POST /v1/restore)
)

// Reasons lists every reason a bump can have, for metrics.
var Reasons = []Reason{ReasonStartup, ReasonACPI, ReasonVMClock, ReasonForced, ReasonHost}

func (r Reason) String() string {
	switch r {
	case ReasonNone:
		return "none"
	case ReasonStartup:
		return "startup"
	case ReasonACPI:
		return "acpi"
	case ReasonVMClock:
		return "vmclock"
	case ReasonForced:
		return "forced"
	case ReasonHost:
		return "host"
	}
	return "unknown"
}

// State is the provider's state stored at OffState.
type State uint32

// Provider states.
const (
	StateNone    State = 0 // the page was never published
	StateRunning State = 1 // a provider is publishing generations
	StateStopped State = 2 // the provider stopped cleanly; the generation is frozen
)

func (s State) String() string {
	switch s {
	case StateNone:
		return "none"
	case StateRunning:
		return "running"
	case StateStopped:
		return "stopped"
	}
	return "unknown"
}

// Backend identifies the provider's event source, stored at OffBackend.
type Backend uint32

// Backends.
const (
	BackendNone    Backend = 0
	BackendManual  Backend = 1
	BackendACPI    Backend = 2
	BackendVMClock Backend = 3
)

func (b Backend) String() string {
	switch b {
	case BackendNone:
		return "none"
	case BackendManual:
		return "manual"
	case BackendACPI:
		return "acpi"
	case BackendVMClock:
		return "vmclock"
	}
	return "unknown"
}

// ParseBackend maps a backend name to its page value.
func ParseBackend(name string) (Backend, bool) {
	for b := BackendManual; b <= BackendVMClock; b++ {
		if b.String() == name {
			return b, true
		}
	}
	return BackendNone, false
}

var (
	// ErrNotSupported is returned (wrapped) on systems without the
	// primitives the page needs (shared file mappings, memfd).
	ErrNotSupported = errs.ErrNotSupported
	// ErrBadPage is returned (wrapped) when a file is not a generation page
	// of a version this package understands.
	ErrBadPage = errors.New("not a snapsafe generation page")
	// ErrBusy is returned when the seqlock stayed odd for too long: the
	// provider died in the middle of a bump, or is stuck.
	ErrBusy = errors.New("generation page update in progress for too long")
	// ErrMoved is returned by Page.AwaitWipe when the generation changed.
	ErrMoved = errors.New("the generation moved")
)
