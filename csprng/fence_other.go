//go:build !(amd64 || 386 || s390x)

package csprng

import "sync/atomic"

// loadFence orders the plain loads of generator state before the atomic
// load of the generation that follows it. On weakly ordered architectures
// a load of state that the provider has just wiped could otherwise be
// satisfied after the re-check of the generation; an atomic
// read-modify-write (acquire and release) on a private word forbids that.
func loadFence() {
	var w uint64
	atomic.AddUint64(&w, 0)
}
