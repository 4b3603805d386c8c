package acpi

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUeventCapture(t *testing.T) {
	const (
		platform = "/devices/platform/VMGENCTR:00"
		acpiDev  = "/devices/LNXSYSTM:00/LNXSYBUS:00/VMGENCTR:00"
		uuid     = "3f403ace-11a8-4a9a-a784-e458f95eb414"
	)
	tests := []struct {
		file                 string
		action, devpath, sub string
		seq                  uint64
		env                  map[string]string // a subset of Env
		restore, restoreSyn  bool              // IsRestore(false), IsRestore(true)
	}{
		{"uevent-synthetic-platform.bin", "change", platform, "platform", 823,
			map[string]string{"SYNTH_UUID": uuid, "DRIVER": "vmgenid", "MODALIAS": "acpi:VMGENCTR:VM_GEN_COUNTER:"}, false, true},
		{"uevent-synthetic-arg.bin", "change", platform, "platform", 824,
			map[string]string{"SYNTH_UUID": uuid, "SYNTH_ARG_FOO": "bar"}, false, true},
		{"uevent-synthetic-nouuid.bin", "change", platform, "platform", 825,
			map[string]string{"SYNTH_UUID": "0"}, false, true},
		{"uevent-synthetic-acpi.bin", "change", acpiDev, "acpi", 826,
			map[string]string{"SYNTH_UUID": uuid}, false, true},
		{"uevent-synthetic-add.bin", "add", platform, "platform", 827,
			map[string]string{"SYNTH_UUID": uuid}, false, false},
		{"uevent-kernel-net-add.bin", "add", "/devices/virtual/net/sstap0", "net", 828,
			map[string]string{"INTERFACE": "sstap0", "IFINDEX": "5"}, false, false},
		{"uevent-linux68-newvmgenid.bin", "change", "/devices/LNXSYSTM:00/LNXSYBUS:00/QEMUVGID:00", "acpi", 2467,
			map[string]string{"NEW_VMGENID": "1", "DRIVER": "vmgenid"}, true, true},
	}
	for _, tt := range tests {
		u, err := ParseUevent(readTestdata(t, tt.file))
		if err != nil {
			t.Errorf("%s: %v", tt.file, err)
			continue
		}
		if u.Action != tt.action || u.DevPath != tt.devpath || u.Subsystem != tt.sub || u.Seqnum != tt.seq {
			t.Errorf("%s: got %s@%s subsystem %q seq %d, want %s@%s subsystem %q seq %d",
				tt.file, u.Action, u.DevPath, u.Subsystem, u.Seqnum, tt.action, tt.devpath, tt.sub, tt.seq)
		}
		for k, v := range tt.env {
			if got, ok := u.Env[k]; !ok || got != v {
				t.Errorf("%s: Env[%s] = %q (present %v), want %q", tt.file, k, got, ok, v)
			}
		}
		if u.Env["ACTION"] != u.Action || u.Env["DEVPATH"] != u.DevPath {
			t.Errorf("%s: Env lacks ACTION or DEVPATH: %v", tt.file, u.Env)
		}
		if got := u.IsRestore(false); got != tt.restore {
			t.Errorf("%s: IsRestore(false) = %v, want %v", tt.file, got, tt.restore)
		}
		if got := u.IsRestore(true); got != tt.restoreSyn {
			t.Errorf("%s: IsRestore(true) = %v, want %v", tt.file, got, tt.restoreSyn)
		}
	}
}

