package csprng

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20"
)

// refStream is an independent model of the generator built on
// x/crypto/chacha20: each refill is 4096 bytes of keystream (nonce 0,
// counter 0) of the current key; its first 32 bytes are the next key, the
// rest is output.
func refStream(key [keySize]byte, refills int) []byte {
	var out []byte
	for range refills {
		ks := make([]byte, bufSize)
		c, err := chacha20.NewUnauthenticatedCipher(key[:], zeroNonce[:])
		if err != nil {
			panic(err)
		}
		c.XORKeyStream(ks, ks)
		copy(key[:], ks[:keySize])
		out = append(out, ks[keySize:]...)
	}
	return out
}

// refKey is the key the model's next refill uses after key.
func refKey(key [keySize]byte) []byte {
	ks := make([]byte, keySize)
	c, err := chacha20.NewUnauthenticatedCipher(key[:], zeroNonce[:])
	if err != nil {
		panic(err)
	}
	c.XORKeyStream(ks, ks)
	return ks
}

// TestGolden pins the generator's output for a fixed seed.
func TestGolden(t *testing.T) {
	src := testSource(t)
	var key [keySize]byte
	for i := range key {
		key[i] = byte(i)
	}
	old := seedKey
	seedKey = func(uint64) (k [keySize]byte) { return k }
	defer func() { seedKey = old }()
	r := New()
	r.Uint64() // bind to src
	g, v := src.generation()
	r.h.s.seed(&key, g, v)

	got := make([]byte, 64)
	for i := 0; i < 64; i += 8 {
		binary.LittleEndian.PutUint64(got[i:], r.Uint64())
	}
	const want = "2b23cce7a26023ab3f0eef693ac87f64258235eab1f7a32dc22762a0485b410c" +
		"18b84231ade6a6d113615c61af434e27f8b1f3f5e1ad5b5cecf8fc122a35755c"
	if hex.EncodeToString(got) != want {
		t.Fatalf("output for seed 00..1f:\n got %x\nwant %s", got, want)
	}
	for i := range key {
		key[i] = byte(i)
	}
	// Across refills, and for Uint64 and small Reads alike, the output is
	// the model's stream.
	ref := refStream(key, 3)
	r.h.s.seed(&key, g, v)
	var stream []byte
	for len(stream) < 2*(bufSize-keySize) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], r.Uint64())
		stream = append(stream, b[:]...)
	}
	small := make([]byte, 13)
	r.Read(small)
	stream = append(stream, small...)
	if !bytes.Equal(stream, ref[:len(stream)]) {
		t.Fatal("generator output differs from the x/crypto/chacha20 model")
	}
	if hex.EncodeToString(ref[:32]) != want[:64] {
		t.Fatal("model disagrees with the golden vector")
	}
}

func TestBulkMatchesModel(t *testing.T) {
	for _, n := range []int{1, 63, 64, 65, 511, 512, 4096, 10000, 1 << 20} {
		var key [keySize]byte
		key[0] = byte(n)
		want := make([]byte, n+chacha20BlockSize)
		c, _ := chacha20.NewUnauthenticatedCipher(key[:], zeroNonce[:])
		c.XORKeyStream(want, want)
		got := make([]byte, n)
		k := key
		bulk(got, &k)
		if !bytes.Equal(got, want[chacha20BlockSize:]) {
			t.Fatalf("bulk(%d) differs from blocks 1.. of the keystream", n)
		}
		if k != ([keySize]byte{}) {
			t.Fatal("bulk left the one-time key in place")
		}
	}
}

const chacha20BlockSize = 64

func TestErasure(t *testing.T) {
	testSource(t)
	r := New()
	r.Uint64()
	s := r.h.s
	start := int(s.off)
	r.Uint64()
	b := make([]byte, 40)
	r.Read(b)
	// Every byte handed out is zero in the buffer now.
	for i := start - 8; i < int(s.off); i++ {
		if s.buf[i] != 0 {
			t.Fatalf("byte %d of the buffer still holds output", i)
		}
	}
}

func TestReseedOnBump(t *testing.T) {
	src := testSource(t)
	seeds := logSeeds(t)
	r := New()
	a := r.Uint64()
	if seeds.count() != 1 {
		t.Fatalf("%d seeds after first use, want 1", seeds.count())
	}
	r.Uint64()
	if seeds.count() != 1 {
		t.Fatal("reseeded without a bump")
	}
	bump(src)
	b := r.Uint64()
	if seeds.count() != 2 {
		t.Fatalf("%d seeds after a bump, want 2", seeds.count())
	}
	if g := ^r.h.s.inv; g != 2 {
		t.Fatalf("state generation %d after the bump, want 2", g)
	}
	_ = a
	_ = b
	// The package-level functions too.
	Uint64()
	n := seeds.count()
	Uint64()
	bump(src)
	Uint64()
	if seeds.count() != n+1 {
		t.Fatalf("package-level Uint64 did not reseed exactly once after a bump (%d -> %d)", n, seeds.count())
	}
}

// TestSourceSwitchReseeds: a new source (provider lost, follower started)
// reseeds every state, even if its generation number is the same.
func TestSourceSwitchReseeds(t *testing.T) {
	testSource(t)
	seeds := logSeeds(t)
	r := New()
	r.Uint64()
	testSource(t) // same generation number, new source
	r.Uint64()
	if seeds.count() != 2 {
		t.Fatalf("%d seeds, want 2", seeds.count())
	}
}

