package api

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestSourceInfoJSON: each source's object holds its own keys, zero or not,
// and no other source's.
func TestSourceInfoJSON(t *testing.T) {
	zero := uint64(0)
	for _, tc := range []struct {
		info SourceInfo
		want string
	}{
		{
			SourceInfo{Name: "manual", Why: "restores will not be detected: bumps come only from snapsafectl bump"},
			`{"detects_restores":false,"source":"manual","why":"restores will not be detected: bumps come only from snapsafectl bump"}`,
		},
		{
			SourceInfo{Name: "acpi", Kernel: "6.18.0", Followed: []string{"kmsg"}},
			`{"accept_synthetic":false,"coalesced":0,"detects_restores":false,"followed":["kmsg"],"fork_records":0,"ignored_imitations":0,"ignored_synthetic":0,"kernel":"6.18.0","kernel_signals":null,"source":"acpi"}`,
		},
		{
			SourceInfo{Name: "acpi", Why: "auto", Kernel: "6.8.0", KernelSignals: []string{"uevent"}, Followed: []string{"uevent"},
				ForkRecords: 2, AcceptSynthetic: true, Coalesced: 3, Device: "/sys/d", Driver: "vmgenid", KmsgMatch: "<4>m",
				DetectsRestores: true, IgnoredSynthetic: 4, IgnoredImitations: 5},
			`{"accept_synthetic":true,"coalesced":3,"detects_restores":true,"device":"/sys/d","driver":"vmgenid","followed":["uevent"],"fork_records":2,"ignored_imitations":5,"ignored_synthetic":4,"kernel":"6.8.0","kernel_signals":["uevent"],"kmsg_match":"\u003c4\u003em","source":"acpi","why":"auto"}`,
		},
		{
			SourceInfo{Name: "vmclock", Path: "/dev/vmclock0", Magic: "0x4b4c4356", Version: 1, Size: 4096, CounterPresent: true,
				Mode: "poll", PollInterval: "10ms", Counter: &zero, DetectsRestores: true},
			`{"counter":0,"counter_present":true,"detects_restores":true,"magic":"0x4b4c4356","mode":"poll","notifications":false,"path":"/dev/vmclock0","poll_interval":"10ms","size":4096,"source":"vmclock","version":1}`,
		},
		{
			SourceInfo{Name: "vmclock", Path: "/dev/vmclock0", Magic: "0x4b4c4356", Version: 1, Size: 4096, CounterPresent: true,
				Notifications: true, Mode: "notify", CounterError: "stuck"},
			`{"counter_error":"stuck","counter_present":true,"detects_restores":false,"magic":"0x4b4c4356","mode":"notify","notifications":true,"path":"/dev/vmclock0","size":4096,"source":"vmclock","version":1}`,
		},
	} {
		b, err := json.Marshal(tc.info)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s source:\n got %s\nwant %s", tc.info.Name, b, tc.want)
		}
		var back SourceInfo
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, tc.info) {
			t.Errorf("%s source does not survive a round trip: %+v, want %+v", tc.info.Name, back, tc.info)
		}
	}
}
