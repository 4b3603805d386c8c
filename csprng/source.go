package csprng

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/shm"
)

// Mode says where the generator learns of restores.
type Mode int

const (
	// ModeKernel: no source of restore events. Every call takes its bytes
	// straight from the kernel (getrandom, which the kernel reseeds on VM
	// fork): slow, but never stale.
	ModeKernel Mode = iota
	// ModeProvider: attached to a snapsafed provider; the generation is one
	// load from its shared page, and generator state lives in wipe regions
	// that the provider zeroes on every restore.
	ModeProvider
	// ModeFollower: no provider, but this process follows the kernel's
	// restore signals itself (the vmgenid driver's kernel log record) and
	// keeps a process-local generation.
	ModeFollower
)

func (m Mode) String() string {
	switch m {
	case ModeProvider:
		return "provider"
	case ModeFollower:
		return "follower"
	}
	return "kernel"
}

// source is where the hot path reads the generation. Sources are
// immutable once published in current (but for retire), and their words
// are never unmapped: a hot path may still load them after a switch.
type source struct {
	mode Mode    //
	gen  *uint64 // the generation word; it reads 0 while no source exists
	vmc  *uint64 // the hypervisor's VMClock counter, or nil

	page   *shm.Page      // ModeProvider: the generation page
	client *client.Client // ModeProvider: the connection to the provider
	mem    *arena         // ModeProvider: states in the provider's regions
	local  uint64         // ModeFollower: the process-local generation (atomic)
	stop   func()         // ModeFollower: stops the follower
}

var (
	// zeroWord is the generation of ModeKernel. No state is ever seeded in
	// generation 0, so every call in ModeKernel takes the slow path.
	zeroWord uint64
	// current is the source in use. It is never nil: until the first call
	// starts the real selection, it is a ModeKernel source.
	current atomic.Pointer[source]
)

func init() { current.Store(newSource(ModeKernel)) }

func newSource(m Mode) *source {
	s := &source{mode: m, gen: &zeroWord}
	if m == ModeFollower {
		s.local = 1
		s.gen = &s.local
	}
	return s
}

// retire makes the source's generation read 0 from then on, for every hot
// path that cached its word, so that they all fall to the slow path and
// bind to the source that replaced this one. Call it after storing the
// replacement in current.
func (s *source) retire() {
	switch s.mode {
	case ModeProvider:
		_ = s.page.Retire() // the mapping stays, as a zero page
		s.mem.erase()
	case ModeFollower:
		atomic.StoreUint64(&s.local, 0)
		if s.stop != nil {
			s.stop()
		}
	}
}

// generation loads the source's generation and VMClock counter.
func (s *source) generation() (gen, vmc uint64) { return load(s.gen, s.vmc) }

var startOnce sync.Once

// start selects the source on first use (a provider, else a follower, else
// the kernel) and starts a goroutine that keeps it current: it falls back
// the moment the provider goes away and re-attaches when one returns.
func start() {
	startOnce.Do(func() {
		src := selectSource()
		current.Store(src)
		go monitor(context.Background(), src)
	})
}

// selectSource returns the best source available now.
func selectSource() *source {
	if src := attachProvider(""); src != nil {
		return src
	}
	if src := startFollower(); src != nil {
		return src
	}
	return newSource(ModeKernel)
}

// attachProvider attaches to the provider on dir (the default directory
// when empty), or returns nil.
func attachProvider(dir string) *source {
	c, err := client.Attach(dir)
	if err != nil {
		return nil
	}
	src := newSource(ModeProvider)
	src.client, src.page = c, c.Page()
	src.mem = &arena{client: c}
	src.gen = src.page.GenerationWord()
	// With a vmclock provider, the hot path also compares the
	// hypervisor's counter, which moves before the guest resumes.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if vc, err := c.VMClock(ctx); err == nil {
		if w := vc.CounterWord(); w != nil {
			src.vmc = w // kept mapped for the life of the process
		} else {
			vc.Close()
		}
	}
	return src
}