func TestKernelModeUsesKernel(t *testing.T) {
	useSource(t, newSource(ModeKernel))
	seeds := logSeeds(t)
	r := New()
	seen := map[uint64]bool{}
	for range 1000 {
		seen[r.Uint64()] = true
		seen[Uint64()] = true
	}
	b := make([]byte, 5000)
	Read(b)
	r.Read(b)
	if seeds.count() != 0 {
		t.Fatal("kernel mode seeded a generator")
	}
	if len(seen) != 2000 {
		t.Fatalf("%d distinct values of 2000", len(seen))
	}
}

// TestNoOutputAcrossBump is the heart of the package: readers draw values
// while a bumper moves the generation as fast as it can. Every value is
// traced back to the seed whose keystream produced it, using the test's
// reproducible seeds; no call that started after a bump may return bytes
// of a keystream seeded for an earlier generation.
func TestNoOutputAcrossBump(t *testing.T) {
	src := testSource(t)
	seeds := logSeeds(t)

	type rec struct{ start, word uint64 }
	// One reader per P beside the bumper, so that they truly run in
	// parallel with it rather than between its time slices.
	readers := max(1, runtime.GOMAXPROCS(0)-1)
	recs := make([][]rec, readers)
	var stop atomic.Bool
	var progress atomic.Int64
	var finished atomic.Int32 // readers that reached their quota
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer finished.Add(1)
			r := New()
			for n := 0; !stop.Load() && n < 200000; n++ {
				g := atomic.LoadUint64(src.gen)
				var x uint64
				if n%2 == 0 {
					x = r.Uint64()
				} else {
					x = Uint64()
				}
				recs[i] = append(recs[i], rec{g, x})
				progress.Add(1)
			}
		}()
	}
	// Bump as fast as the readers make progress: after each bump, wait
	// (spinning) only until some call completed. Bumping with no pause at all
	// would discard and retry every call for as long as the bumper runs, and
	// on a loaded machine the readers might run only between its time slices.
	const maxBumps = 3000
	var bumps int
	for end := time.Now().Add(5 * time.Second); bumps < maxBumps && time.Now().Before(end) && finished.Load() == 0; bumps++ {
		seen := progress.Load()
		bump(src)
		for progress.Load() == seen && finished.Load() == 0 {
			runtime.Gosched()
		}
	}
	stop.Store(true)
	wg.Wait()

	words := map[uint64]uint64{} // word → generation at the start of its call
	for _, rs := range recs {
		for _, r := range rs {
			words[r.word] = r.start
		}
	}
	var traced, violations int
	seeds.mu.Lock()
	defer seeds.mu.Unlock()
	for _, s := range seeds.seeds {
		// A state hands out its stream in order from the seed on, so the
		// values drawn from one seed are a prefix of its stream: extend the
		// model refill by refill while it keeps finding values.
		key := s.key
		for found := true; found; {
			found = false
			stream := refStream(key, 1)
			copy(key[:], refKey(key))
			for i := 0; i+8 <= len(stream); i += 8 {
				w := binary.LittleEndian.Uint64(stream[i:])
				start, ok := words[w]
				if !ok {
					continue
				}
				found = true
				traced++
				delete(words, w)
				if start > s.gen {
					violations++
					if violations < 5 {
						t.Errorf("a call that started in generation %d returned keystream seeded for generation %d", start, s.gen)
					}
				}
			}
		}
	}
	total := traced + len(words)
	t.Logf("%d bumps, %d seeds, %d values, %d traced to their seed", bumps, len(seeds.seeds), total, traced)
	if violations > 0 {
		t.Fatalf("%d values crossed a bump", violations)
	}
	// The proof needs the values to be traceable, and the readers to have
	// raced the bumper.
	if traced < total*99/100 {
		t.Fatalf("only %d of %d values traced to a seed: the model does not match the generator", traced, total)
	}
	if bumps < 1000 || len(seeds.seeds) < 1000 {
		t.Fatalf("%d bumps and %d reseeds: the readers did not race the bumper", bumps, len(seeds.seeds))
	}
}

func TestConcurrentUse(t *testing.T) {
	src := testSource(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1+i*300)
			for n := range 2000 {
				Uint64()
				Read(b)
				if i == 0 && n%100 == 0 {
					bump(src)
				}
			}
		}()
	}
	wg.Wait()
}

func TestMathRandSource(t *testing.T) {
	testSource(t)
	var _ rand.Source = New()
	r := rand.New(New())
	seen := map[uint64]bool{}
	for range 1 << 16 {
		v := r.Uint64()
		if seen[v] {
			t.Fatal("duplicate 64-bit value")
		}
		seen[v] = true
	}
	if a, b := New().Uint64(), New().Uint64(); a == b {
		t.Fatal("two instances gave the same first value")
	}
}

func TestZeroAllocs(t *testing.T) {
	testSource(t)
	r := New()
	b := make([]byte, 32)
	big := make([]byte, 4096)
	for name, f := range map[string]func(){
		"Uint64":      func() { Uint64() },
		"Read32":      func() { Read(b) },
		"Read4096":    func() { Read(big) },
		"Rand.Uint64": func() { r.Uint64() },
		"Rand.Read32": func() { r.Read(b) },
		"Reader.Read": func() { Reader.Read(b) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}
