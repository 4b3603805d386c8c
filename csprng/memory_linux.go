package csprng

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	mapWipeOnFork = mmapWipeOnFork
	remapPrivate = mmapFixedPrivate
}

// mmapFixedPrivate maps fresh wipe-on-fork anonymous memory over b's
// address range (MAP_FIXED replaces the old mapping atomically).
func mmapFixedPrivate(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := unix.Syscall6(unix.SYS_MMAP, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uintptr(0), 0)
	if e != 0 {
		return e
	}
	_ = unix.Madvise(b, unix.MADV_WIPEONFORK)
	_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	return nil
}

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
