//go:build linux

package backend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	abi "github.com/snapsafe/snapsafe/internal/vmclockabi"
	"github.com/snapsafe/snapsafe/runtime/api"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests stand in for the hypervisor with a regular file holding a
// VMClock page: OpenVMClock maps it read-only like the device, and the test
// updates it through a writable shared mapping of the same file, under the
// seqlock, as a hypervisor updates guest memory.

const (
	testPageSize = 4096
	// waitLimit bounds every wait for a condition; it is only reached when
	// a test fails.
	waitLimit = 10 * time.Second
)

// testPage returns a version 1 VMClock page as a hypervisor initialises it.
func testPage(flags, counter uint64) []byte { return abi.Page(testPageSize, flags, counter) }

// writePage writes b to a fresh file and returns its path.
func writePage(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vmclock0")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// aligned copies b into 8-byte aligned memory, as a mapping would be.
func aligned(b []byte) vmclockLayout {
	words := make([]uint64, (len(b)+7)/8)
	l := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), len(b))
	copy(l, b)
	return l
}

// store32 and store64 are the hypervisor's side of load32 and load64.
func (l vmclockLayout) store32(off int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&l[off])), binary.NativeEndian.Uint32(b[:]))
}

func (l vmclockLayout) store64(off int, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&l[off])), binary.NativeEndian.Uint64(b[:]))
}

// hypervisor writes a page file through a writable shared mapping. Only one
// goroutine may use it.
type hypervisor struct{ l vmclockLayout }

func newHypervisor(t *testing.T, path string) *hypervisor {
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
	return &hypervisor{l: mem}
}

// update runs write inside a seqlock write section.
func (h *hypervisor) update(write func(l vmclockLayout)) {
	seq := h.l.load32(abi.OffSeq)
	h.l.store32(abi.OffSeq, seq+1)
	write(h.l)
	h.l.store32(abi.OffSeq, seq+2)
}

func (h *hypervisor) setCounter(v uint64) {
	h.update(func(l vmclockLayout) { l.store64(abi.OffCounter, v) })
}

func TestVMClockHeader(t *testing.T) {
	set32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
	}
	tests := []struct {
		name    string
		edit    func([]byte)
		len     int
		wantErr string
	}{
		{name: "page", len: testPageSize},
		{name: "just the fields we read", edit: set32(abi.OffSize, abi.MinSize), len: abi.MinSize},
		{name: "bad magic", edit: set32(abi.OffMagic, 0x4b4c4357), len: testPageSize, wantErr: "bad magic 0x4b4c4357"},
		{name: "version 2", edit: func(b []byte) { binary.LittleEndian.PutUint16(b[abi.OffVersion:], 2) }, len: testPageSize, wantErr: "unsupported VMClock version 2"},
		{name: "declared size too small", edit: set32(abi.OffSize, abi.OffCounter), len: testPageSize, wantErr: "declares 104 bytes"},
		{name: "buffer too short", len: abi.MinSize - 1, wantErr: "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testPage(abi.FlagCounter, 1)
			if tt.edit != nil {
				tt.edit(b)
			}
			h, err := aligned(b[:tt.len]).header()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("header() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := vmclockHeader{size: binary.LittleEndian.Uint32(b[abi.OffSize:]), version: 1}
			if h != want {
				t.Fatalf("header() = %+v, want %+v", h, want)
			}
		})
	}
}

func TestVMClockTryRead(t *testing.T) {
	l := aligned(testPage(abi.FlagCounter|abi.FlagNotify, 0x0123456789abcdef))
	s, ok := l.tryRead()
	want := vmclockSnapshot{magic: abi.Magic, flags: abi.FlagCounter | abi.FlagNotify, counter: 0x0123456789abcdef}
	if !ok || s != want {
		t.Fatalf("tryRead() = %+v, %v; want %+v, true", s, ok, want)
	}
	l.store32(abi.OffSeq, 7) // the hypervisor is mid-update
	if _, ok := l.tryRead(); ok {
		t.Fatal("tryRead() succeeded while seq_count is odd")
	}
}

