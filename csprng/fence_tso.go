//go:build amd64 || 386 || s390x

package csprng

// loadFence orders the plain loads of generator state before the atomic
// load of the generation that follows it. On these architectures loads are
// never reordered with other loads, so it costs nothing.
func loadFence() {}
