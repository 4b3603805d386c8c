package chacha20

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	xcrypto "golang.org/x/crypto/chacha20"
)

// unhex decodes hex written the way RFC 8439 prints it, with spaces, colons
// and line breaks between bytes.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", ":", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		t.Fatalf("bad test vector: %v", err)
	}
	return b
}

// rfcKey is the key of RFC 8439's examples: bytes 00, 01, …, 1f.
func rfcKey() *[32]byte {
	var k [32]byte
	for i := range k {
		k[i] = byte(i)
	}
	return &k
}

// run calls one kernel on a fresh buffer of n blocks.
func run(k impl, n int, key *[32]byte, nonce *[12]byte, counter uint32) []byte {
	out := make([]byte, n*BlockSize)
	k.keyStream(out, key, nonce, counter)
	return out
}

// reference computes n blocks of keystream with golang.org/x/crypto/chacha20.
func reference(t testing.TB, n int, key *[32]byte, nonce *[12]byte, counter uint32) []byte {
	t.Helper()
	c, err := xcrypto.NewUnauthenticatedCipher(key[:], nonce[:])
	if err != nil {
		t.Fatal(err)
	}
	c.SetCounter(counter)
	out := make([]byte, n*BlockSize)
	c.XORKeyStream(out, out)
	return out
}

// kernels is every kernel this machine runs, plus KeyStream itself (whatever
// kernel it picked, behind its argument checks).
func kernels() []impl {
	return append(impls[:len(impls):len(impls)], impl{"KeyStream", KeyStream})
}

// firstDiff describes where two keystreams part, by block and byte.
func firstDiff(got, want []byte) string {
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("block %d byte %d: got %#02x, want %#02x", i/BlockSize, i%BlockSize, got[i], want[i])
		}
	}
	return "lengths differ"
}

// RFC 8439, section 2.3.2: the block function.
func TestRFC8439BlockFunction(t *testing.T) {
	nonce := (*[12]byte)(unhex(t, "00:00:00:09:00:00:00:4a:00:00:00:00"))
	want := unhex(t, `
		10 f1 e7 e4 d1 3b 59 15 50 0f dd 1f a3 20 71 c4
		c7 d1 f4 c7 33 c0 68 03 04 22 aa 9a c3 d4 6c 4e
		d2 82 64 46 07 9f aa 09 14 c2 d7 05 d9 8b 02 a2
		b5 12 9c d1 de 16 4e b9 cb d0 83 e8 a2 50 3c 4e`)
	for _, k := range kernels() {
		if got := run(k, 1, rfcKey(), nonce, 1); !bytes.Equal(got, want) {
			t.Errorf("%s: got\n%x\nwant\n%x", k.name, got, want)
		}
	}
}

// RFC 8439, section 2.4.2: encryption of the "sunscreen" plaintext, which
// takes two blocks from counter 1.
func TestRFC8439Encryption(t *testing.T) {
	nonce := (*[12]byte)(unhex(t, "00:00:00:00:00:00:00:4a:00:00:00:00"))
	plaintext := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	want := unhex(t, `
		6e 2e 35 9a 25 68 f9 80 41 ba 07 28 dd 0d 69 81
		e9 7e 7a ec 1d 43 60 c2 0a 27 af cc fd 9f ae 0b
		f9 1b 65 c5 52 47 33 ab 8f 59 3d ab cd 62 b3 57
		16 39 d6 24 e6 51 52 ab 8f 53 0c 35 9f 08 61 d8
		07 ca 0d bf 50 0d 6a 61 56 a3 8e 08 8a 22 b6 5e
		52 bc 51 4d 16 cc f8 06 81 8c e9 1a b7 79 37 36
		5a f9 0b bf 74 a3 5b e6 b4 0b 8e ed f2 78 5e 42
		87 4d`)
	for _, k := range kernels() {
		ks := run(k, 2, rfcKey(), nonce, 1)
		got := make([]byte, len(plaintext))
		for i := range got {
			got[i] = plaintext[i] ^ ks[i]
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got\n%x\nwant\n%x", k.name, got, want)
		}
	}
}

