// Package api holds the JSON shapes snapsafe reports: the status reply of
// the control protocol (snapsafectl status --json) and the descriptions of
// the event sources inside it.
//
// It is a leaf: it imports nothing of snapsafe, so that the client, the
// provider and the event sources share one definition of each field without
// any of them importing another. docs/ABI.md names the keys.
package api

import "time"

// Status is the provider's state and counters, as the status request returns
// it.
type Status struct {
	Generation  uint64     `json:"generation"`
	Watchers    int        `json:"watchers"`
	Outdated    int        `json:"outdated"`
	Waiting     int        `json:"waiting"`
	Clients     int        `json:"clients"`
	Regions     int        `json:"regions"`
	RegionBytes int        `json:"region_bytes"`
	Bumps       uint64     `json:"bumps"`
	Backend     string     `json:"backend"`
	Source      SourceInfo `json:"source"`
	// VMGenID is the ACPI VMGENID probe, whatever the backend.
	VMGenID     VMGenID   `json:"vmgenid"`
	Epoch       string    `json:"epoch"`
	Reason      string    `json:"reason"`
	State       string    `json:"state"`
	BumpTime    time.Time `json:"bump_time"`
	Wiped       uint64    `json:"wiped_generation"`
	ProviderPID int       `json:"provider_pid"`
	Started     time.Time `json:"started"`
	Dir         string    `json:"dir"`
}

// SourceInfo describes the provider's event source. Name is always set;
// the other fields belong to one source each and are omitted by the others.
type SourceInfo struct {
	// Name is the backend: "manual", "acpi" or "vmclock".
	Name string `json:"source"`
	// Why says why --backend auto chose this source, or what the manual
	// source does.
	Why string `json:"why,omitempty"`

	// The acpi source.
	Kernel          string   `json:"kernel,omitempty"`
	KernelSignals   []string `json:"kernel_signals,omitempty"`
	Followed        []string `json:"followed,omitempty"`
	ForkRecords     int      `json:"fork_records,omitempty"`
	AcceptSynthetic bool     `json:"accept_synthetic,omitempty"`
	Coalesced       uint64   `json:"coalesced,omitempty"`
	Device          string   `json:"device,omitempty"`
	Driver          string   `json:"driver,omitempty"`
	KmsgMatch       string   `json:"kmsg_match,omitempty"`

	// The vmclock source.
	Path           string `json:"path,omitempty"`
	Magic          string `json:"magic,omitempty"`
	Version        uint16 `json:"version,omitempty"`
	Size           uint32 `json:"size,omitempty"`
	CounterPresent bool   `json:"counter_present,omitempty"`
	Notifications  bool   `json:"notifications,omitempty"`
	Mode           string `json:"mode,omitempty"`
	PollInterval   string `json:"poll_interval,omitempty"`
	Counter        uint64 `json:"counter,omitempty"`
	CounterError   string `json:"counter_error,omitempty"`
}

// VMGenID describes what this machine offers the ACPI source: the result of
// acpi.Probe.
type VMGenID struct {
	// Devices are the VMGENID devices found (empty when none).
	Devices []VMGenIDDevice `json:"devices"`
	// Kernel is the kernel release (uname -r).
	Kernel string `json:"kernel"`
	// KmsgReadable is true when /dev/kmsg could be read.
	KmsgReadable bool `json:"kmsg_readable"`
	// UeventSocket is true when a kernel uevent socket could be opened.
	UeventSocket bool `json:"uevent_socket"`
	// Signals lists the signals this kernel gives: "kmsg" when the
	// vmgenid driver is bound and the kernel is 5.18 or later, and
	// "uevent" on 6.8 kernels (later 6.8.y releases dropped it, so there
	// it means "may give"). Vendor kernels may carry the uevent on other
	// versions; it is not listed for them, though a uevent follower still
	// receives it there.
	Signals []string `json:"signals"`
	// ForkRecords counts the VM-fork records in the kernel log since boot
	// (as far back as the log still reaches): how many restores this boot
	// has seen. It is 0 when the log cannot be read.
	ForkRecords int `json:"fork_records"`
	// Problems explains, one line each, what is missing and what to do.
	Problems []string `json:"problems,omitempty"`
}

// VMGenIDDevice is a VMGENID device found in sysfs.
type VMGenIDDevice struct {
	// Name is the ACPI device name, such as "VMGENCTR:00".
	Name string `json:"name"`
	// SysfsPath is the ACPI device's directory with links resolved, such
	// as /sys/devices/LNXSYSTM:00/LNXSYBUS:00/VMGENCTR:00.
	SysfsPath string `json:"sysfs_path"`
	// HID is the ACPI hardware id: VMGENCTR (Firecracker), QEMUVGID
	// (QEMU), or another one for other hypervisors.
	HID string `json:"hid"`
	// Modalias lists the HID and compatible ids, such as
	// "acpi:VMGENCTR:VM_GEN_COUNTER:".
	Modalias string `json:"modalias"`
	// ACPIPath is the device's path in the ACPI namespace, such as
	// \_SB_.VGEN.
	ACPIPath string `json:"acpi_path"`
	// PhysicalNode is the platform device made from the ACPI device, with
	// links resolved (such as /sys/devices/platform/VMGENCTR:00), or "".
	PhysicalNode string `json:"physical_node"`
	// Driver is the name of the bound driver ("vmgenid"), or "" when none
	// is bound.
	Driver string `json:"driver"`
}
