package shm

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MapPage maps the generation page at path read-only.
func MapPage(path string) (*Page, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("opening generation page: %w", err)
	}
	defer f.Close() // the mapping outlives the descriptor
	return mapPageFile(f)
}

// MapPageFile maps the generation page open as f read-only. f may be closed
// afterwards.
func MapPageFile(f *os.File) (*Page, error) { return mapPageFile(f) }

func mapPageFile(f *os.File) (*Page, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking generation page: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() < PageSize {
		return nil, fmt.Errorf("%w: %s is not a regular file of at least %d bytes", ErrBadPage, f.Name(), PageSize)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, PageSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping generation page: %w", err)
	}
	v := view{mem: mem}
	if err := v.check(); err != nil {
		_ = unix.Munmap(mem)
		return nil, err
	}
	return &Page{v: v, unmap: func() error { return unix.Munmap(mem) }}, nil
}

// Retire replaces the mapping, in place, with a private zero page: from then
// on the generation reads 0 ("no provider") through every pointer anyone
// took with GenerationWord, and nothing faults. A client retires the page
// of a provider that went away, so that hot paths holding its generation
// word notice without checking anything else.
func (p *Page) Retire() error {
	if p.unmap == nil {
		return nil
	}
	_, err := unix.MmapPtr(-1, 0, unsafe.Pointer(&p.v.mem[0]), PageSize,
		unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED)
	if err != nil {
		return fmt.Errorf("retiring generation page: %w", err)
	}
	return nil
}

// OpenWriter opens the generation page at path for writing, creating it if
// needed. The file is kept at mode 0444 so that other processes can only map
// it read-only. An existing valid page keeps its contents (clients that have
// it mapped keep seeing it); anything else is reinitialised.
func OpenWriter(path string) (*Writer, error) {
	f, err := openRW(path)
	if err != nil {
		return nil, fmt.Errorf("opening generation page for writing: %w", err)
	}
	defer f.Close()
	return OpenWriterFile(f)
}

// OpenWriterFile is OpenWriter for a page file the caller opened read-write
// (a provider opens it relative to its checked state directory). f may be
// closed afterwards.
func OpenWriterFile(f *os.File) (*Writer, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking generation page: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file: remove it", ErrBadPage, f.Name())
	}
	if err := f.Chmod(0o444); err != nil {
		return nil, fmt.Errorf("setting generation page mode: %w", err)
	}
	if fi.Size() != PageSize {
		if err := f.Truncate(PageSize); err != nil {
			return nil, fmt.Errorf("sizing generation page: %w", err)
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping generation page: %w", err)
	}
	w := &Writer{v: view{mem: mem}, unmap: func() error { return unix.Munmap(mem) }}
	if w.v.check() == nil {
		w.prior, w.valid = w.Generation(), true
	} else {
		clear(mem)
		w.v.initHeader()
	}
	return w, nil
}

// openRW opens path read-write, creating it with mode 0444. A page left by an
// earlier provider of the same non-root user is 0444 too, which the owner
// cannot open for writing: make it writable for the owner for the moment of
// the open (OpenWriter restores 0444 at once).
func openRW(path string) (*os.File, error) {
	const flags = os.O_RDWR | os.O_CREATE | unix.O_NOFOLLOW
	f, err := os.OpenFile(path, flags, 0o444)
	if err == nil || !errors.Is(err, os.ErrPermission) {
		return f, err
	}
	if cerr := os.Chmod(path, 0o644); cerr != nil {
		return nil, err
	}
	return os.OpenFile(path, flags, 0o444)
}

// Monotonic returns CLOCK_MONOTONIC, the clock the page's bump time is
// given in.
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}
