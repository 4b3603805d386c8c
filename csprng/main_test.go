package csprng

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

// The tests choose the source themselves: TestMain stops the package from
// selecting one on first use.
//
// A test re-executed with childEnv set (see runChild) runs in a fresh
// process that selects its source as a program would.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		startOnce.Do(func() {})
	}
	os.Exit(m.Run())
}

// childEnv marks a re-executed test process.
const childEnv = "CSPRNG_TEST_CHILD"

// useSource makes src current, retiring the source it replaces, as the
// package does.
func useSource(t testing.TB, src *source) {
	current.Swap(src).retire()
	t.Cleanup(func() {
		if current.CompareAndSwap(src, newSource(ModeKernel)) {
			src.retire()
		}
	})
}

// testSource is a follower-style source that the test bumps by hand.
func testSource(t testing.TB) *source {
	src := newSource(ModeFollower)
	useSource(t, src)
	return src
}

func bump(src *source) uint64 { return atomic.AddUint64(src.gen, 1) }

// seedLog replaces the kernel seed with a reproducible sequence and
// records which generation each seed was drawn for.
type seedLog struct {
	mu    sync.Mutex
	seeds []seedRec
}

type seedRec struct {
	key [keySize]byte
	gen uint64
}

func logSeeds(t testing.TB) *seedLog {
	l := &seedLog{}
	old := seedKey
	seedKey = func(g uint64) [keySize]byte {
		l.mu.Lock()
		defer l.mu.Unlock()
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(l.seeds)))
		key := sha256.Sum256(n[:])
		l.seeds = append(l.seeds, seedRec{key, g})
		return key
	}
	t.Cleanup(func() { seedKey = old })
	return l
}

func (l *seedLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seeds)
}
