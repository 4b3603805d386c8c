package shm

import (
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Writer is the provider's side of the generation page.
//
// The page itself is a sealed memfd (NewWriter / OpenWriter create it):
// fixed at PageSize bytes (F_SEAL_SHRINK, F_SEAL_GROW) and, once the
// Writer has mapped it, writable by nobody else (F_SEAL_FUTURE_WRITE). A
// client that maps it (MapPageMemfd, after receiving it over the control
// socket) can never be made to fault by anyone, root included.
//
// The page file in the state directory is kept as a copy of the memfd for
// readers that map the file (clients in other languages): every Publish
// writes it too, in the same order. Anyone allowed to write the file (root,
// the provider's user) can damage it; the Writer never faults on that
// (stores to the file run with debug.SetPanicOnFault and a recover), Check
// tells what happened to it and Repair republishes it.
//
// Only one Writer may exist per page file; the provider's directory lock
// ensures it. Its methods are safe for concurrent use, but the provider
// serialises bumps itself: Publish does not check that the generation
// rises.
type Writer struct {
	mu    sync.Mutex
	mv    view     // the memfd, mapped read-write
	memfd *os.File // the memfd, to duplicate for clients
	dir   *os.File // the state directory, for the *at calls on the file
	name  string   // the page file's name in dir
	// files[0] is the mapping of the inode at name (nil when there is
	// none); the others are inodes that were deleted or replaced while
	// mapped, kept up to date for the readers that still map them.
	files   []*fileCopy
	prior   uint64
	valid   bool
	last    Update
	scratch [PageSize]byte // Check's copy of the file
}

// fileCopy is one mapping of a page file.
type fileCopy struct {
	f        *os.File
	v        view
	dev, ino uint64
	seq      uint64 // the sequence of the write section in progress
	// bad: a store or load faulted — the file was truncated under the
	// mapping. The copy is not written again until repaired.
	bad bool
}

// maxOrphans bounds the replaced inodes a Writer keeps writing to.
const maxOrphans = 3

// Prior returns the generation the page file held when the Writer was
// opened, and whether the file was a valid page of this ABI at all. A
// provider continues above it so that the generation never goes backwards
// across restarts.
func (w *Writer) Prior() (generation uint64, valid bool) { return w.prior, w.valid }

// Generation returns the generation last published.
func (w *Writer) Generation() uint64 { return atomic.LoadUint64(w.mv.u64(OffGeneration)) }

// Publish writes u in the ABI's bump order to the memfd and to every file
// copy, calling wipe (which must zero every wipe region) after the new
// generation is visible in both and before the wipe mark is set. The
// generation must never decrease; Publish does not check it, the provider
// does. A file copy that faults is skipped; Check reports it.
func (w *Writer) Publish(u Update, wipe func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.publishLocked(u, wipe)
}

func (w *Writer) publishLocked(u Update, wipe func()) {
	seq := w.mv.begin()
	w.eachFile(func(fc *fileCopy) { fc.seq = fc.v.begin() })
	w.mv.storeGeneration(u.Generation)
	w.eachFile(func(fc *fileCopy) { fc.v.storeGeneration(u.Generation) })
	if wipe != nil {
		wipe()
	}
	w.mv.storeFields(u)
	w.eachFile(func(fc *fileCopy) { fc.v.storeFields(u) })
	w.mv.end(seq, u.Generation)
	w.eachFile(func(fc *fileCopy) { fc.v.end(fc.seq, u.Generation) })
	w.last = u
}

// eachFile runs step on every file copy that has not faulted, marking the
// ones that fault now.
func (w *Writer) eachFile(step func(*fileCopy)) {
	for _, fc := range w.files {
		if fc != nil && !fc.bad && !guard(func() { step(fc) }) {
			fc.bad = true
		}
	}
}

// guard runs f, which accesses a mapping of a file that someone else may
// truncate at any moment, and reports false if it faulted: the access then
// raises SIGBUS, which debug.SetPanicOnFault turns into a panic of this
// goroutine that guard recovers. Any other panic goes on.
//
// Under the race detector an atomic access to such a mapping runs in the
// detector's C code once a first probing load has succeeded; a truncation
// between the two still crashes. Normal builds have no such window.
func guard(f func()) (ok bool) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			ok = false
		}
	}()
	f()
	return true
}

// SetState rewrites the state field, under the seqlock, keeping every other
// field of the last Update. It does not wipe. A Writer that has published
// nothing yet leaves the page as it found it: it has no fields of its own
// to keep, and must never write a lower generation.
func (w *Writer) SetState(s State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last.Generation == 0 {
		return
	}
	u := w.last
	u.State = s
	w.publishLocked(u, nil)
}

// Snapshot reads the page (the memfd) under the seqlock.
func (w *Writer) Snapshot() (Snapshot, error) { return w.mv.snapshot() }

// Damage is what Check found wrong with the page file.
type Damage struct {
	// Problem says what is wrong, for a log line; empty when the file is
	// an intact copy of the page.
	Problem string
	// Seen is the highest value the damaged file showed at OffGeneration,
	// where its readers load the generation (0 when nothing could be
	// read): readers of the file may have seen it.
	Seen uint64
}

// OK reports whether the file was found intact.
func (d Damage) OK() bool { return d.Problem == "" }
