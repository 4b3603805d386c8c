package csprng

import "golang.org/x/sys/unix"

// privateChunk maps anonymous memory that the kernel zeroes in a forked
// child (MADV_WIPEONFORK: a child never shares its parent's generator
// state) and leaves out of core dumps (MADV_DONTDUMP). It falls back to the
// Go heap only if the mapping fails.
func privateChunk(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n)
	}
	_ = unix.Madvise(b, unix.MADV_WIPEONFORK)
	_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	return b
}
