package acpi

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"golang.org/x/sys/unix"
)

// countForkRecords counts the vmgenid driver's fork records in the kernel
// log — priority 5 (facility 0, level 5), the whole text, no continuation
// lines — with plain byte handling, independently of ParseKmsg.
func countForkRecords(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open(kmsgPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, kmsgMaxRecord)
	count := 0
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			return count
		}
		if err == unix.EPIPE {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		prio, _, _ := bytes.Cut(buf[:n], []byte(","))
		p, err := strconv.Atoi(string(prio))
		if err != nil {
			t.Fatalf("record %q", buf[:n])
		}
		if p == 5 && bytes.HasSuffix(buf[:n], []byte(";"+ForkMessage+"\n")) {
			count++
		}
	}
}

// TestIntegrationProbe checks Probe on the real machine.
func TestIntegrationProbe(t *testing.T) {
	requireVMGenID(t)
	info := ProbeAt(sysfsRoot)
	var dev *Device
	for i := range info.Devices {
		if info.Devices[i].Name == "VMGENCTR:00" {
			dev = &info.Devices[i]
		}
	}
	if dev == nil {
		t.Fatalf("VMGENCTR:00 not found: %+v", info)
	}
	if dev.Driver != vmgenidDriver || dev.PhysicalNode != "/sys/devices/platform/VMGENCTR:00" ||
		!strings.HasPrefix(dev.SysfsPath, "/sys/devices/") || dev.HID != "VMGENCTR" {
		t.Errorf("device %+v: want VMGENCTR bound to vmgenid through /sys/devices/platform/VMGENCTR:00", *dev)
	}
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kernel != strings.TrimSpace(string(release)) {
		t.Errorf("Kernel = %q, /proc says %q", info.Kernel, release)
	}
	// The device is bound to vmgenid, which only exists since 5.18, so
	// the kernel log signal must be listed.
	if !info.KmsgReadable || !info.UeventSocket || !slices.Contains(info.Signals, SignalKmsg) || len(info.Problems) != 0 {
		t.Errorf("info %+v: want /dev/kmsg readable, a uevent socket, the kmsg signal and no problems", info)
	}
	if want := countForkRecords(t); info.ForkRecords != want {
		t.Errorf("ForkRecords = %d, the kernel log holds %d", info.ForkRecords, want)
	}

	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"devices", "kernel", "kmsg_readable", "uevent_socket", "signals", "fork_records"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON %s lacks %q", b, k)
		}
	}

	if p := Probe(); !reflect.DeepEqual(p.Devices, info.Devices) || p.Kernel != info.Kernel {
		t.Errorf("Probe = %+v, want the devices and kernel of ProbeAt(%q)", p, sysfsRoot)
	}
}

func TestIntegrationDiscover(t *testing.T) {
	if _, err := os.Stat(testdevice.UeventPath); err != nil {
		testdevice.Skip(t, "needs a VMGENID device bound as a platform device (Firecracker guest, Linux 6.10+): %v", err)
	}
	devs, err := Discover()
	if err != nil || len(devs) == 0 {
		t.Fatalf("Discover = %+v, %v; want the VMGENID device", devs, err)
	}
}
