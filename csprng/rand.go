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
	h hot // by value: one indirection fewer on the hot path
}

// New returns a new Rand, seeded from the kernel on first use.
func New() *Rand {
	start()
	r := new(Rand)
	r.h.init(current.Load().arena())
	runtime.AddCleanup(r, (*home).release, r.h.home)
	return r
}

// Uint64 returns a uniformly distributed random 64-bit value.
func (r *Rand) Uint64() uint64 {
	h := &r.h
	s, gp, vp := h.s, h.genp.Load(), h.vmcp.Load()
	g, v := load(gp, vp)
	if s.valid(g, v) && s.off <= bufSize-8 {
		x := s.uint64()
		if unchanged(gp, vp, g, v) {
			return x
		}
	}
	return r.uint64Slow()
}

// uint64Slow is Uint64 when the state needs a refill or a reseed, or a
// bump landed: kept out of line so that the fast path stays small.
//
//go:noinline
func (r *Rand) uint64Slow() uint64 {
	h := &r.h
	for {
		s, gp, vp := h.s, h.genp.Load(), h.vmcp.Load()
		g, v := load(gp, vp)
		if s.valid(g, v) {
			if s.off > bufSize-8 {
				s.refill()
			}
			x := s.uint64()
			if unchanged(gp, vp, g, v) {
				return x
			}
			continue
		}
		if h.reseed() == kernel {
			var b [8]byte
			kernelRead(b[:])
			return binary.LittleEndian.Uint64(b[:])
		}
	}
}

// Read fills b with random bytes. It always returns len(b), nil.
func (r *Rand) Read(b []byte) (int, error) {
	h := &r.h
	for {
		s, gp, vp := h.s, h.genp.Load(), h.vmcp.Load()
		g, v := load(gp, vp)
		if !s.valid(g, v) {
			if h.reseed() == kernel {
				kernelRead(b)
				return len(b), nil
			}
			continue
		}
		fill(s, b)
		if unchanged(gp, vp, g, v) {
			return len(b), nil
		}
		clear(b) // produced across a bump: never returned
	}
}
