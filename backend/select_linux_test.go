package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapsafe/snapsafe/acpi"
	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"golang.org/x/sys/unix"
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
		testdevice.Skip(t, "needs a VMGENID device with a bound driver: %v", err)
	}
	if _, err := os.Stat(vmclock.DefaultPath); err == nil {
		t.Skip("this machine has a VMClock device, which auto prefers")
	}
	testdevice.RequireRoot(t, "to read the kernel log")
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

// TestIntegrationACPISource drives the source with synthetic uevents, and
// checks that they count only with AcceptSynthetic and that a user-written
// copy of the fork record never counts. Fences show that nothing counted
// that should not have: each path is read in order, so an event the fence
// causes comes after every event what was sent before it causes.
func TestIntegrationACPISource(t *testing.T) {
	testdevice.Require(t)
	copyFork := func(t *testing.T) {
		// Root's copy at the kernel's own level: facility 1 all the same.
		if err := os.WriteFile("/dev/kmsg", []byte("<5>random: crng reseeded due to virtual machine fork\n"), 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("accept synthetic", func(t *testing.T) {
		s, err := NewACPISource(ACPIOptions{AcceptSynthetic: true})
		if err != nil {
			t.Fatal(err)
		}
		events, _, _ := runSource(t, s)
		var ids []string
		for range 5 {
			ids = append(ids, testdevice.Synthesize(t))
		}
		ids = append(ids, testdevice.Synthesize(t)) // the fence
		for i, id := range ids {
			e := waitEvent(t, events)
			if e.Kind != KindACPI || e.Signal != acpi.SignalUevent || e.Lost || !strings.Contains(e.Detail, id) {
				t.Fatalf("event %d = %+v, want the synthetic uevent %s", i, e, id)
			}
		}
		if info := s.Info(); info.IgnoredSynthetic != 0 || !info.DetectsRestores {
			t.Fatalf("info %+v: want no ignored synthetic uevents, and restores detected", info)
		}
	})
	t.Run("kernel signals only", func(t *testing.T) {
		s, err := NewACPISource(ACPIOptions{KmsgMatch: testdevice.MalformedMessage})
		if err != nil {
			t.Fatal(err)
		}
		events, _, _ := runSource(t, s)
		for range 5 {
			testdevice.Synthesize(t)
		}
		copyFork(t)
		eventually.True(t, "5 ignored synthetic uevents and 1 ignored imitation", func() bool {
			info := s.Info()
			return info.IgnoredSynthetic == 5 && info.IgnoredImitations == 1
		})
		testdevice.LogMalformed(t) // the fence, on the kernel-log path
		if e := waitEvent(t, events); e.Signal != acpi.SignalKmsg || e.Lost || !strings.Contains(e.Detail, "synth uevent") {
			t.Fatalf("first event %+v, want the kernel-log fence", e)
		}
	})
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
	for i := range 3 {
		testdevice.LogMalformed(t)
		if e := waitEvent(t, events); e.Signal != acpi.SignalKmsg || e.Lost {
			t.Fatalf("event %d = %+v, want one from the kernel log", i, e)
		}
	}
}

// TestACPIKmsgMatchRefused: a test match that is not one whole kernel
// record ("<LEVEL>TEXT", facility 0) is refused, not taken as a substring.
func TestACPIKmsgMatchRefused(t *testing.T) {
	for _, m := range []string{"incorrect uevent action arguments", "<13>text", "<5>"} {
		if s, err := NewACPISource(ACPIOptions{KmsgMatch: m}); !errors.Is(err, acpi.ErrMalformed) {
			if s != nil {
				s.Close()
			}
			t.Errorf("NewACPISource with KmsgMatch %q: %v, want acpi.ErrMalformed", m, err)
		}
	}
}

// TestACPIBlindness: a source that cannot read the kernel log, on a kernel
// that sends no VMGENID uevent, sees no restore and says why.
func TestACPIBlindness(t *testing.T) {
	u, err := acpi.NewUeventFollower(acpi.UeventOptions{})
	if err != nil {
		t.Skipf("needs a kernel uevent socket: %v", err)
	}
	defer u.Close()
	eperm := fmt.Errorf("opening /dev/kmsg: %w", unix.EPERM)
	for _, tc := range []struct {
		name    string
		kmsg    bool // the kernel log is followed
		kernel  string
		signals []string
		blind   string
	}{
		{"the kernel log", true, "6.18.44", []string{"kmsg"}, ""},
		{"6.18 without the kernel log", false, "6.18.44", []string{"kmsg"},
			"/dev/kmsg is not readable (run as root or with CAP_SYSLOG) and this kernel (6.18.44) sends no VMGENID uevent"},
		{"6.8 without the kernel log", false, "6.8.0", []string{"kmsg", "uevent"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &ACPISource{uevent: u, info: acpi.Info{Kernel: tc.kernel, Signals: tc.signals}, co: newCoalescer(coalesceWindow)}
			if tc.kmsg {
				s.kmsg = &acpi.KmsgFollower{} // stands in for an open kernel log
			} else {
				s.kmsgErr = eperm
			}
			if got := s.blindness(); got != tc.blind {
				t.Errorf("blindness() = %q, want %q", got, tc.blind)
			}
			sees, why := tc.blind == "", ""
			if !sees {
				why = "restores will not be detected: " + tc.blind
			}
			if info := s.Info(); s.SeesRestores() != sees || info.DetectsRestores != sees || info.Why != why {
				t.Errorf("SeesRestores() = %v, info %+v; want %v and why %q", s.SeesRestores(), info, sees, why)
			}
		})
	}
}
