// Package kernelrng adds entropy to the Linux kernel's pool and forces the
// kernel's CRNG to reseed from it (RNDADDENTROPY, RNDRESEEDCRNG on
// /dev/urandom; both need CAP_SYS_ADMIN).
//
// A clone's kernel reseeds itself when the vmgenid driver sees the restore.
// Signals that can arrive before that — a VMClock counter, which the
// hypervisor moves before the vCPUs resume; a host-pushed restore; a forced
// bump — leave a window in which getrandom may still return the snapshot's
// stream in every clone. The provider closes it by reseeding the kernel
// itself, with fresh input from outside the cloned memory (the host's
// entropy, the CPU's RNG), before it publishes such a generation.
package kernelrng

import "github.com/snapsafe/snapsafe/internal/errs"

// ErrNotPermitted: the caller lacks CAP_SYS_ADMIN; nothing was reseeded.
var ErrNotPermitted = errs.ErrNotPermitted

// ErrNotSupported: not Linux.
var ErrNotSupported = errs.ErrNotSupported
