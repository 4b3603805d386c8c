package backend

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/acpi"
	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/internal/testdevice"
)

func TestSelectRejects(t *testing.T) {
	if _, err := Select("floppy", Options{}); err == nil || !strings.Contains(err.Error(), "auto, acpi, vmclock or manual") {
		t.Fatalf("unknown backend: %v", err)
	}
	_, err := Select("vmclock", Options{VMClockPath: filepath.Join(t.TempDir(), "absent")})
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("vmclock with no device: %v, want ErrNoDevice", err)
	}
	page := filepath.Join(t.TempDir(), "vmclock0")
	os.WriteFile(page, vmclock.Page(4096, 0, 1), 0o444) // no counter flag
	if _, err := Select("vmclock", Options{VMClockPath: page}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("vmclock without a counter: %v, want ErrNotSupported", err)
	}
}

func TestSelectAutoPrefersVMClock(t *testing.T) {
	page := filepath.Join(t.TempDir(), "vmclock0")
	if err := os.WriteFile(page, vmclock.Page(4096, vmclock.FlagCounter, 7), 0o444); err != nil {
		t.Fatal(err)
	}
	s, err := Select("auto", Options{VMClockPath: page})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name() != "vmclock" || !strings.Contains(s.Info().Why, "VMClock") {
		t.Fatalf("auto picked %s (%v)", s.Name(), s.Info().Why)
	}
	if DeviceFile(s) == nil {
		t.Fatal("the selected VMClock source offers no device file")
	}
	if DeviceFile(Manual()) != nil {
		t.Fatal("the manual source offers a device file")
	}
}

// TestIntegrationSelectAuto: on a machine with a bound VMGENID device and
// no VMClock driver (this project's Firecracker test machine), auto picks
// acpi, and says why.
func TestIntegrationSelectAuto(t *testing.T) {
	if _, err := acpi.Discover(); err != nil {
		t.Skipf("needs a VMGENID device with a bound driver: %v", err)
	}
	if _, err := os.Stat(vmclock.DefaultPath); err == nil {
		t.Skip("this machine has a VMClock device, which auto prefers")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to read the kernel log: run the tests as root")
	}
	s, err := Select("auto", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name() != "acpi" {
		t.Fatalf("auto picked %s: %v", s.Name(), s.Info().Why)
	}
	if why := s.Info().Why; !strings.Contains(why, "no "+vmclock.DefaultPath) || !strings.Contains(why, "VMGENID") {
		t.Fatalf("why = %q", why)
	}
}

// collect drains events until want have arrived (or 5 s passed), then
// waits settle longer for any that must not come.
func collect(events chan Event, want int) []Event {
	var got []Event
	deadline := time.After(5 * time.Second)
	for len(got) < want {
		select {
		case e := <-events:
			got = append(got, e)
		case <-deadline:
			return got
		}
	}
	for end := time.After(settle); ; {
		select {
		case e := <-events:
			got = append(got, e)
		case <-end:
			return got
		}
	}
}

// settle gives the kernel time to deliver what was written: the followers
// read their queues within microseconds; this bounds the wait for events
// that must not come.
const settle = 200 * time.Millisecond

func TestIntegrationACPISource(t *testing.T) {
	testdevice.Require(t)
	for _, tc := range []struct {
		name      string
		synthetic bool
		want      int
	}{
		{"accept synthetic", true, 5},
		{"kernel signals only", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewACPISource(ACPIOptions{AcceptSynthetic: tc.synthetic})
			if err != nil {
				t.Fatal(err)
			}
			events, _, _ := runSource(t, s)
			for range 5 {
				testdevice.Synthesize(t)
			}
			// A user-written copy of the fork record never counts.
			if err := os.WriteFile("/dev/kmsg", []byte("<6>random: crng reseeded due to virtual machine fork\n"), 0); err != nil {
				t.Fatal(err)
			}
			got := collect(events, tc.want)
			if len(got) != tc.want {
				t.Fatalf("%d events, want %d: %+v", len(got), tc.want, got)
			}
			for _, e := range got {
				if e.Kind != KindACPI || e.Signal != acpi.SignalUevent || e.Lost {
					t.Fatalf("event %+v", e)
				}
			}
		})
	}
}

// TestIntegrationACPISourceKmsg drives the kernel-log path with a
// facility-0 record root can make the kernel print on demand.
func TestIntegrationACPISourceKmsg(t *testing.T) {
	testdevice.Require(t)
	s, err := NewACPISource(ACPIOptions{KmsgMatch: testdevice.MalformedMessage})
	if err != nil {
		t.Fatal(err)
	}
	events, _, _ := runSource(t, s)
	for range 3 {
		testdevice.LogMalformed(t)
	}
	if got := collect(events, 3); len(got) != 3 || got[0].Signal != acpi.SignalKmsg {
		t.Fatalf("events %+v, want 3 from the kernel log", got)
	}
}
