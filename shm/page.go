package shm

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// view gives typed atomic access to the fields of a page held in mem. It is
// shared by the reader (Page) and the writer (Writer).
//
// Every access is atomic, including the plain data fields: readers race with
// the writer by design (the seqlock detects it), and atomic accesses keep
// that race well-defined for Go and for the race detector.
type view struct {
	mem []byte
}

func (v view) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&v.mem[off])) }
func (v view) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&v.mem[off])) }

// check validates the identification header.
func (v view) check() error {
	if len(v.mem) < PageSize {
		return fmt.Errorf("%w: %d bytes, want at least %d", ErrBadPage, len(v.mem), PageSize)
	}
	if m := binary.LittleEndian.Uint32(v.mem[OffMagic:]); m != Magic {
		return fmt.Errorf("%w: magic %#x, want %#x", ErrBadPage, m, Magic)
	}
	if ver := binary.LittleEndian.Uint16(v.mem[OffVersion:]); ver != Version {
		return fmt.Errorf("%w: ABI version %d, this program understands %d", ErrBadPage, ver, Version)
	}
	if sz := binary.LittleEndian.Uint32(v.mem[OffSize:]); sz != PageSize {
		return fmt.Errorf("%w: size field %d, want %d", ErrBadPage, sz, PageSize)
	}
	return nil
}

// Snapshot is a consistent copy of every field of the page.
type Snapshot struct {
	Generation uint64
	// Wiped is the newest generation for which every wipe region was zeroed.
	Wiped   uint64
	Epoch   [16]byte
	Time    time.Time // wall-clock time of the bump
	Mono    time.Duration
	Reason  Reason
	State   State
	PID     uint32
	Backend Backend
}

// Seqlock read bounds. A write section is a handful of stores plus the
// zeroing of wipe regions (bounded by MaxRegionBytes), so it lasts
// microseconds — unless the provider is descheduled inside it, which on a
// loaded one-CPU guest can take tens of milliseconds. A reader that sees
// it open for maxWait is looking at a provider that died mid-bump and must
// not wait forever.
const (
	spinTries = 100
	maxWait   = 500 * time.Millisecond
	maxSleep  = time.Millisecond
)

// backoff paces a reader that waits for a write section to close: it spins
// briefly, then sleeps, doubling the sleep up to maxSleep, and gives up
// after maxWait. Sleeping matters: the provider that holds the section
// open may need this very CPU to finish it (runtime.Gosched would not give
// the CPU to another process).
type backoff struct {
	tries    int
	sleep    time.Duration
	deadline time.Time
}

// wait returns false once the reader should give up.
func (b *backoff) wait() bool {
	b.tries++
	switch {
	case b.tries < spinTries:
		return true
	case b.deadline.IsZero():
		b.deadline = time.Now().Add(maxWait)
		b.sleep = time.Microsecond
	case time.Now().After(b.deadline):
		return false
	}
	time.Sleep(b.sleep)
	b.sleep = min(2*b.sleep, maxSleep)
	return true
}

// snapshot reads the page under the seqlock.
func (v view) snapshot() (Snapshot, error) {
	var b backoff
	for {
		s1 := atomic.LoadUint64(v.u64(OffSeq))
		if s1&1 == 0 {
			s := v.fields()
			if atomic.LoadUint64(v.u64(OffSeq)) == s1 {
				return s, nil
			}
		}
		if !b.wait() {
			return Snapshot{}, fmt.Errorf("%w (sequence %d): is the provider alive?", ErrBusy, s1)
		}
	}
}

// fields loads every field; only meaningful inside a seqlock read section.
func (v view) fields() Snapshot {
	var s Snapshot
	s.Generation = atomic.LoadUint64(v.u64(OffGeneration))
	s.Wiped = atomic.LoadUint64(v.u64(OffWiped))
	binary.LittleEndian.PutUint64(s.Epoch[:8], atomic.LoadUint64(v.u64(OffEpoch)))
	binary.LittleEndian.PutUint64(s.Epoch[8:], atomic.LoadUint64(v.u64(OffEpoch+8)))
	if ns := atomic.LoadUint64(v.u64(OffRealtime)); ns != 0 {
		s.Time = time.Unix(0, int64(ns))
	}
	s.Mono = time.Duration(atomic.LoadUint64(v.u64(OffMonotime)))
	s.Reason = Reason(atomic.LoadUint32(v.u32(OffReason)))
	s.State = State(atomic.LoadUint32(v.u32(OffState)))
	s.PID = atomic.LoadUint32(v.u32(OffPID))
	s.Backend = Backend(atomic.LoadUint32(v.u32(OffBackend)))
	return s
}

// Page is a read-only mapping of a generation page.
type Page struct {
	v     view
	unmap func() error
}

// Generation returns the current generation with one atomic load. Zero means
// no provider ever published this page.
func (p *Page) Generation() uint64 {
	return atomic.LoadUint64(p.v.u64(OffGeneration))
}

// GenerationWord returns the address of the generation word in the
// mapping, for hot paths that load it with sync/atomic themselves. It is
// valid until Close.
func (p *Page) GenerationWord() *uint64 { return p.v.u64(OffGeneration) }