// RFC 8439, appendix A.1, test vector #1: all-zero key and nonce, counter 0.
func TestRFC8439ZeroKey(t *testing.T) {
	want := unhex(t, `
		76 b8 e0 ad a0 f1 3d 90 40 5d 6a e5 53 86 bd 28
		bd d2 19 b8 a0 8d ed 1a a8 36 ef cc 8b 77 0d c7
		da 41 59 7c 51 57 48 8d 77 24 e0 3f b8 d8 4a 37
		6a 43 b8 f4 15 18 a1 1c c3 87 b6 69 b2 ee 65 86`)
	for _, k := range kernels() {
		if got := run(k, 1, new([32]byte), new([12]byte), 0); !bytes.Equal(got, want) {
			t.Errorf("%s: got\n%x\nwant\n%x", k.name, got, want)
		}
	}
}

// lengths are the block counts the differential tests cover: every count up
// to 48 (each step and tail of the 16-, 8- and 4-block paths, alone and after
// full steps), then larger ones with every kind of remainder.
func lengths() []int {
	var ns []int
	for n := 0; n <= 48; n++ {
		ns = append(ns, n)
	}
	return append(ns, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 1021, 1024, 4099)
}

func TestKernelsMatchReferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range lengths() {
		var key [32]byte
		var nonce [12]byte
		fill(rng, key[:])
		fill(rng, nonce[:])
		counter := uint32(rng.Uint64N(1<<32 - uint64(n) + 1))
		want := reference(t, n, &key, &nonce, counter)
		for _, k := range kernels() {
			// An odd offset also checks that out need not be aligned.
			for _, offset := range []int{0, 1 + n%63} {
				buf := make([]byte, offset+n*BlockSize)
				out := buf[offset:]
				k.keyStream(out, &key, &nonce, counter)
				if !bytes.Equal(out, want) {
					t.Errorf("%s, %d blocks from counter %#x, offset %d: %s", k.name, n, counter, offset, firstDiff(out, want))
				}
			}
		}
	}
}

// Counters that end exactly at 2^32, the last block KeyStream allows.
func TestCounterLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range lengths()[1:] {
		var key [32]byte
		var nonce [12]byte
		fill(rng, key[:])
		fill(rng, nonce[:])
		counter := uint32(1<<32 - n)
		want := reference(t, n, &key, &nonce, counter)
		for _, k := range kernels() {
			if got := run(k, n, &key, &nonce, counter); !bytes.Equal(got, want) {
				t.Errorf("%s, %d blocks from counter %#x: %s", k.name, n, counter, firstDiff(got, want))
			}
		}
	}
}

// Every byte of out is written and nothing around it: each kernel runs twice
// on buffers filled with different patterns, and must produce the same out
// while leaving the guard bytes on both sides as they were.
func TestWritesExactlyOut(t *testing.T) {
	const guard = 3 * BlockSize
	key, nonce := rfcKey(), new([12]byte)
	for _, k := range kernels() {
		for n := 0; n <= 40; n++ {
			var outs [2][]byte
			for i, pattern := range []byte{0x00, 0xff} {
				buf := bytes.Repeat([]byte{pattern}, guard+n*BlockSize+guard)
				out := buf[guard : guard+n*BlockSize : guard+n*BlockSize]
				k.keyStream(out, key, nonce, 7)
				for j, b := range buf {
					if (j < guard || j >= guard+len(out)) && b != pattern {
						t.Fatalf("%s, %d blocks: byte %d outside out changed from %#02x to %#02x", k.name, n, j-guard, pattern, b)
					}
				}
				outs[i] = out
			}
			if !bytes.Equal(outs[0], outs[1]) {
				t.Fatalf("%s, %d blocks: out not fully written: %s", k.name, n, firstDiff(outs[0], outs[1]))
			}
		}
	}
}

