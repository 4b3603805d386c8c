package csprng

import (
	"context"
	"sync"
	"time"

	"github.com/snapsafe/snapsafe/shm"
)

// chunkSize is how much memory the arena takes at a time: one wipe region
// of the largest size a provider grants.
const chunkSize = shm.MaxRegionSize

// arena hands out state slots. With a provider it takes its memory from
// wipe regions, which the provider zeroes on every restore even while this
// process is not running; otherwise from anonymous memory that is wiped on
// fork and left out of core dumps.
type arena struct {
	mu      sync.Mutex
	free    []*state
	regions []*shm.Region // kept mapped for the life of the process
	chunks  [][]byte
}

var mem = new(arena)

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
	a.free = append(a.free, s)
	a.mu.Unlock()
}

func (a *arena) grow() {
	var chunk []byte
	if src := current.Load(); src.mode == ModeProvider {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := src.client.Region(ctx, chunkSize)
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
