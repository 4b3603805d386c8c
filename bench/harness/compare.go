package main

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/snapsafe/snapsafe/csprng"
	"golang.org/x/crypto/chacha20"
)

// A result is one measured case.
type result struct {
	gen    string // generator
	op     string // operation: "Uint64", "Read 32", "Uint64 parallel"
	ns     float64
	bytes  int // per op, for throughput; 0 for Uint64
	allocs int64
}

func (r result) mbps() float64 {
	if r.bytes == 0 || r.ns == 0 {
		return 0
	}
	return float64(r.bytes) / r.ns * 1e3
}

// Generator names, as the report shows them.
const (
	genCsprng     = "csprng"
	genCsprngRand = "csprng.Rand"
	genCrypto     = "crypto/rand"
	genMathGlobal = "math/rand/v2"
	genChaCha8    = "rand.ChaCha8"
	genXChaCha    = "x/crypto/chacha20"
)

var readSizes = []int{8, 32, 256, 4096, 64 << 10}

func run(gen, op string, bytes int, f func(b *testing.B)) result {
	br := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		f(b)
	})
	r := result{gen: gen, op: op, bytes: bytes, ns: float64(br.T.Nanoseconds()) / float64(br.N), allocs: br.AllocsPerOp()}
	fmt.Printf("%-18s %-16s %10.2f ns/op", gen, op, r.ns)
	if bytes > 0 {
		fmt.Printf(" %9.0f MB/s", r.mbps())
	}
	fmt.Printf(" %d allocs/op\n", r.allocs)
	return r
}

// sink keeps the compiler from discarding the benchmarked calls; it is only
// ever written.
//
//lint:ignore U1000 written, never read, on purpose
var sink uint64

// compare runs every generator side by side in this process.
func (rep *report) compare() {
	add := func(r result) { rep.results = append(rep.results, r) }

	// Uint64.
	add(run(genCsprng, "Uint64", 0, func(b *testing.B) {
		for b.Loop() {
			sink += csprng.Uint64()
		}
	}))
	add(run(genCsprngRand, "Uint64", 0, func(b *testing.B) {
		r := csprng.New()
		for b.Loop() {
			sink += r.Uint64()
		}
	}))
	add(run(genMathGlobal, "Uint64", 0, func(b *testing.B) {
		for b.Loop() {
			sink += rand.Uint64()
		}
	}))
	add(run(genChaCha8, "Uint64", 0, func(b *testing.B) {
		r := rand.NewChaCha8(seed())
		for b.Loop() {
			sink += r.Uint64()
		}
	}))
	add(run(genCrypto, "Uint64", 0, func(b *testing.B) {
		var buf [8]byte
		for b.Loop() {
			crand.Read(buf[:])
			sink += binary.LittleEndian.Uint64(buf[:])
		}
	}))

	// Parallel Uint64, on every P.
	add(run(genCsprng, "Uint64 parallel", 0, func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			var s uint64
			for pb.Next() {
				s += csprng.Uint64()
			}
			sink += s
		})
	}))
	add(run(genMathGlobal, "Uint64 parallel", 0, func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			var s uint64
			for pb.Next() {
				s += rand.Uint64()
			}
			sink += s
		})
	}))

	// Read of each size.
	for _, n := range readSizes {
		op := fmt.Sprintf("Read %d", n)
		buf := make([]byte, n)
		reader := func(read func([]byte)) func(b *testing.B) {
			return func(b *testing.B) {
				b.SetBytes(int64(n))
				for b.Loop() {
					read(buf)
				}
			}
		}
		add(run(genCsprng, op, n, reader(func(p []byte) { csprng.Read(p) })))
		r := csprng.New()
		add(run(genCsprngRand, op, n, reader(func(p []byte) { r.Read(p) })))
		add(run(genCrypto, op, n, reader(func(p []byte) { crand.Read(p) })))
		c8 := rand.NewChaCha8(seed())
		add(run(genChaCha8, op, n, reader(func(p []byte) { c8.Read(p) })))
		key := seed()
		xc, err := chacha20.NewUnauthenticatedCipher(key[:], make([]byte, 12))
		if err != nil {
			fatal(err)
		}
		add(run(genXChaCha, op, n, reader(func(p []byte) { xc.XORKeyStream(p, p) })))
	}
}

func seed() (s [32]byte) {
	crand.Read(s[:])
	return s
}

// find returns the result for gen and op.
func (rep *report) find(gen, op string) (result, bool) {
	for _, r := range rep.results {
		if r.gen == gen && r.op == op {
			return r, true
		}
	}
	return result{}, false
}
