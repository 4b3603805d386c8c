package csprng

import "golang.org/x/sys/unix"

func init() { mapWipeOnFork = mmapWipeOnFork }

// mmapWipeOnFork maps anonymous memory that the kernel zeroes in a forked
// child (MADV_WIPEONFORK: a child never shares its parent's generator
// state) and leaves out of core dumps (MADV_DONTDUMP).
func mmapWipeOnFork(n int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	_ = unix.Madvise(b, unix.MADV_WIPEONFORK)
	_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	return b, nil
}
