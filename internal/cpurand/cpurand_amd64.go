package cpurand

import (
	"encoding/binary"

	"github.com/klauspost/cpuid/v2"
)

// rdseed and rdrand execute the instruction once; ok is the carry flag
// (false: no value was ready).
func rdseed() (v uint64, ok bool)
func rdrand() (v uint64, ok bool)

// Source names the instruction Read uses on this CPU, or "" for none.
func Source() string { return source }

var source = func() string {
	switch {
	case cpuid.CPU.Supports(cpuid.RDSEED):
		return "rdseed"
	case cpuid.CPU.Supports(cpuid.RDRAND):
		return "rdrand"
	}
	return ""
}()

// retries bounds the attempts per word. Intel's guidance for RDRAND is 10;
// RDSEED fails more often under load, so it gets more before read falls
// back to RDRAND for that word.
const retries = 32

// Read fills b with the CPU's RNG output for as long as the CPU gives it
// and returns how many bytes it wrote and the instruction used ("rdseed",
// or "rdrand" where RDSEED ran dry), or 0 and "" where the CPU has none.
func Read(b []byte) (n int, src string) {
	if source == "" {
		return 0, ""
	}
	used := source
	var w [8]byte
	n = 0
	for n < len(b) {
		v, ok := word(source == "rdseed")
		if !ok && source == "rdseed" {
			if v, ok = word(false); ok {
				used = "rdrand"
			}
		}
		if !ok {
			break
		}
		binary.LittleEndian.PutUint64(w[:], v)
		n += copy(b[n:], w[:])
	}
	if n == 0 {
		return 0, ""
	}
	return n, used
}

func word(seed bool) (uint64, bool) {
	for range retries {
		var v uint64
		var ok bool
		if seed {
			v, ok = rdseed()
		} else {
			v, ok = rdrand()
		}
		if ok {
			return v, true
		}
	}
	return 0, false
}

// hasRDRAND: XOR uses RDRAND, which is fast (RDSEED waits for the
// conditioner and is meant for seeding other generators, as Read does).
var hasRDRAND = cpuid.CPU.Supports(cpuid.RDRAND)

// XOR mixes the CPU's RNG output (RDRAND) into b, whole words only, and
// reports how many bytes it mixed: defence in depth for a key that already
// came from the kernel, so a failing or untrustworthy CPU RNG can take
// nothing away.
func XOR(b []byte) int {
	if !hasRDRAND {
		return 0
	}
	n := 0
	for ; n+8 <= len(b); n += 8 {
		v, ok := word(false)
		if !ok {
			break
		}
		binary.LittleEndian.PutUint64(b[n:], binary.LittleEndian.Uint64(b[n:])^v)
	}
	return n
}
