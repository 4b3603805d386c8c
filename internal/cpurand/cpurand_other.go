//go:build !amd64

package cpurand

// Read writes nothing: this architecture's RNG instructions are not used.
func Read([]byte) (n int, src string) { return 0, "" }

// Source is "" here.
func Source() string { return "" }

// XOR mixes nothing here.
func XOR([]byte) int { return 0 }
