package csprng

import (
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

// The package-level functions use one state per P (the Go scheduler's
// logical processor, GOMAXPROCS of them). procPin disables preemption of
// the calling goroutine and returns its P's index: until procUnpin, no other
// goroutine runs on that P, so the P's state is used by exactly one
// goroutine at a time without any lock or atomic read-modify-write. This is
// the mechanism sync.Pool uses. Pinned sections here only copy bytes or
// run the ChaCha20 kernel over one 4 KiB buffer; reseeding, which may
// enter the kernel, happens unpinned.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

var (
	// shards holds one state per P. It only grows; a P index beyond its
	// length (GOMAXPROCS was raised) takes the slow path, which grows it.
	shards  atomic.Pointer[[]*state]
	growMu  sync.Mutex
	noShard = []*state{}
)

func init() { shards.Store(&noShard) }

// growShards makes sure there is a state for every P.
func growShards() {
	growMu.Lock()
	defer growMu.Unlock()
	old := *shards.Load()
	n := max(runtime.GOMAXPROCS(0), len(old))
	if n == len(old) {
		return
	}
	sh := make([]*state, n)
	copy(sh, old)
	for i := len(old); i < n; i++ {
		sh[i] = mem.get()
	}
	shards.Store(&sh)
}

// Uint64 returns a uniformly distributed random 64-bit value. It is safe
// for concurrent use.
func Uint64() uint64 {
	for {
		src := current.Load()
		g, v := src.generation()
		pid := procPin()
		if sh := *shards.Load(); pid < len(sh) && sh[pid].valid(src, g, v) {
			s := sh[pid]
			if s.off > bufSize-8 {
				s.refill()
			}
			x := s.uint64()
			procUnpin()
			if src.unchanged(g, v) {
				return x
			}
			continue
		}
		procUnpin()
		if reseedShard(src, pid) == kernel {
			var b [8]byte
			kernelRead(b[:])
			return binary.LittleEndian.Uint64(b[:])
		}
	}
}

// Read fills b with random bytes. It always returns len(b), nil, and is
// safe for concurrent use.
func Read(b []byte) (int, error) {
	for {
		src := current.Load()
		g, v := src.generation()
		pid := procPin()
		sh := *shards.Load()
		if pid >= len(sh) || !sh[pid].valid(src, g, v) {
			procUnpin()
			if reseedShard(src, pid) == kernel {
				kernelRead(b)
				return len(b), nil
			}
			continue
		}
		s := sh[pid]
		if len(b) >= bulkMin {
			// Take a one-time key and generate unpinned.
			var key [keySize]byte
			s.takeKey(&key)
			procUnpin()
			bulk(b, &key)
		} else {
			for rest := b; len(rest) > 0; {
				if s.avail() == 0 {
					s.refill()
				}
				rest = rest[s.take(rest):]
			}
			procUnpin()
		}
		if src.unchanged(g, v) {
			return len(b), nil
		}
		clear(b) // produced across a bump: never returned
	}
}

// reseedShard seeds the calling P's state for src (unpinned while it gets
// the key), or says to use the kernel.
func reseedShard(src *source, pid int) next {
	if pid >= len(*shards.Load()) {
		growShards()
	}
	var key [keySize]byte
	g, v, n, ok := freshKey(src, &key)
	if !ok {
		return n
	}
	pid = procPin()
	if sh := *shards.Load(); pid < len(sh) && !sh[pid].valid(src, g, v) {
		sh[pid].seed(&key, g, v, src.id)
	}
	procUnpin()
	clear(key[:])
	return retry
}
