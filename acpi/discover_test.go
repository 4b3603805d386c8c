package acpi

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fakeSysfs builds sysfs trees shaped like the real one (see
// testdata/sysfs.txt): devices live under devices/, and bus/acpi/devices holds
// relative symlinks to them.
type fakeSysfs struct {
	t    *testing.T
	root string
}

func newFakeSysfs(t *testing.T) *fakeSysfs {
	// Resolve the temporary directory's own links so that paths compare
	// equal to what discovery resolves.
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &fakeSysfs{t: t, root: root}
}

func (s *fakeSysfs) path(rel string) string { return filepath.Join(s.root, rel) }

func (s *fakeSysfs) file(rel, content string) {
	s.t.Helper()
	p := s.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content+"\n"), 0o444); err != nil {
		s.t.Fatal(err)
	}
}

// link makes rel a symlink to target, a path relative to rel's directory.
func (s *fakeSysfs) link(rel, target string) {
	s.t.Helper()
	p := s.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(filepath.Dir(p), target), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		s.t.Fatal(err)
	}
}

// acpiDevice adds an ACPI device under LNXSYBUS:00, listed on the ACPI bus,
// with the attributes that are not empty.
func (s *fakeSysfs) acpiDevice(name, hid, modalias string) string {
	dir := "devices/LNXSYSTM:00/LNXSYBUS:00/" + name
	if err := os.MkdirAll(s.path(dir), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if hid != "" {
		s.file(dir+"/hid", hid)
	}
	if modalias != "" {
		s.file(dir+"/modalias", modalias)
	}
	s.link("bus/acpi/devices/"+name, "../../../"+dir)
	return dir
}

// firecracker adds the device as Linux 6.10+ shows it on Firecracker: a
// platform device made from it, bound to vmgenid.
func (s *fakeSysfs) firecracker() {
	dir := s.acpiDevice("VMGENCTR:00", "VMGENCTR", "acpi:VMGENCTR:VM_GEN_COUNTER:")
	s.file(dir+"/path", `\_SB_.VGEN`)
	s.link(dir+"/physical_node", "../../../platform/VMGENCTR:00")
	s.link("devices/platform/VMGENCTR:00/driver", "../../../bus/platform/drivers/vmgenid")
}

// others adds devices that are not VMGENID: the VMClock and a node without
// hid or modalias.
func (s *fakeSysfs) others() {
	s.acpiDevice("AMZNC10C:00", "AMZNC10C", "acpi:AMZNC10C:VMCLOCK:")
	s.acpiDevice("device:00", "", "")
}

func TestDiscover(t *testing.T) {
	t.Run("Firecracker, platform driver", func(t *testing.T) {
		s := newFakeSysfs(t)
		s.others()
		s.firecracker()
		devs, err := discover(s.root)
		if err != nil {
			t.Fatal(err)
		}
		want := []Device{{
			Name:         "VMGENCTR:00",
			SysfsPath:    s.path("devices/LNXSYSTM:00/LNXSYBUS:00/VMGENCTR:00"),
			HID:          "VMGENCTR",
			Modalias:     "acpi:VMGENCTR:VM_GEN_COUNTER:",
			ACPIPath:     `\_SB_.VGEN`,
			PhysicalNode: s.path("devices/platform/VMGENCTR:00"),
			Driver:       "vmgenid",
		}}
		if !reflect.DeepEqual(devs, want) {
			t.Errorf("discover\n got %+v\nwant %+v", devs, want)
		}
	})
	t.Run("QEMU, ACPI driver before 6.10", func(t *testing.T) {
		s := newFakeSysfs(t)
		dir := s.acpiDevice("QEMUVGID:00", "QEMUVGID", "acpi:QEMUVGID:VM_Gen_Counter:")
		s.link(dir+"/driver", "../../../../bus/acpi/drivers/vmgenid")
		devs, err := discover(s.root)
		if err != nil {
			t.Fatal(err)
		}
		if len(devs) != 1 || devs[0].HID != "QEMUVGID" || devs[0].Driver != "vmgenid" || devs[0].PhysicalNode != "" {
			t.Errorf("discover = %+v, want QEMUVGID:00 bound to vmgenid without a physical node", devs)
		}
	})
	t.Run("unknown HID, no driver", func(t *testing.T) {
		s := newFakeSysfs(t)
		dir := s.acpiDevice("HYPERVGC:00", "HYPERVGC", "acpi:HYPERVGC:VM_Gen_Counter:")
		s.link(dir+"/physical_node", "../../../platform/HYPERVGC:00")
		devs, err := discover(s.root)
		if !errors.Is(err, ErrNoDriver) {
			t.Fatalf("discover error = %v, want ErrNoDriver", err)
		}
		if len(devs) != 1 || devs[0].Name != "HYPERVGC:00" || devs[0].Driver != "" || devs[0].PhysicalNode == "" {
			t.Errorf("discover = %+v, want the unbound HYPERVGC:00 with its physical node", devs)
		}
	})
	t.Run("no VMGENID", func(t *testing.T) {
		s := newFakeSysfs(t)
		s.others()
		if devs, err := discover(s.root); !errors.Is(err, ErrNoDevice) || devs != nil {
			t.Errorf("discover = %+v, %v; want ErrNoDevice", devs, err)
		}
	})
	t.Run("no ACPI", func(t *testing.T) {
		if devs, err := discover(newFakeSysfs(t).root); !errors.Is(err, ErrNoDevice) || devs != nil {
			t.Errorf("discover = %+v, %v; want ErrNoDevice", devs, err)
		}
	})
}

func TestSignals(t *testing.T) {
	bound := []Device{{Name: "VMGENCTR:00", Driver: "vmgenid"}}
	tests := []struct {
		devs    []Device
		release string
		want    []string
	}{
		{bound, "6.18.44-fc-v669", []string{SignalKmsg}},
		{bound, "5.17.15", []string{}},
		{bound, "5.18.0-rc1", []string{SignalKmsg}},
		{bound, "6.8.0-31-generic", []string{SignalKmsg, SignalUevent}},
		{bound, "6.9.1", []string{SignalKmsg}},
		{bound, "10.1", []string{SignalKmsg}},
		{bound, "garbage", []string{}},
		{bound, "6.x", []string{}},
		{nil, "6.8.0", []string{}},
		{[]Device{{Name: "VMGENCTR:00"}}, "6.18.0", []string{}},
		{[]Device{{Name: "VMGENCTR:00", Driver: "other"}}, "6.18.0", []string{}},
	}
	for _, tt := range tests {
		if got := signals(tt.devs, tt.release); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("signals(%v, %q) = %q, want %q", tt.devs, tt.release, got, tt.want)
		}
	}
}
