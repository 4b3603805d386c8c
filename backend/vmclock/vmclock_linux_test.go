package vmclock_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/internal/testvmclock"
)

// The tests stand in for the hypervisor with a regular file holding a
// VMClock page (see internal/testvmclock).

func TestOpen(t *testing.T) {
	for _, flags := range []uint64{vmclock.FlagCounter, vmclock.FlagCounter | vmclock.FlagNotify} {
		t.Run(fmt.Sprintf("flags=%#x", flags), func(t *testing.T) {
			path := testvmclock.WritePage(t, flags, 42)
			c, err := vmclock.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			gen, ok, err := c.Counter()
			if err != nil || !ok || gen != 42 {
				t.Fatalf("Counter() = %d, %v, %v; want 42, true, nil", gen, ok, err)
			}
			if got, want := c.Notifies(), flags&vmclock.FlagNotify != 0; got != want {
				t.Errorf("Notifies() = %v, want %v", got, want)
			}
			if !c.HasCounter() || c.Size() != testvmclock.PageSize {
				t.Errorf("HasCounter() = %v, Size() = %d", c.HasCounter(), c.Size())
			}
			if c.File() == nil || c.Path() != path {
				t.Errorf("File() = %v, Path() = %q", c.File(), c.Path())
			}
			if w := c.CounterWord(); w == nil || atomic.LoadUint64(w) != 42 {
				t.Errorf("CounterWord() = %v", w)
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

func TestMapFile(t *testing.T) {
	f, err := os.Open(testvmclock.WritePage(t, vmclock.FlagCounter, 7))
	if err != nil {
		t.Fatal(err)
	}
	c, err := vmclock.MapFile(f)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer c.Close()
	if gen, ok, err := c.Counter(); err != nil || !ok || gen != 7 {
		t.Fatalf("Counter() = %d, %v, %v; want 7, true, nil", gen, ok, err)
	}
	if c.File() != f || c.Path() != f.Name() {
		t.Fatalf("File() = %v, Path() = %q: not the file mapped", c.File(), c.Path())
	}
}

func TestOpenErrors(t *testing.T) {
	withSize := func(size uint32) []byte {
		b := vmclock.Page(testvmclock.PageSize, vmclock.FlagCounter, 1)
		binary.LittleEndian.PutUint32(b[vmclock.OffSize:], size)
		return b
	}
	badMagic := vmclock.Page(testvmclock.PageSize, vmclock.FlagCounter, 1)
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
			is:      vmclock.ErrNoDevice,
			wantErr: "the kernel needs the ptp_vmclock driver",
		},
		{
			name: "short file",
			path: func(t *testing.T) string {
				return testvmclock.WriteFile(t, vmclock.Page(testvmclock.PageSize, vmclock.FlagCounter, 1)[:vmclock.MinSize-1])
			},
			wantErr: "too short: 111 bytes",
		},
		{
			name:    "empty file",
			path:    func(t *testing.T) string { return testvmclock.WriteFile(t, nil) },
			wantErr: "too short: 0 bytes",
		},
		{
			name:    "truncated copy",
			path:    func(t *testing.T) string { return testvmclock.WriteFile(t, withSize(testvmclock.PageSize)[:512]) },
			wantErr: "declares 4096 bytes but the file holds only 512",
		},
		{
			name:    "bad magic",
			path:    func(t *testing.T) string { return testvmclock.WriteFile(t, badMagic) },
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
			c, err := vmclock.Open(tt.path(t))
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
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

func TestCounterAbsent(t *testing.T) {
	c, err := vmclock.Open(testvmclock.WritePage(t, vmclock.FlagNotify, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if gen, ok, err := c.Counter(); err != nil || ok {
		t.Fatalf("Counter() = %d, %v, %v; want ok=false without error", gen, ok, err)
	}
	if c.HasCounter() || c.CounterWord() != nil {
		t.Fatalf("HasCounter() = %v, CounterWord() = %v; want false, nil", c.HasCounter(), c.CounterWord())
	}
}

func TestStuckUpdate(t *testing.T) {
	path := testvmclock.WritePage(t, vmclock.FlagCounter, 1)
	c, err := vmclock.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hv := testvmclock.New(t, path)
	hv.Store32(vmclock.OffSeq, 1) // starts an update and never finishes it

	start := time.Now()
	_, _, err = c.Counter()
	if err == nil || !strings.Contains(err.Error(), "stuck updating") {
		t.Fatalf("Counter() error = %v, want the stuck-update error", err)
	}
	if d := time.Since(start); d < vmclock.SeqWait {
		t.Fatalf("Counter() gave up after %v, before the %v bound", d, vmclock.SeqWait)
	}
}

// TestTornReads runs a hypervisor that rewrites the counter at full speed,
// one 32-bit half at a time, against readers that must only ever see values
// whose halves match, in increasing order.
func TestTornReads(t *testing.T) {
	path := testvmclock.WritePage(t, vmclock.FlagCounter, 0)
	hv := testvmclock.New(t, path)
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
			hv.Update(func() {
				hv.Store32(vmclock.OffCounter, i)
				hv.Store32(vmclock.OffCounter+4, i)
			})
			// Back-to-back updates would starve the readers (most visibly
			// under the race detector, which serialises atomic accesses to
			// one address): leave a gap of some reads' length, without
			// yielding the CPU.
			for range 256 {
				hv.Load32(vmclock.OffSeq)
			}
		}
	}()

	errs := make(chan error, readers)
	for range readers {
		go func() {
			errs <- func() error {
				c, err := vmclock.Open(path)
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

func TestIntegrationVMClock(t *testing.T) {
	c, err := vmclock.Open(vmclock.DefaultPath)
	if errors.Is(err, vmclock.ErrNoDevice) {
		t.Skipf("no VMClock device on this machine: needs a hypervisor that offers VMClock and the ptp_vmclock driver (Linux 6.13+, CONFIG_PTP_1588_CLOCK_VMCLOCK): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gen, ok, err := c.Counter()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vm_generation_counter = %d, present %v, notifies %v", gen, ok, c.Notifies())
}
