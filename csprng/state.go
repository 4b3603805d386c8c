package csprng

import (
	"encoding/binary"
	"unsafe"

	"github.com/snapsafe/snapsafe/csprng/internal/chacha20"
)

// The generator is ChaCha20 (RFC 8439) used as a fast-key-erasure
// generator: every refill turns the current key into bufSize bytes of
// keystream, whose first keySize bytes become the next key and the rest is
// output. A key is used for exactly one refill and then overwritten, and
// every byte handed out is erased from the buffer, so the state never holds
// anything that would let someone recompute past output.
const (
	keySize  = 32
	bufSize  = 4096 // one refill: 64 ChaCha20 blocks, a multiple of every SIMD kernel's width
	hdrSize  = 64   // the state header, one cache line
	slotSize = hdrSize + bufSize
)

var zeroNonce [12]byte // each key is used once, so a constant nonce is safe

// state is one generator. It lives in memory that is zeroed when the
// machine is restored (a provider's wipe region) or when the process forks
// (MADV_WIPEONFORK), never on the Go heap.
//
// The generation is stored complemented: a zeroed state — fresh, or wiped
// by a provider or on fork — then stands for generation 2^64-1, which no
// source ever shows (0 means "no source", and providers stop below
// 2^64-1), so it always fails the generation check and is reseeded.
type state struct {
	inv uint64 // ^generation the state was seeded in
	vmc uint64 // the VMClock counter when seeded (0 without VMClock)
	off uint64 // next unread byte of buf; keySize <= off <= bufSize
	_   [hdrSize - 24]byte
	buf [bufSize]byte // buf[:keySize] is the next key
}

// valid reports whether s was seeded for generation g and VMClock counter v.
func (s *state) valid(g, v uint64) bool { return ^g == s.inv && v == s.vmc }

func init() {
	// The header layout is assumed by slot arithmetic.
	if unsafe.Sizeof(state{}) != slotSize {
		panic("csprng: state layout")
	}
}

// stateAt views a slot of non-Go memory as a state.
func stateAt(slot []byte) *state {
	if len(slot) < slotSize {
		panic("csprng: slot too small")
	}
	return (*state)(unsafe.Pointer(&slot[0]))
}

// seed installs a fresh key for generation g (VMClock counter vmc) and
// refills.
func (s *state) seed(key *[keySize]byte, g, vmc uint64) {
	copy(s.buf[:keySize], key[:])
	clear(key[:])
	s.refill()
	s.inv, s.vmc = ^g, vmc
}

// refill replaces the buffer with keystream from the key it holds.
func (s *state) refill() {
	var key [keySize]byte
	copy(key[:], s.buf[:keySize])
	chacha20.KeyStream(s.buf[:], &key, &zeroNonce, 0)
	clear(key[:])
	s.off = keySize
}

// avail is how many output bytes the buffer holds.
func (s *state) avail() int { return bufSize - int(s.off) }

// uint64 takes 8 bytes from the buffer, which must hold them, and erases
// them.
func (s *state) uint64() uint64 {
	p := (*[8]byte)(unsafe.Add(unsafe.Pointer(&s.buf), s.off))
	v := binary.LittleEndian.Uint64(p[:])
	*p = [8]byte{}
	s.off += 8
	return v
}

// take copies up to len(b) buffered bytes into b, erases them and returns
// how many it copied.
func (s *state) take(b []byte) int {
	src := s.buf[s.off:]
	n := copy(b, src)
	clear(src[:n])
	s.off += uint64(n)
	return n
}

// takeKey takes a one-time key from the buffer (refilling if needed), for
// bulk output that is generated outside the state.
func (s *state) takeKey(key *[keySize]byte) {
	if s.avail() < keySize {
		s.refill()
	}
	s.take(key[:])
}

// fill fills b from a valid state: small requests from its buffer, large
// ones (bulkMin and up) as keystream generated straight into b from a
// one-time key taken from the buffer.
func fill(s *state, b []byte) {
	if len(b) >= bulkMin {
		var key [keySize]byte
		s.takeKey(&key)
		bulk(b, &key)
		return
	}
	for rest := b; len(rest) > 0; {
		if s.avail() == 0 {
			s.refill()
		}
		rest = rest[s.take(rest):]
	}
}

// bulkMin is the request size from which Read generates keystream straight
// into the caller's buffer instead of copying it out of the state's buffer.
const bulkMin = 512

// bulk fills b with keystream from a one-time key, which it erases. Block 0
// is reserved for the next key: ChaCha20's 32-bit block counter bounds one
// key to 256 GiB, so longer outputs continue with a key taken from block 0
// of the key before.
func bulk(b []byte, key *[keySize]byte) {
	const maxPerKey = (1<<32 - 2) * chacha20.BlockSize
	var block [chacha20.BlockSize]byte
	for {
		n := min(len(b), maxPerKey)
		full := n &^ (chacha20.BlockSize - 1)
		if full > 0 {
			chacha20.KeyStream(b[:full], key, &zeroNonce, 1)
		}
		if rest := n - full; rest > 0 {
			chacha20.KeyStream(block[:], key, &zeroNonce, uint32(full/chacha20.BlockSize)+1)
			copy(b[full:n], block[:])
		}
		if b = b[n:]; len(b) == 0 {
			break
		}
		chacha20.KeyStream(block[:], key, &zeroNonce, 0)
		copy(key[:], block[:keySize])
	}
	clear(block[:])
	clear(key[:])
}