// Wiped returns the newest generation for which the provider has finished
// zeroing every wipe region. A client may put new secrets into its region
// only once Wiped equals the generation it read (see docs/ABI.md).
func (p *Page) Wiped() uint64 {
	return atomic.LoadUint64(p.v.u64(OffWiped))
}

// AwaitWipe waits until the provider has marked the wipe for generation gen
// complete, which a client must see before it stores new secrets in a wipe
// region (docs/ABI.md, section 4). It returns ErrMoved when the generation
// is no longer gen (start over with the new one), and an error wrapping
// ErrBusy when the wipe does not complete in time (the provider died
// mid-bump: stop using the region and fall back to the kernel).
func (p *Page) AwaitWipe(gen uint64) error {
	var b backoff
	for {
		if p.Generation() != gen {
			return ErrMoved
		}
		if p.Wiped() == gen {
			// Re-check: a bump may have begun after the wipe mark was read.
			if p.Generation() != gen {
				return ErrMoved
			}
			return nil
		}
		if !b.wait() {
			return fmt.Errorf("%w: the wipe for generation %d did not complete", ErrBusy, gen)
		}
	}
}

// Snapshot returns a consistent copy of every field, read under the seqlock.
// It returns an error wrapping ErrBusy, rather than hanging, if a write
// section stays open (the provider died in the middle of a bump).
func (p *Page) Snapshot() (Snapshot, error) { return p.v.snapshot() }

// Close unmaps the page. It is idempotent. Generation must not be called
// after Close.
func (p *Page) Close() error {
	if p.unmap == nil {
		return nil
	}
	err := p.unmap()
	p.unmap = nil
	return err
}

// Update is what one bump writes.
type Update struct {
	Generation uint64
	Reason     Reason
	Backend    Backend
	State      State
	PID        uint32
	Epoch      [16]byte
	Time       time.Time     // wall clock of the bump
	Mono       time.Duration // CLOCK_MONOTONIC of the bump
}

// publish performs the ABI's bump order: sequence odd, generation stored
// (visible at once to one-load readers), wipe (zero every region), the other
// fields and the wipe mark, sequence even. wipe may be nil. The Writer runs
// the same steps on two pages at once (the memfd and the page file), which
// is why they are separate methods.
func (v view) publish(u Update, wipe func()) {
	seq := v.begin()
	v.storeGeneration(u.Generation)
	if wipe != nil {
		wipe()
	}
	v.storeFields(u)
	v.end(seq, u.Generation)
}

// begin opens a write section (step 1) and returns the even sequence it
// started from.
func (v view) begin() uint64 {
	seq := atomic.LoadUint64(v.u64(OffSeq))
	if seq&1 == 1 {
		// A previous writer died mid-write; its section is abandoned.
		seq++
	}
	atomic.StoreUint64(v.u64(OffSeq), seq+1)
	return seq
}

// storeGeneration is step 2.
func (v view) storeGeneration(g uint64) { atomic.StoreUint64(v.u64(OffGeneration), g) }

// storeFields is step 4: every field but the generation, the wipe mark and
// the sequence.
func (v view) storeFields(u Update) {
	atomic.StoreUint64(v.u64(OffEpoch), binary.LittleEndian.Uint64(u.Epoch[:8]))
	atomic.StoreUint64(v.u64(OffEpoch+8), binary.LittleEndian.Uint64(u.Epoch[8:]))
	var wall uint64
	if !u.Time.IsZero() {
		wall = uint64(u.Time.UnixNano())
	}
	atomic.StoreUint64(v.u64(OffRealtime), wall)
	atomic.StoreUint64(v.u64(OffMonotime), uint64(u.Mono))
	atomic.StoreUint32(v.u32(OffReason), uint32(u.Reason))
	atomic.StoreUint32(v.u32(OffState), uint32(u.State))
	atomic.StoreUint32(v.u32(OffPID), u.PID)
	atomic.StoreUint32(v.u32(OffBackend), uint32(u.Backend))
}

// end is steps 5 and 6: the wipe mark, then the sequence even again.
func (v view) end(seq, g uint64) {
	atomic.StoreUint64(v.u64(OffWiped), g)
	atomic.StoreUint64(v.u64(OffSeq), seq+2)
}

// copyFrom makes v a copy of src inside one write section of v's own
// sequence: a reader of v that raced the copy retries. Only v's sequence
// word is not copied; src must not be written meanwhile.
func (v view) copyFrom(src view) {
	seq := v.begin()
	for off := 0; off < PageSize; off += 8 {
		if off != OffSeq {
			atomic.StoreUint64(v.u64(off), atomic.LoadUint64(src.u64(off)))
		}
	}
	atomic.StoreUint64(v.u64(OffSeq), seq+2)
}

// initHeader writes the identification header of a fresh page.
func (v view) initHeader() {
	binary.LittleEndian.PutUint32(v.mem[OffMagic:], Magic)
	binary.LittleEndian.PutUint16(v.mem[OffVersion:], Version)
	binary.LittleEndian.PutUint32(v.mem[OffSize:], PageSize)
}
