package chacha20

import (
	"encoding/binary"
	"math/bits"
)

// generic is the portable kernel and the reference the assembly kernels are
// tested against.
var generic = impl{"generic", keyStreamGeneric}

// The constant words that begin every input state: "expand 32-byte k" read as
// four little-endian words (RFC 8439, section 2.3).
const (
	sigma0 = 0x61707865
	sigma1 = 0x3320646e
	sigma2 = 0x79622d32
	sigma3 = 0x6b206574
)

// keyStreamGeneric computes one block at a time, as RFC 8439 section 2.3
// describes it. The state is kept in sixteen local variables rather than an
// array so that the compiler keeps them in registers.
func keyStreamGeneric(out []byte, key *[32]byte, nonce *[12]byte, counter uint32) {
	// The input state, row by row: constants, key, counter and nonce, all
	// read as little-endian words.
	k0 := binary.LittleEndian.Uint32(key[0:])
	k1 := binary.LittleEndian.Uint32(key[4:])
	k2 := binary.LittleEndian.Uint32(key[8:])
	k3 := binary.LittleEndian.Uint32(key[12:])
	k4 := binary.LittleEndian.Uint32(key[16:])
	k5 := binary.LittleEndian.Uint32(key[20:])
	k6 := binary.LittleEndian.Uint32(key[24:])
	k7 := binary.LittleEndian.Uint32(key[28:])
	n0 := binary.LittleEndian.Uint32(nonce[0:])
	n1 := binary.LittleEndian.Uint32(nonce[4:])
	n2 := binary.LittleEndian.Uint32(nonce[8:])

	for ; len(out) >= BlockSize; out = out[BlockSize:] {
		x0, x1, x2, x3 := uint32(sigma0), uint32(sigma1), uint32(sigma2), uint32(sigma3)
		x4, x5, x6, x7 := k0, k1, k2, k3
		x8, x9, x10, x11 := k4, k5, k6, k7
		x12, x13, x14, x15 := counter, n0, n1, n2

		// 20 rounds: ten times a column round and a diagonal round.
		for i := 0; i < 10; i++ {
			x0, x4, x8, x12 = quarterRound(x0, x4, x8, x12)
			x1, x5, x9, x13 = quarterRound(x1, x5, x9, x13)
			x2, x6, x10, x14 = quarterRound(x2, x6, x10, x14)
			x3, x7, x11, x15 = quarterRound(x3, x7, x11, x15)

			x0, x5, x10, x15 = quarterRound(x0, x5, x10, x15)
			x1, x6, x11, x12 = quarterRound(x1, x6, x11, x12)
			x2, x7, x8, x13 = quarterRound(x2, x7, x8, x13)
			x3, x4, x9, x14 = quarterRound(x3, x4, x9, x14)
		}

		// Add the input state and serialize little-endian.
		b := out[:BlockSize:BlockSize]
		binary.LittleEndian.PutUint32(b[0:], x0+sigma0)
		binary.LittleEndian.PutUint32(b[4:], x1+sigma1)
		binary.LittleEndian.PutUint32(b[8:], x2+sigma2)
		binary.LittleEndian.PutUint32(b[12:], x3+sigma3)
		binary.LittleEndian.PutUint32(b[16:], x4+k0)
		binary.LittleEndian.PutUint32(b[20:], x5+k1)
		binary.LittleEndian.PutUint32(b[24:], x6+k2)
		binary.LittleEndian.PutUint32(b[28:], x7+k3)
		binary.LittleEndian.PutUint32(b[32:], x8+k4)
		binary.LittleEndian.PutUint32(b[36:], x9+k5)
		binary.LittleEndian.PutUint32(b[40:], x10+k6)
		binary.LittleEndian.PutUint32(b[44:], x11+k7)
		binary.LittleEndian.PutUint32(b[48:], x12+counter)
		binary.LittleEndian.PutUint32(b[52:], x13+n0)
		binary.LittleEndian.PutUint32(b[56:], x14+n1)
		binary.LittleEndian.PutUint32(b[60:], x15+n2)

		// Wraps to 0 only after the block at 2^32-1, which KeyStream lets
		// be the last one.
		counter++
	}
}

// quarterRound is the ChaCha quarter-round of RFC 8439, section 2.1.
func quarterRound(a, b, c, d uint32) (uint32, uint32, uint32, uint32) {
	a += b
	d = bits.RotateLeft32(d^a, 16)
	c += d
	b = bits.RotateLeft32(b^c, 12)
	a += b
	d = bits.RotateLeft32(d^a, 8)
	c += d
	b = bits.RotateLeft32(b^c, 7)
	return a, b, c, d
}
