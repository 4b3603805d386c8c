// Package chacha20 computes the ChaCha20 keystream of RFC 8439 for snapsafe's
// CSPRNG, many blocks at a time with AVX-512 or AVX2 where the CPU has them.
//
// It provides keystream only: no XOR with a message, no nonce or key
// management. The generator built on it owns the key and decides how the
// counter advances.
package chacha20

// BlockSize is the size of one ChaCha20 block.
const BlockSize = 64

// impl is one keystream kernel. Every kernel computes exactly what KeyStream
// documents, for any len(out) that is a multiple of BlockSize (including 0),
// and writes nothing but out; KeyStream checks the arguments once for all.
type impl struct {
	name      string
	keyStream func(out []byte, key *[32]byte, nonce *[12]byte, counter uint32)
}

// kernel is the fastest kernel this machine runs, chosen once at start-up.
// impls (fastest first, generic last) is defined per architecture.
var kernel = impls[0]

// KeyStream fills out (len(out) must be a multiple of BlockSize; panics
// otherwise) with the ChaCha20 (RFC 8439: 20 rounds, 256-bit key, 32-bit block
// counter, 96-bit nonce) keystream for key and nonce, starting at block counter
// `counter`. The caller guarantees counter+len(out)/64 <= 2^32 (panic
// otherwise, never wrap silently).
//
// Nothing but out is written. The assembly kernels also clear their vector
// registers and stack scratch before they return, so that neither key nor
// keystream outlives the call outside out; the portable kernel cannot promise
// as much, since the Go compiler may spill its state to the stack.
func KeyStream(out []byte, key *[32]byte, nonce *[12]byte, counter uint32) {
	if len(out)%BlockSize != 0 {
		panic("chacha20: output length is not a multiple of the block size")
	}
	blocks := uint64(len(out) / BlockSize)
	if uint64(counter)+blocks > 1<<32 {
		panic("chacha20: block counter would wrap around")
	}
	// The Go scheduler cannot preempt assembly: long outputs go to the kernel
	// in pieces so that one call never holds up a garbage collection or the
	// other goroutines for more than a few microseconds. The check above
	// keeps the counter from wrapping between pieces.
	for len(out) > maxCall {
		keyStreamBest(out[:maxCall], key, nonce, counter)
		out = out[maxCall:]
		counter += maxCall / BlockSize
	}
	if len(out) > 0 {
		keyStreamBest(out, key, nonce, counter)
	}
}

// maxCall is the most keystream one kernel call produces: 64 KiB, about 12 µs
// of work at 5.5 GB/s, and large enough that splitting costs nothing measurable.
const maxCall = 64 << 10

// Impl names the kernel in use: "avx512", "avx2" or "generic".
func Impl() string { return kernel.name }
