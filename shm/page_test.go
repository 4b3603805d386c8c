package shm

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func newView() view {
	v := view{mem: make([]byte, PageSize)}
	v.initHeader()
	return v
}

// TestGoldenLayout pins the byte layout of a published page: any change to
// an offset, a width or the endianness breaks this test and is an ABI change.
func TestGoldenLayout(t *testing.T) {
	v := newView()
	v.publish(Update{
		Generation: 0x0102030405060708,
		Reason:     ReasonForced,
		Backend:    BackendACPI,
		State:      StateRunning,
		PID:        0x11223344,
		Epoch:      [16]byte{0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef},
		Time:       time.Unix(0, 0x1112131415161718),
		Mono:       time.Duration(0x2122232425262728),
	}, nil)

	want := map[int]string{
		0x000: "534e5346" + "0100" + "0000" + "00100000" + "00000000", // magic "SNSF", version 1, size 4096
		0x040: "0807060504030201",                                     // generation
		0x080: "0200000000000000",                                     // sequence: one write section
		0x088: "0807060504030201",                                     // wiped mark
		0x090: "e0e1e2e3e4e5e6e7e8e9eaebecedeeef",                     // epoch
		0x0a0: "1817161514131211",                                     // realtime
		0x0a8: "2827262524232221",                                     // monotonic
		0x0b0: "04000000" + "01000000" + "44332211" + "02000000",      // reason, state, pid, backend
	}
	covered := make([]bool, PageSize)
	for off, h := range want {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		if got := v.mem[off : off+len(b)]; hex.EncodeToString(got) != h {
			t.Errorf("bytes at %#x = %x, want %s", off, got, h)
		}
		for i := range b {
			covered[off+i] = true
		}
	}
	for i, c := range covered {
		if !c && v.mem[i] != 0 {
			t.Errorf("byte at %#x = %#x, want 0 (not part of the ABI)", i, v.mem[i])
		}
	}
	if err := v.check(); err != nil {
		t.Fatalf("check of a published page: %v", err)
	}
}

func TestCheckRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mess  func([]byte)
		match string
	}{
		{"magic", func(b []byte) { b[0] = 'X' }, "magic"},
		{"version", func(b []byte) { binary.LittleEndian.PutUint16(b[OffVersion:], 9) }, "ABI version 9"},
		{"size", func(b []byte) { binary.LittleEndian.PutUint32(b[OffSize:], 8192) }, "size field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newView()
			tc.mess(v.mem)
			err := v.check()
			if !errors.Is(err, ErrBadPage) || !strings.Contains(err.Error(), tc.match) {
				t.Fatalf("check = %v, want ErrBadPage mentioning %q", err, tc.match)
			}
		})
	}
	if err := (view{mem: make([]byte, 100)}).check(); !errors.Is(err, ErrBadPage) {
		t.Fatalf("short page: %v", err)
	}
}

// TestPublishOrder checks the ABI order of a bump as the wipe callback sees
// it: the sequence is odd and the new generation is already visible, while
// the wipe mark still names the old generation.
func TestPublishOrder(t *testing.T) {
	v := newView()
	v.publish(Update{Generation: 1}, nil)
	called := false
	v.publish(Update{Generation: 2, State: StateRunning}, func() {
		called = true
		p := &Page{v: v}
		if s := v.loadSeq(); s&1 != 1 {
			t.Errorf("sequence during wipe = %d, want odd", s)
		}
		if g := p.Generation(); g != 2 {
			t.Errorf("generation during wipe = %d, want 2", g)
		}
		if w := p.Wiped(); w != 1 {
			t.Errorf("wiped mark during wipe = %d, want 1", w)
		}
		if _, err := p.Snapshot(); !errors.Is(err, ErrBusy) {
			t.Errorf("snapshot inside a write section = %v, want ErrBusy", err)
		}
	})
	if !called {
		t.Fatal("wipe not called")
	}
	s, err := (&Page{v: v}).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if s.Generation != 2 || s.Wiped != 2 || s.State != StateRunning {
		t.Fatalf("snapshot after bump = %+v", s)
	}
}

// TestPublishRecoversOddSequence: a provider that died mid-write left the
// sequence odd; the next publish must leave it even.
func TestPublishRecoversOddSequence(t *testing.T) {
	v := newView()
	binary.LittleEndian.PutUint64(v.mem[OffSeq:], 7)
	v.publish(Update{Generation: 3}, nil)
	if s := v.loadSeq(); s&1 != 0 || s <= 7 {
		t.Fatalf("sequence = %d, want even and above 7", s)
	}
	if _, err := (&Page{v: v}).Snapshot(); err != nil {
		t.Fatal(err)
	}
}

func (v view) loadSeq() uint64 { return binary.LittleEndian.Uint64(v.mem[OffSeq:]) }

func TestStrings(t *testing.T) {
	for b := BackendNone; b <= BackendVMClock; b++ {
		if b == BackendNone {
			continue
		}
		got, ok := ParseBackend(b.String())
		if !ok || got != b {
			t.Errorf("ParseBackend(%q) = %v, %v", b, got, ok)
		}
	}
	if _, ok := ParseBackend("floppy"); ok {
		t.Error("ParseBackend accepted an unknown name")
	}
	if ReasonVMClock.String() != "vmclock" || StateStopped.String() != "stopped" {
		t.Error("names changed")
	}
}

func TestAwaitWipe(t *testing.T) {
	v := newView()
	v.publish(Update{Generation: 4}, nil)
	p := &Page{v: v}
	if err := p.AwaitWipe(4); err != nil {
		t.Fatalf("completed wipe: %v", err)
	}
	if err := p.AwaitWipe(3); !errors.Is(err, ErrMoved) {
		t.Fatalf("old generation: %v, want ErrMoved", err)
	}
	// A provider that died between publishing generation 5 and the wipe mark.
	v.publish(Update{Generation: 5}, func() {
		start := time.Now()
		err := p.AwaitWipe(5)
		if !errors.Is(err, ErrBusy) {
			t.Errorf("abandoned wipe: %v, want ErrBusy", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("AwaitWipe took %v to give up", d)
		}
	})
}
