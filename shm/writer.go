package shm

import "sync/atomic"

// Writer is the provider's read-write mapping of the generation page. Only
// one Writer may exist per page file; the provider's directory lock ensures
// it. A Writer is not safe for concurrent use: the provider serialises bumps.
type Writer struct {
	v     view
	unmap func() error
	prior uint64
	valid bool
	last  Update
}

// Prior returns the generation the page held when it was opened, and whether
// the page was a valid page of this ABI at all. A provider continues above
// it so that the generation never goes backwards across restarts.
func (w *Writer) Prior() (generation uint64, valid bool) { return w.prior, w.valid }

// Generation returns the generation last published.
func (w *Writer) Generation() uint64 { return atomic.LoadUint64(w.v.u64(OffGeneration)) }

// Publish writes u to the page in the ABI's bump order, calling wipe (which
// must zero every wipe region) after the new generation is visible and
// before the wipe mark is set. The generation must never decrease; Publish
// does not check it, the provider does.
func (w *Writer) Publish(u Update, wipe func()) {
	w.v.publish(u, wipe)
	w.last = u
}

// SetState rewrites the state field, under the seqlock, keeping every other
// field of the last Update. It does not wipe. A Writer that has published
// nothing yet leaves the page as it found it: it has no fields of its own
// to keep, and must never write a lower generation.
func (w *Writer) SetState(s State) {
	if w.last.Generation == 0 {
		return
	}
	u := w.last
	u.State = s
	w.Publish(u, nil)
}

// Snapshot reads the page under the seqlock.
func (w *Writer) Snapshot() (Snapshot, error) { return w.v.snapshot() }

// Close unmaps the page and closes the file. It is idempotent.
func (w *Writer) Close() error {
	if w.unmap == nil {
		return nil
	}
	err := w.unmap()
	w.unmap = nil
	return err
}
