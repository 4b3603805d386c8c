package acpi

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/snapsafe/snapsafe/internal/errs"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// ErrNoDevice is returned (wrapped) when the machine has no VMGENID device.
// It is the one device-absent sentinel of snapsafe (backend.ErrNoDevice is
// the same value).
var ErrNoDevice = errs.ErrNoDevice

// noDevice is the fix that goes with ErrNoDevice.
const noDevice = "no VMGENID device: the hypervisor does not expose an ACPI VM Generation ID; " +
	"enable it in the VM's configuration (QEMU: -device vmgenid), or use another backend"

// ErrNoDriver is returned (wrapped) when a VMGENID device is present but no
// kernel driver is bound to it, so the kernel reports no restores.
var ErrNoDriver = errors.New("VMGENID device present but no driver bound to it: " +
	"use Linux 5.18 or later built with CONFIG_VMGENID, and load the driver (modprobe vmgenid)")

// sysfsRoot is where sysfs is mounted.
const sysfsRoot = "/sys"

// vmgenidDriver is the name of the Linux driver whose restore reports the
// followers read.
const vmgenidDriver = "vmgenid"

// Device is a VMGENID device found in sysfs. The type is defined in
// runtime/api so that status replies carry it without importing acpi.
type Device = api.VMGenIDDevice

// isVMGenID reports whether an ACPI device with these hardware id and
// modalias is a VM Generation ID. Every VMGENID device has the compatible id
// VM_Gen_Counter, which the modalias lists; the known HIDs are checked too,
// because a uevent on the device may carry no modalias.
func isVMGenID(hid, modalias string) bool {
	return hid == "VMGENCTR" || hid == "QEMUVGID" ||
		strings.Contains(strings.ToUpper(modalias), "VM_GEN_COUNTER")
}

// discover finds the VMGENID devices under the sysfs tree at root. It returns
// a wrapped ErrNoDevice when there is none, and the devices found with a
// wrapped ErrNoDriver when none of them has a driver bound.
func discover(root string) ([]Device, error) {
	dir := filepath.Join(root, "bus", "acpi", "devices")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s (%s does not exist: the machine has no ACPI): %w", noDevice, dir, ErrNoDevice)
	}
	if err != nil {
		return nil, fmt.Errorf("listing ACPI devices: %w", err)
	}
	var devs []Device
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		d := Device{Name: e.Name(), HID: readAttr(p, "hid"), Modalias: readAttr(p, "modalias")}
		if !isVMGenID(d.HID, d.Modalias) {
			continue
		}
		d.ACPIPath = readAttr(p, "path")
		if d.SysfsPath, err = filepath.EvalSymlinks(p); err != nil {
			return nil, fmt.Errorf("resolving ACPI device %s: %w", d.Name, err)
		}
		if node, err := filepath.EvalSymlinks(filepath.Join(p, "physical_node")); err == nil {
			d.PhysicalNode = node
			d.Driver = linkName(filepath.Join(node, "driver"))
		}
		if d.Driver == "" {
			// Before Linux 6.10 vmgenid was an ACPI driver, bound to
			// the ACPI device itself.
			d.Driver = linkName(filepath.Join(p, "driver"))
		}
		devs = append(devs, d)
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("%s (none among the ACPI devices in %s): %w", noDevice, dir, ErrNoDevice)
	}
	for _, d := range devs {
		if d.Driver != "" {
			return devs, nil
		}
	}
	return devs, fmt.Errorf("%w (device %s)", ErrNoDriver, devs[0].Name)
}

// readAttr returns the trimmed content of a sysfs attribute, or "" when it
// cannot be read: ACPI devices lack the attributes that do not apply to
// them (device:NN nodes have no hid, for instance).
func readAttr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// linkName returns the last element of a symlink's target, or "" when link
// is not a symlink. Applied to a device's driver link it gives the driver's
// name.
func linkName(link string) string {
	target, err := os.Readlink(link)
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// Info describes what this machine offers the ACPI source. The type is
// defined in runtime/api (see its field docs) so that status replies carry
// it without importing acpi.
type Info = api.VMGenID

// probeOnce caches Probe: what it reports does not change while the process
// runs, except ForkRecords, which callers wanting it fresh get from ProbeAt.
var probeOnce = sync.OnceValue(func() Info { return ProbeAt(sysfsRoot) })

// Probe describes this machine, once per process; later calls return the
// first answer.
func Probe() Info {
	return probeOnce()
}

// ProbeAt describes this machine with the devices found under the sysfs tree
// at root (normally /sys); the kernel facts come from the running kernel. It
// is not cached.
func ProbeAt(root string) Info {
	info := Info{Devices: []Device{}, Signals: []string{}}
	problem := func(err error) { info.Problems = append(info.Problems, err.Error()) }
	devs, err := discover(root)
	if devs != nil {
		info.Devices = devs
	}
	if err != nil {
		problem(err)
	}
	if info.Kernel, err = kernelRelease(); err != nil {
		problem(err)
	}
	if info.ForkRecords, err = countKmsgHistory(); err != nil {
		problem(err)
	} else {
		info.KmsgReadable = true
	}
	if err := checkUevent(); err != nil {
		problem(fmt.Errorf("opening a kernel uevent socket: %w", err))
	} else {
		info.UeventSocket = true
	}
	info.Signals = signals(info.Devices, info.Kernel)
	return info
}

// signals lists the signals a kernel of this release gives with these
// devices; see the package documentation.
func signals(devs []Device, release string) []string {
	s := []string{}
	bound := false
	for _, d := range devs {
		bound = bound || d.Driver == vmgenidDriver
	}
	major, minor, ok := parseRelease(release)
	if !bound || !ok {
		return s
	}
	if major > 5 || major == 5 && minor >= 18 {
		s = append(s, SignalKmsg)
	}
	if major == 6 && minor == 8 {
		s = append(s, SignalUevent)
	}
	return s
}

// parseRelease reads the major and minor version from a kernel release such
// as "6.18.44-fc-v669" or "5.18.0-rc1".
func parseRelease(release string) (major, minor int, ok bool) {
	majorStr, rest, ok := strings.Cut(release, ".")
	if !ok {
		return 0, 0, false
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	major, err1 := strconv.Atoi(majorStr)
	minor, err2 := strconv.Atoi(rest[:end])
	return major, minor, err1 == nil && err2 == nil
}
