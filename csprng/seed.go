package csprng

import (
	"crypto/rand"
	"errors"

	"github.com/snapsafe/snapsafe/internal/cpurand"
	"github.com/snapsafe/snapsafe/shm"
)

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
	*key = seedKey(g)
	return g, v, retry, true
}

// seedKey returns a fresh key from the kernel, for generation g of the
// source being reseeded from. Tests replace it to make output reproducible;
// it is not reachable from the public API. The key is returned by value so
// that no pointer escapes through the function value (no allocation).
var seedKey = func(g uint64) (key [keySize]byte) {
	kernelRead(key[:])
	// Defence in depth: where the CPU has an RNG, its output is mixed in,
	// so that a key is fresh even if the kernel's pool had not been
	// reseeded yet after a restore (a signal that precedes the kernel's
	// own reseed). XOR with an independent source never weakens the key.
	cpurand.XOR(key[:])
	return key
}

// kernelRead fills b from the kernel's CSPRNG. crypto/rand.Read is
// getrandom(2) — through the vDSO on Linux 6.11 and later, which the kernel
// itself reseeds on VM fork — and, like it, never fails: a kernel RNG
// failure crashes the program rather than return predictable bytes.
func kernelRead(b []byte) { _, _ = rand.Read(b) }
