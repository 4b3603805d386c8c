//go:build !linux

package csprng

// privateChunk returns heap memory: this system has no MADV_WIPEONFORK.
func privateChunk(n int) []byte { return make([]byte, n) }
