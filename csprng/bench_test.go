package csprng

import (
	"fmt"
	"testing"
)

// The package's own benchmarks; bench/ compares them with other
// generators side by side.

func BenchmarkUint64(b *testing.B) {
	testSource(b)
	var sink uint64
	for b.Loop() {
		sink += Uint64()
	}
	_ = sink
}

func BenchmarkUint64Parallel(b *testing.B) {
	testSource(b)
	b.RunParallel(func(pb *testing.PB) {
		var sink uint64
		for pb.Next() {
			sink += Uint64()
		}
		_ = sink
	})
}

func BenchmarkRandUint64(b *testing.B) {
	testSource(b)
	r := New()
	var sink uint64
	for b.Loop() {
		sink += r.Uint64()
	}
	_ = sink
}

func BenchmarkRead(b *testing.B) {
	for _, n := range []int{8, 32, 256, 4096, 64 << 10} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			testSource(b)
			buf := make([]byte, n)
			b.SetBytes(int64(n))
			for b.Loop() {
				Read(buf)
			}
		})
	}
}

func BenchmarkRandRead(b *testing.B) {
	for _, n := range []int{8, 32, 256, 4096, 64 << 10} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			testSource(b)
			r := New()
			buf := make([]byte, n)
			b.SetBytes(int64(n))
			for b.Loop() {
				r.Read(buf)
			}
		})
	}
}

// uint64Unchecked is Rand.Uint64 without the generation check: the same
// function shape (a call, the state's buffer, the refill), for measuring
// what the check itself costs.
//
//go:noinline
func (r *Rand) uint64Unchecked() uint64 {
	s := r.h.s
	if s.off > bufSize-8 {
		s.refill()
	}
	return s.uint64()
}

// BenchmarkGenerationCheck measures what the generation check costs: the
// same generator drawn with and without it.
func BenchmarkGenerationCheck(b *testing.B) {
	b.Run("on", func(b *testing.B) {
		testSource(b)
		r := New()
		var sink uint64
		for b.Loop() {
			sink += r.Uint64()
		}
		_ = sink
	})
	b.Run("off", func(b *testing.B) {
		src := testSource(b)
		r := New()
		r.Uint64() // seed
		var sink uint64
		for b.Loop() {
			sink += r.uint64Unchecked()
		}
		_, _ = sink, src
	})
}

// BenchmarkReseed is the first call after a bump: a new key from the
// kernel and a refill.
func BenchmarkReseed(b *testing.B) {
	src := testSource(b)
	r := New()
	r.Uint64()
	for b.Loop() {
		bump(src)
		r.Uint64()
	}
}
