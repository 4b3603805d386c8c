package csprng

import (
	"errors"
	"sync/atomic"

	"github.com/snapsafe/snapsafe/shm"
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
	s    *state // fixed
	src  atomic.Pointer[source]
	genp atomic.Pointer[uint64] // src.gen
	vmcp atomic.Pointer[uint64] // src.vmc
}

func newHot(s *state) *hot {
	h := new(hot)
	h.init(s)
	return h
}

func (h *hot) init(s *state) {
	h.s = s
	h.bind()
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

// unchanged re-checks, after output was produced, that the words still
// show generation g and counter v. Output produced while a bump landed is
// discarded by the caller when this fails.
func unchanged(gp, vp *uint64, g, v uint64) bool {
	loadFence()
	g2, v2 := load(gp, vp)
	return g2 == g && v2 == v
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
	*key = seedKey(g)
	return g, v, retry, true
}

// reseed is the slow path of a generator whose owner may enter the kernel
// (a Rand): it binds to the current source and seeds the state if needed.
func (h *hot) reseed() next {
	src := h.bind()
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
