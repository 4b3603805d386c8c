package csprng

import (
	"context"
	"sync"
	"time"

	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/shm"
)

// chunkSize is how much memory the arena takes at a time: one wipe region
// of the largest size a provider grants.
const chunkSize = shm.MaxRegionSize

// arena hands out state slots. Each provider source has its own arena,
// which takes its memory from that provider's wipe regions: the provider
// zeroes them on every restore even while this process is not running.
// Every other source shares the private arena: anonymous memory that is
// wiped on fork and left out of core dumps. A generator whose state is in
// another arena than its source's moves (hot.move, sharedSlow), so that in
// provider mode key material lives in the current provider's regions.
type arena struct {
	client  *client.Client // the provider whose regions it uses; nil: private
	mu      sync.Mutex
	free    []*state
	regions []*shm.Region // kept mapped for the life of the process
	chunks  [][]byte
	erased  bool // the provider is gone: erase has run
}

// private is the arena of every source but a provider.
var private = new(arena)

// arena returns the arena the source's generators take their states from.
func (s *source) arena() *arena {
	if s.mem != nil {
		return s.mem
	}
	return private
}

// get returns a zeroed (hence unseeded) state.
func (a *arena) get() *state {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.free) == 0 {
		a.grow()
	}
	s := a.free[len(a.free)-1]
	a.free = a.free[:len(a.free)-1]
	return s
}

// put zeroes s and returns it to the arena.
func (a *arena) put(s *state) {
	*s = state{}
	a.mu.Lock()
	if !a.erased {
		a.free = append(a.free, s)
	}
	a.mu.Unlock()
}

// erase runs when the arena's provider is gone, and nobody will wipe its
// regions any more: it zeroes every slot, then replaces each region's
// mapping with private anonymous memory (so that a generator still holding
// a slot never faults, and the memfd is freed) and closes its descriptor.
// Generators move to their new source's arena on their next call, zeroing
// their old slot as they go.
func (a *arena) erase() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.erased {
		return
	}
	a.erased = true
	a.free = nil
	for _, r := range a.regions {
		b := r.Bytes()
		clear(b)
		if remapPrivate != nil && remapPrivate(b) == nil {
			_ = r.File().Close() // not r.Close: the address range stays mapped
		}
	}
	for _, c := range a.chunks {
		clear(c)
	}
}

func (a *arena) grow() {
	var chunk []byte
	if a.client != nil && !a.erased {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := a.client.Region(ctx, chunkSize)
		cancel()
		if err == nil {
			a.regions = append(a.regions, r)
			chunk = r.Bytes()
		}
		// Past the provider's bounds, states live in private memory: still
		// generation-checked, but not wiped by the provider.
	}
	if chunk == nil {
		chunk = privateChunk(chunkSize)
		a.chunks = append(a.chunks, chunk)
	}
	for off := 0; off+slotSize <= len(chunk); off += slotSize {
		a.free = append(a.free, stateAt(chunk[off:]))
	}
}

// mapWipeOnFork maps n bytes of anonymous memory that the kernel zeroes in
// a forked child and leaves out of core dumps. It is set by
// memory_linux.go, and nil where the system has no MADV_WIPEONFORK.
var mapWipeOnFork func(n int) ([]byte, error)

// remapPrivate replaces the mapping of b, in place, with zeroed private
// anonymous memory. It is set by memory_linux.go.
var remapPrivate func(b []byte) error

// privateChunk returns memory for states outside a provider's regions:
// wipe-on-fork memory where the system has it, so that a forked child
// never shares its parent's generator state. It falls back to the Go heap
// only if the mapping fails, or the system has no such memory.
func privateChunk(n int) []byte {
	if mapWipeOnFork != nil {
		if b, err := mapWipeOnFork(n); err == nil {
			return b
		}
	}
	return make([]byte, n)
}
