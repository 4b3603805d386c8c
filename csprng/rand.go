package csprng

import (
	"encoding/binary"
	"runtime"
)

// Rand is a generator for one goroutine at a time: the fastest way to draw
// many values. Its Uint64 and Read make it a math/rand/v2 Source:
//
//	r := rand.New(csprng.New())
//
// Like the package-level functions it checks the generation on every call
// and never returns output produced across a restore. Its state lives
// outside the Go heap (in a provider's wipe region, or wipe-on-fork
// memory) and is released when the Rand is garbage collected.
type Rand struct {
	s *state
}

// New returns a new Rand, seeded from the kernel on first use.
func New() *Rand {
	start()
	r := &Rand{s: mem.get()}
	runtime.AddCleanup(r, mem.put, r.s)
	return r
}

// Uint64 returns a uniformly distributed random 64-bit value.
func (r *Rand) Uint64() uint64 {
	s := r.s
	for {
		src := current.Load()
		g, v := src.generation()
		if s.valid(src, g, v) {
			if s.off > bufSize-8 {
				s.refill()
			}
			x := s.uint64()
			if src.unchanged(g, v) {
				return x
			}
			continue
		}
		if r.reseed(src) == kernel {
			var b [8]byte
			kernelRead(b[:])
			return binary.LittleEndian.Uint64(b[:])
		}
	}
}

// Read fills b with random bytes. It always returns len(b), nil.
func (r *Rand) Read(b []byte) (int, error) {
	s := r.s
	for {
		src := current.Load()
		g, v := src.generation()
		if !s.valid(src, g, v) {
			if r.reseed(src) == kernel {
				kernelRead(b)
				return len(b), nil
			}
			continue
		}
		if len(b) >= bulkMin {
			var key [keySize]byte
			s.takeKey(&key)
			bulk(b, &key)
		} else {
			for rest := b; len(rest) > 0; {
				if s.avail() == 0 {
					s.refill()
				}
				rest = rest[s.take(rest):]
			}
		}
		if src.unchanged(g, v) {
			return len(b), nil
		}
		clear(b) // produced across a bump: never returned
	}
}

// reseed seeds r's state for src, or says to use the kernel.
func (r *Rand) reseed(src *source) next {
	var key [keySize]byte
	g, v, n, ok := freshKey(src, &key)
	if ok {
		r.s.seed(&key, g, v, src.id)
	}
	return n
}

// bulkMin is the request size from which Read generates keystream straight
// into the caller's buffer (with a one-time key from the state) instead of
// copying it out of the state's buffer.
const bulkMin = 512
