// Package csprng is a fast ChaCha20 CSPRNG that stays safe when the
// virtual machine it runs in is snapshotted, restored or cloned.
//
// A userspace generator seeded once (math/rand/v2's global functions, most
// fast CSPRNG libraries) keeps its state across a VM snapshot: every clone
// restored from the snapshot emits the same "random" bytes. csprng checks a
// generation — a counter that moves on every restore — on every call, and
// reseeds from the kernel when it changed. It never returns output produced
// while a restore was being signalled: it re-checks the generation after
// producing output and discards the output if it moved.
//
// # Where the generation comes from
//
// On first use the package picks, in order:
//
//   - ModeProvider: a snapsafed provider found through $SNAPSAFE_DIR or the
//     default state directory. The generation check is one load from the
//     provider's shared page, and the generator state lives in wipe regions
//     that the provider zeroes on every restore, whether or not this
//     process is running. If the provider goes away (its connection
//     closes), the package falls back at once, and re-attaches when a
//     provider returns; the provider's start-up bump then reseeds every
//     state.
//   - ModeFollower: no provider, but this process can follow the kernel's
//     restore signal itself (the vmgenid driver's kernel log record, when
//     /dev/kmsg is readable). A restore bumps a process-local generation.
//   - ModeKernel: no source of restore events at all. Every call takes its
//     bytes from the kernel's getrandom — slow, but never stale.
//
// # The window no API can close
//
// A restored VM runs code before the kernel has told anyone about the
// restore, and output produced in that window passes the generation check.
// Re-checking after producing output narrows the window; it cannot remove
// it. How long it stays open depends on the mode:
//
//   - ModeProvider with a vmclock provider, or ModeFollower where this
//     process can map /dev/vmclock0: no window. The hot path also compares
//     the hypervisor's vm_generation_counter, which changes before the
//     guest's vCPUs resume.
//   - ModeProvider and ModeFollower on VMGENID: from the resume until the
//     kernel has logged the restore and the provider (or this process's
//     follower) has read it — the kernel wakes log readers at its next tick,
//     and the notification itself may take tens of milliseconds under load
//     (docs/sources.md). In ModeProvider the provider also wipes the state
//     within that time whether or not this process runs.
//   - ModeKernel: the kernel's own window. getrandom is reseeded by the
//     same vmgenid notification, so it has the same delay, minus the log.
//
// Systems close the window by holding traffic to a restored guest until
// `snapsafectl wait` returns; see README.md.
//
// # Go 1.26 and crypto/*
//
// From Go 1.26 (GODEBUG cryptocustomrand=0, the default) key generation
// in crypto/ecdsa, crypto/ed25519, crypto/rsa and friends ignores the
// io.Reader it is passed and always uses the system generator, which the
// kernel reseeds on VM fork. Passing Reader there changes nothing. Use
// csprng for what those functions do not cover: nonces, IVs, IDs, UUIDs,
// session tickets, tls.Config.Rand, and hot-path randomness in general.
package csprng

import (
	"io"

	"github.com/google/uuid"
)

// Reader is a global, shared instance of the generator, safe for concurrent
// use. Its Read always fills the buffer and returns len(b), nil.
var Reader io.Reader = reader{}

type reader struct{}

func (reader) Read(b []byte) (int, error) { return Read(b) }

// CurrentMode reports where the generation comes from now, for diagnostics.
func CurrentMode() Mode {
	start()
	return current.Load().mode
}

// Generation returns the current generation of the source in use, for
// diagnostics: the provider's generation in ModeProvider, a process-local
// count in ModeFollower, and 0 in ModeKernel.
func Generation() uint64 {
	start()
	g, _ := current.Load().generation()
	return g
}

// NewUUID returns a random (version 4) UUID drawn from the generator.
func NewUUID() uuid.UUID {
	id, err := uuid.NewRandomFromReader(Reader)
	if err != nil {
		panic("csprng: " + err.Error()) // Reader never fails
	}
	return id
}

// NewUUIDv7 returns a time-ordered (version 7) UUID whose random bits come
// from the generator.
func NewUUIDv7() uuid.UUID {
	id, err := uuid.NewV7FromReader(Reader)
	if err != nil {
		panic("csprng: " + err.Error()) // Reader never fails
	}
	return id
}
