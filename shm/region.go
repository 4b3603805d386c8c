package shm

import "os"

// Wipe-region bounds. A region holds a client's live secrets (a CSPRNG key
// and buffer, cached session keys); 64 KiB is far more than that needs. The
// provider zeroes every region inside the seqlock write section of each
// bump, so the total is bounded to keep a bump (and a reader's wait for it)
// short: zeroing 16 MiB takes a few milliseconds.
const (
	MaxRegionSize  = 64 << 10
	MaxRegionBytes = 16 << 20
)

// Region is a wipe-on-restore memory region: a sealed memfd mapped shared by
// the provider, which zeroes it on every bump, and by the one client it was
// made for. Its size is a multiple of the system page size.
type Region struct {
	f   *os.File
	mem []byte
}

// Bytes returns the mapped memory. It stays valid until Close.
func (r *Region) Bytes() []byte { return r.mem }

// File returns the memfd, to be passed to the client over the control
// socket.
func (r *Region) File() *os.File { return r.f }

// Wipe zeroes the region.
func (r *Region) Wipe() { clear(r.mem) }
