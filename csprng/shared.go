package csprng

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

// The package-level functions use one generator per P (the Go scheduler's
// logical processor, GOMAXPROCS of them). procPin disables preemption of
// the calling goroutine and returns its P's index: until procUnpin, no other
// goroutine runs on that P, so the P's generator is used by exactly one
// goroutine at a time without any lock or atomic read-modify-write. This is
// the mechanism sync.Pool uses. Pinned sections only check the generation,
// copy bytes, or run the ChaCha20 kernel over one 4 KiB buffer (or take a
// one-time key for a bulk read, which is then generated unpinned);
// reseeding, which may enter the kernel, gets its key unpinned.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// maxShards bounds the per-P generators. Ps beyond it (GOMAXPROCS above
// 1024) share one generator under a mutex.
const maxShards = 1024

var (
	shards   [maxShards]atomic.Pointer[hot]
	overflow struct {
		sync.Mutex
		r *Rand
	}
)

// Uint64 returns a uniformly distributed random 64-bit value. It is safe
// for concurrent use.
func Uint64() uint64 {
	for {
		pid := procPin()
		if pid < maxShards {
			if h := shards[pid].Load(); h != nil {
				s, gp, vp := h.s, h.genp.Load(), h.vmcp.Load()
				g, v := load(gp, vp)
				if s.valid(g, v) {
					if s.off > bufSize-8 {
						s.refill()
					}
					x := s.uint64()
					procUnpin()
					if unchanged(gp, vp, g, v) {
						return x
					}
					continue
				}
			}
		}
		procUnpin()
		switch sharedSlow(pid) {
		case kernel:
			var b [8]byte
			kernelRead(b[:])
			return binary.LittleEndian.Uint64(b[:])
		case overflowed:
			overflow.Lock()
			x := overflow.r.Uint64()
			overflow.Unlock()
			return x
		}
	}
}

// Read fills b with random bytes. It always returns len(b), nil, and is
// safe for concurrent use.
func Read(b []byte) (int, error) {
	for {
		pid := procPin()
		if pid < maxShards {
			if h := shards[pid].Load(); h != nil {
				s, gp, vp := h.s, h.genp.Load(), h.vmcp.Load()
				g, v := load(gp, vp)
				if s.valid(g, v) {
					if len(b) >= bulkMin {
						// Take a one-time key and generate unpinned.
						var key [keySize]byte
						s.takeKey(&key)
						procUnpin()
						bulk(b, &key)
					} else {
						fill(s, b)
						procUnpin()
					}
					if unchanged(gp, vp, g, v) {
						return len(b), nil
					}
					clear(b) // produced across a bump: never returned
					continue
				}
			}
		}
		procUnpin()
		switch sharedSlow(pid) {
		case kernel:
			kernelRead(b)
			return len(b), nil
		case overflowed:
			overflow.Lock()
			overflow.r.Read(b)
			overflow.Unlock()
			return len(b), nil
		}
	}
}

// overflowed tells a caller on a P beyond maxShards to use the shared
// overflow generator.
const overflowed next = -1

// sharedSlow prepares the calling P's generator: it selects the source on
// first use, creates the generator (or replaces it, when its state is not
// in the current source's arena: a provider's regions), binds it to the
// current source and reseeds it, getting the key unpinned. pid is the P
// the caller last ran on; by the time this runs it may run on another,
// which the caller's retry sorts out.
func sharedSlow(pid int) next {
	start() // before any state is placed: it must go where the source says
	if pid >= maxShards {
		overflow.Lock()
		if overflow.r == nil {
			overflow.r = New()
		}
		overflow.Unlock()
		return overflowed
	}
	src := current.Load()
	if h := shards[pid].Load(); h == nil || h.home.ar != src.arena() {
		// Get the state unpinned (it may ask the provider for a region),
		// then install it only on P pid, where no other goroutine runs
		// while pinned: the one it replaces is then unused, as owners do
		// not touch their state once unpinned.
		nh, old := newHot(src.arena()), (*hot)(nil)
		if procPin() == pid {
			old, nh = shards[pid].Swap(nh), nil
		}
		procUnpin()
		if old != nil {
			old.home.release()
		}
		if nh != nil {
			nh.home.release()
		}
		return retry
	}
	var key [keySize]byte
	g, v, n, ok := freshKey(src, &key)
	if !ok {
		return n
	}
	if pid = procPin(); pid < maxShards {
		if h := shards[pid].Load(); h != nil && h.home.ar == src.arena() && h.bind() == src && !h.s.valid(g, v) {
			h.s.seed(&key, g, v)
		}
	}
	procUnpin()
	clear(key[:])
	return retry
}