func TestOpenVMClock(t *testing.T) {
	for _, flags := range []uint64{abi.FlagCounter, abi.FlagCounter | abi.FlagNotify} {
		t.Run(fmt.Sprintf("flags=%#x", flags), func(t *testing.T) {
			path := writePage(t, testPage(flags, 42))
			c, err := OpenVMClock(path)
			if err != nil {
				t.Fatal(err)
			}
			gen, ok, err := c.Counter()
			if err != nil || !ok || gen != 42 {
				t.Fatalf("Counter() = %d, %v, %v; want 42, true, nil", gen, ok, err)
			}
			if got, want := c.Notifies(), flags&abi.FlagNotify != 0; got != want {
				t.Errorf("Notifies() = %v, want %v", got, want)
			}
			if c.File() == nil || c.Path() != path {
				t.Errorf("File() = %v, Path() = %q", c.File(), c.Path())
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatalf("second Close() = %v, want nil", err)
			}
			if _, _, err := c.Counter(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("Counter() after Close = %v, want os.ErrClosed", err)
			}
			if c.File() != nil {
				t.Fatal("File() after Close is not nil")
			}
		})
	}
}

func TestOpenVMClockErrors(t *testing.T) {
	withSize := func(size uint32) []byte {
		b := testPage(abi.FlagCounter, 1)
		binary.LittleEndian.PutUint32(b[abi.OffSize:], size)
		return b
	}
	badMagic := testPage(abi.FlagCounter, 1)
	copy(badMagic, "NOPE")
	tests := []struct {
		name    string
		path    func(t *testing.T) string
		is      error
		wantErr string
	}{
		{
			name:    "absent",
			path:    func(t *testing.T) string { return filepath.Join(t.TempDir(), "vmclock0") },
			is:      ErrNoDevice,
			wantErr: "the kernel needs the ptp_vmclock driver",
		},
		{
			name:    "short file",
			path:    func(t *testing.T) string { return writePage(t, testPage(abi.FlagCounter, 1)[:abi.MinSize-1]) },
			wantErr: "too short: 111 bytes",
		},
		{
			name:    "empty file",
			path:    func(t *testing.T) string { return writePage(t, nil) },
			wantErr: "too short: 0 bytes",
		},
		{
			name:    "truncated copy",
			path:    func(t *testing.T) string { return writePage(t, withSize(testPageSize)[:512]) },
			wantErr: "declares 4096 bytes but the file holds only 512",
		},
		{
			name:    "bad magic",
			path:    func(t *testing.T) string { return writePage(t, badMagic) },
			wantErr: "bad magic 0x45504f4e",
		},
		{
			name:    "directory",
			path:    func(t *testing.T) string { return t.TempDir() },
			wantErr: "is not a VMClock device",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := OpenVMClock(tt.path(t))
			if err == nil {
				c.Close()
				t.Fatal("OpenVMClock succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestVMClockCounterAbsent(t *testing.T) {
	path := writePage(t, testPage(abi.FlagNotify, 9))
	c, err := OpenVMClock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if gen, ok, err := c.Counter(); err != nil || ok {
		t.Fatalf("Counter() = %d, %v, %v; want ok=false without error", gen, ok, err)
	}

	s, err := NewVMClockSource(path, VMClockOptions{})
	if err == nil {
		s.Close()
		t.Fatal("NewVMClockSource accepted a device without vm_generation_counter")
	}
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "flag bit 8 clear") {
		t.Fatalf("NewVMClockSource error = %v, want ErrNotSupported naming flag bit 8", err)
	}
}

func TestVMClockStuckUpdate(t *testing.T) {
	path := writePage(t, testPage(abi.FlagCounter, 1))
	c, err := OpenVMClock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hv := newHypervisor(t, path)
	hv.l.store32(abi.OffSeq, 1) // starts an update and never finishes it

	start := time.Now()
	_, _, err = c.Counter()
	if err == nil || !strings.Contains(err.Error(), "stuck updating") {
		t.Fatalf("Counter() error = %v, want the stuck-update error", err)
	}
	if d := time.Since(start); d < vmclockSeqWait {
		t.Fatalf("Counter() gave up after %v, before the %v bound", d, vmclockSeqWait)
	}
}

// TestVMClockTornReads runs a hypervisor that rewrites the counter at full
// speed, one 32-bit half at a time, against readers that must only ever see
// values whose halves match, in increasing order.
func TestVMClockTornReads(t *testing.T) {
	path := writePage(t, testPage(abi.FlagCounter, 0))
	hv := newHypervisor(t, path)
	const (
		readers = 2
		// Each reader stops after this many distinct values, or after
		// readTime; it must have seen at least minDistinct to show that it
		// really raced with the writer.
		wantDistinct = 1000
		minDistinct  = 10
		readTime     = 2 * time.Second
	)

	var stop atomic.Bool
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		for i := uint32(1); !stop.Load(); i++ {
			hv.update(func(l vmclockLayout) {
				l.store32(abi.OffCounter, i)
				l.store32(abi.OffCounter+4, i)
			})
			// Back-to-back updates would starve the readers (most visibly
			// under the race detector, which serialises atomic accesses to
			// one address): leave a gap of some reads' length, without
			// yielding the CPU.
			for range 256 {
				hv.l.load32(abi.OffSeq)
			}
		}
	}()

	errs := make(chan error, readers)
	for range readers {
		go func() {
			errs <- func() error {
				c, err := OpenVMClock(path)
				if err != nil {
					return err
				}
				defer c.Close()
				var last uint64
				distinct := 0
				for end := time.Now().Add(readTime); distinct < wantDistinct && time.Now().Before(end); {
					gen, ok, err := c.Counter()
					if err != nil || !ok {
						return fmt.Errorf("Counter() = %#x, %v, %v", gen, ok, err)
					}
					if uint32(gen) != uint32(gen>>32) {
						return fmt.Errorf("torn read %#016x", gen)
					}
					if gen < last {
						return fmt.Errorf("counter went back from %#x to %#x", last, gen)
					}
					if gen != last {
						distinct++
						last = gen
					}
				}
				if distinct < minDistinct {
					return fmt.Errorf("saw only %d distinct values in %v: the reader did not race with the writer", distinct, readTime)
				}
				return nil
			}()
		}()
	}
	for range readers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	stop.Store(true)
	writer.Wait()
}

// runSource runs s in the background. Its events arrive on the returned
// channel; stop cancels Run and returns its result.
func runSource(t *testing.T, s Source) (events chan Event, done chan error, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events = make(chan Event, 100)
	done = make(chan error, 1)
	go func() { done <- s.Run(ctx, func(e Event) { events <- e }) }()
	stop = func() error {
		cancel()
		return waitDone(t, done)
	}
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return events, done, stop
}

func waitEvent(t *testing.T, events chan Event) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(waitLimit):
		t.Fatalf("no event within %v", waitLimit)
		return Event{}
	}
}

