// Package testvmclock stands in for the hypervisor in the tests of VMClock
// readers: a regular file holds the page, which vmclock.Open maps read-only
// like the device, and a Hypervisor updates it through a writable shared
// mapping of the same file, under the seqlock, as a hypervisor updates guest
// memory.
package testvmclock

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/snapsafe/snapsafe/backend/vmclock"
	"golang.org/x/sys/unix"
)

// PageSize is the size of the pages WritePage writes.
const PageSize = 4096

// WritePage writes a version 1 page of PageSize bytes, as a hypervisor
// initialises it, to a fresh file and returns its path.
func WritePage(t testing.TB, flags, counter uint64) string {
	t.Helper()
	return WriteFile(t, vmclock.Page(PageSize, flags, counter))
}

// WriteFile writes b to a fresh file and returns its path.
func WriteFile(t testing.TB, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vmclock0")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Hypervisor writes a page file through a writable shared mapping. Only one
// goroutine may use it.
type Hypervisor struct{ mem []byte }

// New maps the page file at path for writing, until the end of the test.
func New(t testing.TB, path string) *Hypervisor {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return &Hypervisor{mem: mem}
}

// Load32, Store32 and Store64 access the page's little-endian words
// atomically, as the reader loads them.
func (h *Hypervisor) Load32(off int) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], atomic.LoadUint32((*uint32)(unsafe.Pointer(&h.mem[off]))))
	return binary.LittleEndian.Uint32(b[:])
}

func (h *Hypervisor) Store32(off int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&h.mem[off])), binary.NativeEndian.Uint32(b[:]))
}

func (h *Hypervisor) Store64(off int, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&h.mem[off])), binary.NativeEndian.Uint64(b[:]))
}

// Update runs write inside a seqlock write section.
func (h *Hypervisor) Update(write func()) {
	seq := h.Load32(vmclock.OffSeq)
	h.Store32(vmclock.OffSeq, seq+1)
	write()
	h.Store32(vmclock.OffSeq, seq+2)
}

// SetCounter moves vm_generation_counter to v, as a restore does.
func (h *Hypervisor) SetCounter(v uint64) {
	h.Update(func() { h.Store64(vmclock.OffCounter, v) })
}