func TestKeyStreamPanics(t *testing.T) {
	key, nonce := rfcKey(), new([12]byte)
	for _, tc := range []struct {
		name    string
		len     int
		counter uint32
	}{
		{"partial block", 63, 0},
		{"block and a half", 96, 0},
		{"two blocks from the last counter", 2 * BlockSize, 1<<32 - 1},
		{"17 blocks from 2^32-16", 17 * BlockSize, 1<<32 - 16},
		{"1024 blocks from 2^32-1000", 1024 * BlockSize, 1<<32 - 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]byte, tc.len)
			defer func() {
				if recover() == nil {
					t.Errorf("KeyStream(len %d, counter %#x) did not panic", tc.len, tc.counter)
				}
				if !bytes.Equal(out, make([]byte, tc.len)) {
					t.Errorf("KeyStream wrote to out before panicking")
				}
			}()
			KeyStream(out, key, nonce, tc.counter)
		})
	}
}

// Neither an empty out nor the very last block panics.
func TestKeyStreamEdges(t *testing.T) {
	key, nonce := rfcKey(), new([12]byte)
	KeyStream(nil, key, nonce, 1<<32-1)
	got := make([]byte, BlockSize)
	KeyStream(got, key, nonce, 1<<32-1)
	if want := reference(t, 1, key, nonce, 1<<32-1); !bytes.Equal(got, want) {
		t.Errorf("last block: got %x, want %x", got, want)
	}
}

func FuzzKeyStream(f *testing.F) {
	f.Add([]byte("key"), []byte("nonce"), uint32(0), uint8(1), uint8(0))
	f.Add(make([]byte, 32), make([]byte, 12), uint32(1<<32-1), uint8(1), uint8(3))
	f.Add(bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0xff}, 12), uint32(1<<32-29), uint8(29), uint8(63))
	f.Add([]byte("0123456789abcdef0123456789abcdef"), []byte("0123456789ab"), uint32(12345), uint8(70), uint8(17))
	f.Fuzz(func(t *testing.T, keyIn, nonceIn []byte, counter uint32, blocks, offset uint8) {
		var key [32]byte
		var nonce [12]byte
		copy(key[:], keyIn)
		copy(nonce[:], nonceIn)
		n := int(blocks) % 80
		if uint64(counter)+uint64(n) > 1<<32 {
			counter = uint32(1<<32 - n)
		}
		want := run(generic, n, &key, &nonce, counter)
		for _, k := range kernels() {
			buf := make([]byte, int(offset%64)+n*BlockSize)
			out := buf[offset%64:]
			k.keyStream(out, &key, &nonce, counter)
			if !bytes.Equal(out, want) {
				t.Errorf("%s, %d blocks from counter %#x: %s", k.name, n, counter, firstDiff(out, want))
			}
		}
	})
}

func fill(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// BenchmarkKeyStream measures every kernel at sizes from one block to 64 KiB,
// and x/crypto/chacha20 for comparison.
func BenchmarkKeyStream(b *testing.B) {
	sizes := []int{64, 256, 1024, 4096, 8192, 65536}
	key, nonce := rfcKey(), new([12]byte)
	for _, k := range impls {
		for _, size := range sizes {
			b.Run(fmt.Sprintf("%s/%d", k.name, size), func(b *testing.B) {
				out := make([]byte, size)
				b.SetBytes(int64(size))
				for i := 0; i < b.N; i++ {
					k.keyStream(out, key, nonce, 0)
				}
			})
		}
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("x-crypto/%d", size), func(b *testing.B) {
			c, err := xcrypto.NewUnauthenticatedCipher(key[:], nonce[:])
			if err != nil {
				b.Fatal(err)
			}
			out := make([]byte, size)
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				c.XORKeyStream(out, out)
			}
		})
	}
}