func TestParseUeventMalformed(t *testing.T) {
	good := readTestdata(t, "uevent-synthetic-platform.bin")
	// The capture without its last field, SEQNUM=823, but still ending in
	// NUL: what a message cut at a field boundary looks like.
	noSeq := good[:bytes.LastIndex(good[:len(good)-1], []byte{0})+1]
	tests := []struct {
		name string
		in   []byte
		want string // in the error
	}{
		{"libudev", readTestdata(t, "uevent-libudev.bin"), "libudev"},
		{"empty", nil, "NUL"},
		{"truncated mid-field", good[:len(good)-5], "truncated"},
		{"truncated at a field", noSeq, "no SEQNUM"},
		{"no @", []byte("change\x00ACTION=change\x00DEVPATH=/d\x00SEQNUM=1\x00"), "action@/devpath"},
		{"no action", []byte("@/d\x00ACTION=\x00DEVPATH=/d\x00SEQNUM=1\x00"), "action@/devpath"},
		{"relative devpath", []byte("change@d\x00ACTION=change\x00DEVPATH=d\x00SEQNUM=1\x00"), "action@/devpath"},
		{"not KEY=VALUE", []byte("change@/d\x00ACTION=change\x00DEVPATH=/d\x00junk\x00SEQNUM=1\x00"), `"junk"`},
		{"empty field", []byte("change@/d\x00ACTION=change\x00\x00DEVPATH=/d\x00SEQNUM=1\x00"), "KEY=VALUE"},
		{"empty key", []byte("change@/d\x00ACTION=change\x00=v\x00DEVPATH=/d\x00SEQNUM=1\x00"), "KEY=VALUE"},
		{"duplicate key", []byte("change@/d\x00ACTION=change\x00DEVPATH=/d\x00DEVPATH=/d\x00SEQNUM=1\x00"), "twice"},
		{"no ACTION", []byte("change@/d\x00DEVPATH=/d\x00SEQNUM=1\x00"), "no ACTION"},
		{"no DEVPATH", []byte("change@/d\x00ACTION=change\x00SEQNUM=1\x00"), "no DEVPATH"},
		{"header disagrees", []byte("change@/d\x00ACTION=add\x00DEVPATH=/d\x00SEQNUM=1\x00"), "disagree"},
		{"bad SEQNUM", []byte("change@/d\x00ACTION=change\x00DEVPATH=/d\x00SEQNUM=x\x00"), "SEQNUM"},
	}
	for _, tt := range tests {
		u, err := ParseUevent(tt.in)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseUevent(%q) = %+v, %v; want an error wrapping ErrMalformed that mentions %s", tt.name, tt.in, u, err, tt.want)
		}
	}
}

func TestUeventIsRestore(t *testing.T) {
	const acpiDev = "/devices/LNXSYSTM:00/LNXSYBUS:00/VMGENCTR:00"
	tests := []struct {
		name                string
		u                   Uevent
		restore, restoreSyn bool
	}{
		{"6.8 on Firecracker's ACPI device", Uevent{Action: "change", DevPath: acpiDev,
			Env: map[string]string{"NEW_VMGENID": "1"}}, true, true},
		{"on the platform device", Uevent{Action: "change", DevPath: "/devices/platform/VMGENCTR:00",
			Env: map[string]string{"NEW_VMGENID": "1"}}, true, true},
		{"another HID, recognised by the modalias", Uevent{Action: "change", DevPath: "/devices/LNXSYSTM:00/LNXSYBUS:00/HYPERVGC:00",
			Env: map[string]string{"NEW_VMGENID": "1", "MODALIAS": "acpi:HYPERVGC:VM_Gen_Counter:"}}, true, true},
		{"another HID without modalias", Uevent{Action: "change", DevPath: "/devices/LNXSYSTM:00/LNXSYBUS:00/HYPERVGC:00",
			Env: map[string]string{"NEW_VMGENID": "1"}}, false, false},
		{"another device", Uevent{Action: "change", DevPath: "/devices/platform/rtc_cmos",
			Env: map[string]string{"NEW_VMGENID": "1"}}, false, false},
		{"NEW_VMGENID not 1", Uevent{Action: "change", DevPath: acpiDev,
			Env: map[string]string{"NEW_VMGENID": "0"}}, false, false},
		{"no NEW_VMGENID", Uevent{Action: "change", DevPath: acpiDev, Env: map[string]string{}}, false, false},
		{"not a change", Uevent{Action: "add", DevPath: acpiDev,
			Env: map[string]string{"NEW_VMGENID": "1"}}, false, false},
		// Root writing "change <uuid> NEW_VMGENID=1" gets the key renamed,
		// and the event is synthetic anyway.
		{"root's attempt at NEW_VMGENID", Uevent{Action: "change", DevPath: acpiDev,
			Env: map[string]string{"SYNTH_UUID": "0", "SYNTH_ARG_NEW_VMGENID": "1"}}, false, true},
	}
	for _, tt := range tests {
		if got := tt.u.IsRestore(false); got != tt.restore {
			t.Errorf("%s: IsRestore(false) = %v, want %v", tt.name, got, tt.restore)
		}
		if got := tt.u.IsRestore(true); got != tt.restoreSyn {
			t.Errorf("%s: IsRestore(true) = %v, want %v", tt.name, got, tt.restoreSyn)
		}
	}
}

func FuzzParseUevent(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "uevent-*.bin"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no uevent captures: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUevent(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if u.Env["ACTION"] != u.Action || u.Env["DEVPATH"] != u.DevPath || !strings.HasPrefix(u.DevPath, "/") {
			t.Fatalf("ParseUevent(%q) = %+v: inconsistent", b, u)
		}
	})
}
