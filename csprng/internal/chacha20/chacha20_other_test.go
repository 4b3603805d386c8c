//go:build !amd64 || purego

package chacha20

import "testing"

// Without assembly (other architectures, or the purego build tag) the
// portable kernel is the only one.
func TestImplIsGeneric(t *testing.T) {
	if Impl() != "generic" || len(impls) != 1 {
		t.Errorf("Impl() = %q with %d kernels, want generic alone", Impl(), len(impls))
	}
}
