//go:build !amd64 || purego

package chacha20

// impls is the portable kernel alone: other architectures have no assembly
// kernel, and the purego build tag asks for none.
var impls = []impl{generic}

// keyStreamBest runs the portable kernel.
func keyStreamBest(out []byte, key *[32]byte, nonce *[12]byte, counter uint32) {
	keyStreamGeneric(out, key, nonce, counter)
}
