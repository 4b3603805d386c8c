package cpurand

import (
	"bytes"
	"testing"
)

// TestRead: where the CPU has an RNG, Read fills the whole buffer with
// output that is not constant and differs between calls.
func TestRead(t *testing.T) {
	if Source() == "" {
		t.Skip("this CPU offers no RDSEED/RDRAND (or the architecture is not amd64): nothing to read")
	}
	a, b := make([]byte, 61), make([]byte, 61)
	if n, src := Read(a); n != len(a) || src == "" {
		t.Fatalf("Read = %d, %q; want %d bytes", n, src, len(a))
	}
	if n, _ := Read(b); n != len(b) {
		t.Fatalf("second Read = %d", n)
	}
	if bytes.Equal(a, b) || bytes.Equal(a, make([]byte, len(a))) {
		t.Fatalf("CPU RNG output repeats or is zero: %x %x", a, b)
	}
}

// TestXOR: mixing changes the buffer (where the CPU has RDRAND) and keeps
// whatever was there in the part it did not reach.
func TestXOR(t *testing.T) {
	b := make([]byte, 36)
	n := XOR(b)
	if n == 0 {
		t.Skip("this CPU offers no RDRAND: nothing to mix")
	}
	if n != 32 || bytes.Equal(b[:32], make([]byte, 32)) || !bytes.Equal(b[32:], make([]byte, 4)) {
		t.Fatalf("XOR mixed %d bytes: %x", n, b)
	}
}
