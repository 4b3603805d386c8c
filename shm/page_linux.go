package shm

import (
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MapPage maps the page file at path read-only.
//
// A mapping of the file faults (SIGBUS, which kills a Go program) on any
// access once someone who may write the file — root, the provider's user —
// truncates it. Clients of a running provider map its sealed memfd instead
// (MapPageMemfd; runtime/client.Attach does): MapPage is for tools that
// look at a page with no provider.
func MapPage(path string) (*Page, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("opening generation page: %w", err)
	}
	defer f.Close() // the mapping outlives the descriptor
	return mapPageFile(f)
}

func mapPageFile(f *os.File) (*Page, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking generation page: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() < PageSize {
		return nil, fmt.Errorf("%w: %s is not a regular file of at least %d bytes", ErrBadPage, f.Name(), PageSize)
	}
	return mapPageFD(int(f.Fd()))
}

// MapPageMemfd maps the page memfd a provider passed over the control
// socket (docs/ABI.md, section 3, request page) read-only. It first checks
// with F_GET_SEALS that the memfd is sealed so that its size cannot change
// and that nobody but the provider can write it (F_SEAL_SHRINK,
// F_SEAL_GROW, F_SEAL_FUTURE_WRITE): then the mapping can never fault and
// shows only what the provider wrote. f may be closed afterwards.
func MapPageMemfd(f *os.File) (*Page, error) {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: the descriptor passed for it is not a sealed memfd (F_GET_SEALS: %v)", ErrBadPage, err)
	}
	if seals&requiredSeals != requiredSeals {
		return nil, fmt.Errorf("%w: the page memfd has seals %#x, want at least %#x (shrink, grow, future write)", ErrBadPage, seals, requiredSeals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("checking the page memfd: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != PageSize {
		return nil, fmt.Errorf("%w: the page memfd has %d bytes, want %d", ErrBadPage, st.Size, PageSize)
	}
	return mapPageFD(int(f.Fd()))
}

func mapPageFD(fd int) (*Page, error) {
	mem, err := unix.Mmap(fd, 0, PageSize, unix.PROT_READ, unix.MAP_SHARED)
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

// Monotonic returns CLOCK_MONOTONIC, the clock the page's bump time is
// given in.
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}
