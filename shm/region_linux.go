package shm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The seals a region carries. With its size fixed, neither side can make the
// other's mapping fault (SIGBUS) by truncating the memfd; F_SEAL_SEAL stops
// anyone from changing that later.
const regionSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// NewRegion creates a sealed region of at least size bytes (rounded up to a
// whole number of pages) and maps it read-write.
func NewRegion(size int) (*Region, error) {
	if size <= 0 || size > MaxRegionSize {
		return nil, fmt.Errorf("wipe region size %d: must be between 1 and %d bytes", size, MaxRegionSize)
	}
	pg := os.Getpagesize()
	size = (size + pg - 1) / pg * pg
	fd, err := unix.MemfdCreate("snapsafe-wipe", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("creating wipe region: %w", err)
	}
	f := os.NewFile(uintptr(fd), "snapsafe-wipe")
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing wipe region: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, regionSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealing wipe region: %w", err)
	}
	r, err := mapRegion(f, size)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// MapRegion maps a region received from the provider. It checks that the
// memfd is sealed against resizing, so that the mapping cannot fault, and
// takes ownership of f.
func MapRegion(f *os.File) (*Region, error) {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("checking wipe region seals: %w", err)
	}
	if seals&regionSeals != regionSeals {
		return nil, fmt.Errorf("wipe region is not sealed against resizing (seals %#x)", seals)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking wipe region: %w", err)
	}
	if fi.Size() <= 0 || fi.Size() > MaxRegionSize {
		return nil, fmt.Errorf("wipe region has size %d, want 1 to %d bytes", fi.Size(), MaxRegionSize)
	}
	return mapRegion(f, int(fi.Size()))
}

func mapRegion(f *os.File, size int) (*Region, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping wipe region: %w", err)
	}
	// Keep secrets out of core dumps.
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	return &Region{f: f, mem: mem}, nil
}

// Close unmaps the region and closes its memfd. It is idempotent.
func (r *Region) Close() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Dup returns a new descriptor (close-on-exec) for the region's memfd, for
// passing to the client that owns the region: the region itself may be
// closed while the duplicate is being sent.
func (r *Region) Dup() (*os.File, error) {
	fd, err := unix.FcntlInt(r.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating wipe region descriptor: %w", err)
	}
	return os.NewFile(uintptr(fd), r.f.Name()), nil
}
