package shm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzMapPage maps corrupted, truncated and overlong page files, as a
// hostile or clumsy writer of the state directory could leave them. Mapping
// must fail with ErrBadPage or give a page whose reads return, within the
// seqlock's bound, without a crash.
func FuzzMapPage(f *testing.F) {
	good := make([]byte, PageSize)
	v := view{mem: good}
	v.initHeader()
	v.publish(Update{Generation: 7, Reason: ReasonForced, State: StateRunning, Time: time.Unix(1, 0)}, nil)
	f.Add(good)
	f.Add(good[:PageSize-1])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// An odd sequence costs the reader its whole 500 ms bound (the
		// abandoned-write tests cover it); fuzz everything else.
		if len(b) > OffSeq {
			b[OffSeq] &^= 1
		}
		path := filepath.Join(t.TempDir(), "generation")
		if err := os.WriteFile(path, b, 0o444); err != nil {
			t.Fatal(err)
		}
		p, err := MapPage(path)
		if err != nil {
			if !errors.Is(err, ErrBadPage) {
				t.Fatalf("MapPage of %d bytes: %v, want ErrBadPage", len(b), err)
			}
			return
		}
		defer p.Close()
		_ = p.Generation()
		_ = p.Wiped()
		if _, err := p.Snapshot(); err != nil && !errors.Is(err, ErrBusy) {
			t.Fatalf("Snapshot: %v, want nil or ErrBusy", err)
		}
	})
}
