// Package api holds the JSON shapes snapsafe reports: the status reply of
// the control protocol (snapsafectl status --json) and the descriptions of
// the event sources inside it.
//
// It is a leaf: it imports nothing of snapsafe, so that the client, the
// provider and the event sources share one definition of each field without
// any of them importing another. docs/ABI.md names the keys.
package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// Status is the provider's state and counters, as the status request returns
// it.
type Status struct {
	Generation uint64 `json:"generation"`
	// Watchers counts every watcher, tracked or not; Outdated the tracked
	// ones (and restore hooks) that have not acknowledged the current
	// generation: what holds up an orchestrator wait.
	Watchers int `json:"watchers"`
	Outdated int `json:"outdated"`
	// WatcherList describes every watcher (docs/ABI.md §3.1), Hooks every
	// restore hook. The control protocol carries them in a memfd of their
	// own (request 0x0a), not in the status reply.
	WatcherList []Watcher `json:"watcher_list"`
	Hooks       []Hook    `json:"hooks"`
	Waiting     int       `json:"waiting"`
	Clients     int       `json:"clients"`
	Refused     uint64    `json:"refused"` // connections refused (bounds on clients) since the start
	Regions     int       `json:"regions"`
	RegionBytes int       `json:"region_bytes"`
	Bumps       uint64    `json:"bumps"`
	// BumpsByReason counts the bumps by reason (startup, acpi, vmclock,
	// forced, host).
	BumpsByReason map[string]uint64 `json:"bumps_by_reason"`
	// KernelReseeded says whether the kernel RNG is known to have been
	// reseeded for the current generation (the kernel's own VM-fork
	// record, or a reseed the provider forced); KernelReseed says how, or
	// why not. A client that reseeds from getrandom when it is false may get
	// the snapshot's stream in every clone.
	KernelReseeded bool       `json:"kernel_reseeded"`
	KernelReseed   string     `json:"kernel_reseed"`
	Backend        string     `json:"backend"`
	Source         SourceInfo `json:"source"`
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
// the other fields belong to one source each and are omitted by the others
// (see MarshalJSON).
type SourceInfo struct {
	// Name is the backend: "manual", "acpi" or "vmclock".
	Name string `json:"source"`
	// Why says why --backend auto chose this source, or what the manual
	// source does; when DetectsRestores is false, it says why.
	Why string `json:"why,omitempty"`
	// DetectsRestores is false when the source cannot see a restore on
	// this machine (the manual source; --backend auto falling back to it;
	// an acpi source that follows only synthetic uevents): then the
	// generation moves only on forced bumps (and test events).
	DetectsRestores bool `json:"detects_restores"`

	// The acpi source.
	Kernel          string   `json:"kernel" source:"acpi"`
	KernelSignals   []string `json:"kernel_signals" source:"acpi"`
	Followed        []string `json:"followed" source:"acpi"`
	ForkRecords     int      `json:"fork_records" source:"acpi"`
	AcceptSynthetic bool     `json:"accept_synthetic" source:"acpi"`
	Coalesced       uint64   `json:"coalesced" source:"acpi"`
	Device          string   `json:"device,omitempty"`
	Driver          string   `json:"driver,omitempty"`
	// IgnoredSynthetic counts the synthetic uevents on the device that
	// did not count (no --accept-synthetic).
	IgnoredSynthetic uint64 `json:"ignored_synthetic" source:"acpi"`
	// IgnoredImitations counts the kernel log records that hold the fork
	// text but are not the kernel's fork record, and did not count.
	IgnoredImitations uint64 `json:"ignored_imitations" source:"acpi"`
	// KmsgMatch is the test-only extra kernel record that also counts
	// (snapsafed --test-kmsg-match), as "<level>text"; "" when none.
	KmsgMatch string `json:"kmsg_match,omitempty"`

	// The vmclock source.
	Path           string `json:"path" source:"vmclock"`
	Magic          string `json:"magic" source:"vmclock"`
	Version        uint16 `json:"version" source:"vmclock"`
	Size           uint32 `json:"size" source:"vmclock"`
	CounterPresent bool   `json:"counter_present" source:"vmclock"`
	Notifications  bool   `json:"notifications" source:"vmclock"`
	Mode           string `json:"mode" source:"vmclock"`
	PollInterval   string `json:"poll_interval,omitempty"`
	// Counter is nil when the counter could not be read (CounterError
	// says why) or is no longer maintained.
	Counter      *uint64 `json:"counter,omitempty"`
	CounterError string  `json:"counter_error,omitempty"`
}

// MarshalJSON writes the fields of the source Name names, and none of the
// other sources': a field tagged source:"x" is written, even when zero,
// exactly when Name is x ("coalesced": 0 says something); an untagged
// field is written unless it is omitempty and zero. Keys come in sorted
// order.
func (s SourceInfo) MarshalJSON() ([]byte, error) {
	v := reflect.ValueOf(s)
	t := v.Type()
	fields := make(map[string]any, t.NumField())
	for i := range t.NumField() {
		f, x := t.Field(i), v.Field(i)
		key, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if src, ok := f.Tag.Lookup("source"); ok {
			if src != s.Name {
				continue
			}
		} else if opts == "omitempty" && x.IsZero() {
			continue
		}
		fields[key] = x.Interface()
	}
	return json.Marshal(fields)
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

// Watcher is one watcher as status reports it.
type Watcher struct {
	PID   int32  `json:"pid"`
	UID   uint32 `json:"uid"`
	Comm  string `json:"comm"`  // the command name, from /proc/<pid>/status
	Label string `json:"label"` // what the watcher called itself (watch --label)
	// Acked is the generation it last acknowledged (or was up to date
	// with when it registered).
	Acked uint64 `json:"acked"`
	// Outdated: it has not acknowledged the current generation.
	Outdated bool `json:"outdated"`
	// Tracked: it holds up orchestrator waits while outdated
	// (snapsafed --track-group decides who is).
	Tracked bool `json:"tracked"`
	// Expected: a watcher of the previous provider that has not
	// re-registered yet (it still counts while its process lives).
	Expected bool `json:"expected,omitempty"`
}

// Hook is one restore hook (snapsafed --hooks-dir) as status reports it.
type Hook struct {
	Name string `json:"name"`
	// State is "ok" (it handled the current generation), "pending",
	// "running", "failed" or "refused" (never run: see Reason).
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Acked is the generation whose run exited 0 last.
	Acked uint64 `json:"acked"`
}