func waitDone(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		done <- err // for the cleanup
		return err
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %v", waitLimit)
		return nil
	}
}

func checkEvent(t *testing.T, e Event, from, to uint64) {
	t.Helper()
	want := fmt.Sprintf("vm_generation_counter %d -> %d", from, to)
	if e.Kind != KindVMClock || e.Signal != "vmclock" || e.Detail != want || e.Lost || e.Time.IsZero() {
		t.Fatalf("event = %+v, want KindVMClock/vmclock %q with a time", e, want)
	}
}

func TestVMClockSourcePolling(t *testing.T) {
	path := writePage(t, testPage(abi.FlagCounter, 5))
	hv := newHypervisor(t, path)
	s, err := NewVMClockSource(path, VMClockOptions{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	events, _, stop := runSource(t, s)

	const n = 20
	for k := uint64(1); k <= n; k++ {
		hv.setCounter(5 + k)
		checkEvent(t, waitEvent(t, events), 4+k, 5+k)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if len(events) != 0 {
		t.Fatalf("%d events beyond the %d increments, first %+v", len(events), n, <-events)
	}
}

// TestVMClockSourceJumps checks that a change made before Run is reported,
// that a jump by several is one event, and that a decrease is reported.
func TestVMClockSourceJumps(t *testing.T) {
	path := writePage(t, testPage(abi.FlagCounter, 5))
	hv := newHypervisor(t, path)
	s, err := NewVMClockSource(path, VMClockOptions{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	hv.setCounter(8)
	events, _, stop := runSource(t, s)
	checkEvent(t, waitEvent(t, events), 5, 8)
	hv.setCounter(2)
	checkEvent(t, waitEvent(t, events), 8, 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(events) != 0 {
		t.Fatalf("unexpected event %+v", <-events)
	}
}

func TestVMClockSourceRuntimeFailures(t *testing.T) {
	tests := []struct {
		name    string
		change  func(l vmclockLayout)
		wantErr string
	}{
		{"counter flag cleared", func(l vmclockLayout) { l.store64(abi.OffFlags, 0) }, "stopped maintaining vm_generation_counter"},
		{"magic changed", func(l vmclockLayout) { l.store32(abi.OffMagic, 0) }, "magic changed to 0x000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writePage(t, testPage(abi.FlagCounter, 5))
			hv := newHypervisor(t, path)
			s, err := NewVMClockSource(path, VMClockOptions{Interval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			events, done, _ := runSource(t, s)
			hv.update(tt.change)
			err = waitDone(t, done)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.wantErr)
			}
			if len(events) != 0 {
				t.Fatalf("unexpected event %+v", <-events)
			}
		})
	}
}

func TestVMClockSourceInfo(t *testing.T) {
	path := writePage(t, testPage(abi.FlagCounter, 77))
	s, err := NewVMClockSource(path, VMClockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name() != "vmclock" {
		t.Errorf("Name() = %q", s.Name())
	}
	counter := uint64(77)
	want := api.SourceInfo{
		Name:           "vmclock",
		Path:           path,
		Magic:          "0x4b4c4356",
		Version:        1,
		Size:           testPageSize,
		CounterPresent: true,
		Notifications:  false,
		Mode:           "poll",
		PollInterval:   "10ms",
		Counter:        &counter,
	}
	if info := s.Info(); !reflect.DeepEqual(info, want) {
		t.Errorf("Info() = %+v, want %+v", info, want)
	}
	if _, err := NewVMClockSource(path, VMClockOptions{Interval: -time.Second}); err == nil {
		t.Error("NewVMClockSource accepted a negative interval")
	}
}

// TestVMClockSourceNotify drives the notification path. A regular file
// cannot stand in for the device here (it always polls readable), so the
// test swaps the source's notifier for a pipe, which behaves like the
// driver: readable until the reader acknowledges, POLLHUP when no more
// notifications can come.
func TestVMClockSourceNotify(t *testing.T) {
	path := writePage(t, testPage(abi.FlagCounter|abi.FlagNotify, 5))
	hv := newHypervisor(t, path)
	s, err := NewVMClockSource(path, VMClockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.notify == nil || s.Info().Mode != "notify" {
		t.Fatalf("source with the notification flag does not wait for notifications: %v", s.Info())
	}
	if err := s.notify.ack(); err != nil {
		t.Fatalf("acknowledging on the page file: %v", err)
	}
	s.notify.close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s.notify = &vmclockNotifier{f: r, ack: func() error {
		_, err := r.Read(make([]byte, 1))
		return err
	}}
	notify := func() {
		if _, err := w.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
	}

	events, done, _ := runSource(t, s)
	notify() // a wake-up without a change reports nothing
	const n = 10
	for k := uint64(1); k <= n; k++ {
		hv.setCounter(5 + k)
		notify()
		checkEvent(t, waitEvent(t, events), 4+k, 5+k)
	}
	// Every notification is acknowledged: without that the real device
	// would stay readable and Run would spin.
	waitPipeDrained(t, r)
	w.Close() // the notifications stop: POLLHUP
	err = waitDone(t, done)
	if err == nil || !strings.Contains(err.Error(), "notifications stopped") {
		t.Fatalf("Run after POLLHUP = %v, want the notifications-stopped error", err)
	}
	if len(events) != 0 {
		t.Fatalf("%d events beyond the %d changes, first %+v", len(events), n, <-events)
	}
}

// waitPipeDrained waits until r has no unread bytes (TIOCINQ is FIONREAD).
func waitPipeDrained(t *testing.T, r *os.File) {
	t.Helper()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var unread int
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		var ierr error
		if err := rc.Control(func(fd uintptr) { unread, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
			t.Fatal(err)
		}
		if ierr != nil {
			t.Fatal(ierr)
		}
		if unread == 0 {
			return
		}
	}
	t.Fatalf("%d notification bytes still unacknowledged after %v", unread, waitLimit)
}

func TestVMClockSourceNotifyCancel(t *testing.T) {
	path := writePage(t, testPage(abi.FlagCounter|abi.FlagNotify, 5))
	s, err := NewVMClockSource(path, VMClockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.notify.close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s.notify = &vmclockNotifier{f: r, ack: func() error { return errors.New("no notification was sent") }}
	_, _, stop := runSource(t, s)
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

func TestIntegrationVMClock(t *testing.T) {
	c, err := OpenVMClock(DefaultVMClockPath)
	if errors.Is(err, ErrNoDevice) {
		t.Skipf("no VMClock device on this machine: needs a hypervisor that offers VMClock and the ptp_vmclock driver (Linux 6.13+, CONFIG_PTP_1588_CLOCK_VMCLOCK): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	gen, ok, err := c.Counter()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vm_generation_counter = %d, present %v", gen, ok)

	s, err := NewVMClockSource(DefaultVMClockPath, VMClockOptions{})
	if !ok {
		if !errors.Is(err, ErrNotSupported) {
			t.Fatalf("NewVMClockSource on a device without the counter = %v, want ErrNotSupported", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Info() = %v", s.Info())
	events, _, stop := runSource(t, s)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for len(events) > 0 {
		t.Logf("event during the run: %+v", <-events)
	}
}
