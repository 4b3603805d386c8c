package csprng

import (
	"runtime"
	"sync/atomic"
)

// hot is a generator's hot-path view, kept in Go memory beside its state
// and used only by the generator's owner: a Rand's goroutine, or the
// goroutine pinned to a shard's P. It caches the words of the source the
// state was bound to, so that the check is two loads and two compares with
// no indirection through the current source: when a source is replaced it
// is retired, its generation then reads 0, and every hot path bound to it
// falls to the slow path, which binds to the new source.
//
// The pointers are atomic only for the race detector's sake: a shard's
// owners follow one another on a P, ordered by the scheduler in ways the
// detector cannot see. On amd64 an atomic load is a plain load.
type hot struct {
	s    *state // home.s, cached
	home *home  // where s came from
	src  atomic.Pointer[source]
	genp atomic.Pointer[uint64] // src.gen
	vmcp atomic.Pointer[uint64] // src.vmc
}

// home is a generator's slot and the arena it belongs to. It is a separate
// object so that a Rand's cleanup can release it.
type home struct {
	ar *arena
	s  *state
}

func (h *home) release() { h.ar.put(h.s) }

// newHot returns a generator bound to the current source, with a state
// from ar.
func newHot(ar *arena) *hot {
	h := new(hot)
	h.init(ar)
	return h
}

func (h *hot) init(ar *arena) {
	h.home = &home{ar, ar.get()}
	h.s = h.home.s
	h.bind()
}

// move gives h a zeroed state from ar and zeroes and releases the one it
// had. Only h's owner may call it, and only while nothing else uses h.
func (h *hot) move(ar *arena) {
	old := *h.home
	h.home.ar, h.home.s = ar, ar.get()
	h.s = h.home.s
	old.release()
}

// bind points h at the current source. A state seeded from another source
// is never trusted (its generation number means nothing here): it is
// marked for a reseed.
func (h *hot) bind() *source {
	src := current.Load()
	if src != h.src.Load() {
		h.genp.Store(src.gen)
		h.vmcp.Store(src.vmc)
		h.src.Store(src)
		h.s.inv = 0
	}
	return src
}

// load reads a generation word and a VMClock counter word (nil: none).
func load(gp, vp *uint64) (g, v uint64) {
	g = atomic.LoadUint64(gp)
	if vp != nil {
		v = atomic.LoadUint64(vp)
	}
	return g, v
}

// unchanged re-checks, after output was produced, that the words still
// show generation g and counter v. Output produced while a bump landed is
// discarded by the caller when this fails.
func unchanged(gp, vp *uint64, g, v uint64) bool {
	loadFence()
	g2, v2 := load(gp, vp)
	return g2 == g && v2 == v
}

// loadFence orders the plain loads of generator state before the atomic
// load of the generation that follows it. On weakly ordered architectures
// a load of state that the provider has just wiped could otherwise be
// satisfied after the re-check of the generation; an atomic
// read-modify-write (acquire and release) on a private word forbids that.
// Where loads are never reordered with other loads (loadsOrdered) it costs
// nothing: the constant condition compiles away.
func loadFence() {
	if !loadsOrdered {
		var w uint64
		atomic.AddUint64(&w, 0)
	}
}

// loadsOrdered: on these architectures loads are never reordered with
// other loads.
const loadsOrdered = runtime.GOARCH == "amd64" || runtime.GOARCH == "386" || runtime.GOARCH == "s390x"

// reseed is the slow path of a generator whose owner may enter the kernel
// (a Rand): it binds to the current source and seeds the state if needed.
func (h *hot) reseed() next {
	src := h.bind()
	if ar := src.arena(); ar != h.home.ar {
		h.move(ar) // e.g. into a new provider's regions
	}
	if g, v := src.generation(); g != 0 && h.s.valid(g, v) {
		return retry
	}
	var key [keySize]byte
	g, v, n, ok := freshKey(src, &key)
	if ok {
		h.s.seed(&key, g, v)
	}
	return n
}
