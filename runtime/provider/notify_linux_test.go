package provider

import (
	"net"
	"testing"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
)

// TestNotifierForgetsDroppedWatchers: the shared notifier lists every
// watcher and schedules retries for those whose event was deferred; a
// watcher that goes away leaves neither behind, and the others still get
// their events.
func TestNotifierForgetsDroppedWatchers(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	var silent, reading []*net.UnixConn
	for i := range 40 {
		uc := rawConn(t, dir)
		if _, err := uc.Write(wire.Encode(wire.Watch, 1, nil)); err != nil {
			t.Fatal(err)
		}
		if m, err := readMsg(t, uc); err != nil || m.Type != wire.WatchOK {
			t.Fatalf("watch reply %+v, %v", m, err)
		}
		if i%2 == 0 {
			silent = append(silent, uc)
		} else {
			reading = append(reading, uc)
		}
	}
	counts := func() (watchers, retries int) {
		n := tp.events
		n.mu.Lock()
		defer n.mu.Unlock()
		return len(n.watchers), len(n.retries)
	}
	// The first bump's event goes to everyone; the silent ones do not read
	// it, so the second bump's is deferred for them and retried.
	first, _ := tp.Bump(shm.ReasonForced, 0)
	for _, uc := range reading {
		if m, err := readMsg(t, uc); err != nil || m.Type != wire.Generation || m.U64() != first {
			t.Fatalf("event %+v, %v; want generation %d", m, err, first)
		}
	}
	eventually.True(t, "the silent watchers' first events", func() bool {
		for _, uc := range silent {
			if unread(t, uc) != eventSize {
				return false
			}
		}
		return true
	})
	second, _ := tp.Bump(shm.ReasonForced, 0)
	for _, uc := range reading {
		if m, err := readMsg(t, uc); err != nil || m.Type != wire.Generation || m.U64() != second {
			t.Fatalf("event %+v, %v; want generation %d", m, err, second)
		}
	}
	eventually.True(t, "retries for the silent watchers", func() bool {
		w, r := counts()
		return w == 40 && r == len(silent)
	})
	for _, uc := range silent {
		uc.Close()
	}
	eventually.True(t, "the notifier to forget the closed watchers", func() bool {
		w, r := counts()
		return w == len(reading) && r == 0
	})
	third, _ := tp.Bump(shm.ReasonForced, 0)
	for _, uc := range reading {
		if m, err := readMsg(t, uc); err != nil || m.Type != wire.Generation || m.U64() != third {
			t.Fatalf("event %+v, %v; want generation %d", m, err, third)
		}
	}
	for _, uc := range reading {
		uc.Close()
	}
	eventually.True(t, "the notifier to forget every watcher", func() bool {
		w, r := counts()
		return w == 0 && r == 0
	})
}
