package csprng

import (
	"errors"
	"sync/atomic"

	"github.com/snapsafe/snapsafe/shm"
)

// valid reports whether s was seeded for generation g (and VMClock counter
// v) of src. A wiped or fresh state has src 0, which no source has.
func (s *state) valid(src *source, g, v uint64) bool {
	return s.gen == g && s.vmc == v && s.src == src.id
}

// unchanged re-checks, after output was produced, that src still shows
// generation g and counter v. Output produced while a bump landed is
// discarded by the caller when this fails.
func (src *source) unchanged(g, v uint64) bool {
	loadFence()
	return atomic.LoadUint64(src.gen) == g && atomic.LoadUint64(src.vmc) == v
}

// What the slow path tells its caller to do.
type next int

const (
	retry  next = iota // the state may be usable now: go round again
	kernel             // serve this call from the kernel
)

// freshKey prepares a key to seed a state for src's current generation. It
// returns kernel when there is no source, or when a provider's wipe for the
// generation never completes (the provider died mid-bump): the region
// protocol forbids storing a key before that wipe. It returns the
// generation and counter the key is for, to be passed to state.seed.
func freshKey(src *source, key *[keySize]byte) (g, v uint64, n next, ok bool) {
	g, v = src.generation()
	if g == 0 {
		start()
		if current.Load() != src {
			return 0, 0, retry, false // the real source was just selected
		}
		return 0, 0, kernel, false
	}
	if src.page != nil {
		switch err := src.page.AwaitWipe(g); {
		case errors.Is(err, shm.ErrMoved):
			return 0, 0, retry, false
		case err != nil:
			return 0, 0, kernel, false
		}
	}
	seedKey(g, key)
	return g, v, retry, true
}
