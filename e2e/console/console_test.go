package console

import (
	"testing"
	"time"
)

// capture is the start and a later part of a real source console (QEMU 7.2,
// Debian 6.12 guest, the stand-in client's lines), then a clone's first
// lines, then a line QEMU was still writing, and a kernel console line as a
// quiet kernel prints a warning.
const capture = "[init] starting 2 programs\r\n" +
	"[init] started\r\n" +
	"[kmsg] 6,1,0,-;Command line: console=ttyS0 quiet panic=-1\r\n" +
	"[kmsg]  SUBSYSTEM=acpi\r\n" +
	"[kmsg]  DEVICE=+acpi:PNP0A03:00\r\n" +
	"[kmsg] 14,370,3706090,-;guestclient: T=3686241937\r\n" +
	"[client] T=3735113230 gen=0 csprng=- control=cb5d414c7989dd6d899f6b82b7adc64e\r\n" +
	"[kmsg] 5,371,4192449,-;random: crng reseeded due to virtual machine fork\r\n" +
	"[    4.309123] ------------[ cut here ]------------\r\n" +
	"[client] T=4223868910 gen=0 csprng=- control=3d1f6fffebe9ef2508a52eaa1b9429c6\r\n" +
	"[client] T=42716"

func TestParse(t *testing.T) {
	got := Parse([]byte(capture))
	want := []Line{
		{"init", "starting 2 programs"},
		{"init", "started"},
		{"kmsg", "6,1,0,-;Command line: console=ttyS0 quiet panic=-1"},
		{"kmsg", " SUBSYSTEM=acpi"},
		{"kmsg", " DEVICE=+acpi:PNP0A03:00"},
		{"kmsg", "14,370,3706090,-;guestclient: T=3686241937"},
		{"client", "T=3735113230 gen=0 csprng=- control=cb5d414c7989dd6d899f6b82b7adc64e"},
		{"kmsg", "5,371,4192449,-;random: crng reseeded due to virtual machine fork"},
		{"", "[    4.309123] ------------[ cut here ]------------"},
		{"client", "T=4223868910 gen=0 csprng=- control=3d1f6fffebe9ef2508a52eaa1b9429c6"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%q", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i, got[i], want[i])
		}
	}
	if s := got[0].String(); s != "[init] starting 2 programs" {
		t.Errorf("String() = %q", s)
	}
	if Parse([]byte("[client] T=1")) != nil {
		t.Error("an unfinished only line was returned")
	}
}

func TestValidTag(t *testing.T) {
	for tag, want := range map[string]bool{
		"client": true, "snapsafed": true, "watch-1": true, "a.b_c": true,
		"": false, "1x": false, "    4.309123": false, "12345.678901": false, "a b": false, "a]": false,
	} {
		if got := ValidTag(tag); got != want {
			t.Errorf("ValidTag(%q) = %v, want %v", tag, got, want)
		}
	}
}

func TestParseClient(t *testing.T) {
	// A real line (Debian 6.1 guest, after the restore).
	c, err := ParseClient("T=4409392486 gen=2 mode=provider csprng=9018d500a1ca58a74e21cc8eaac5c68d control=4178138b09682436c4886a91f5035a7e")
	if err != nil {
		t.Fatal(err)
	}
	want := Client{T: 4409392486, Gen: 2, Mode: "provider", CSPRNG: "9018d500a1ca58a74e21cc8eaac5c68d", Control: "4178138b09682436c4886a91f5035a7e"}
	if c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
	// A field added later is ignored.
	c, err = ParseClient("T=9 gen=18446744073709551615 mode=kernel csprng=00ff control=0a extra=1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Client{T: 9, Gen: 1<<64 - 1, Mode: "kernel", CSPRNG: "00ff", Control: "0a"}); c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
	for _, bad := range []string{
		"",
		"exited with status 1",
		"T=1 gen=0 mode=provider csprng=00", // no control
		"T=1 gen=0 csprng=00 control=00",    // no mode
		"T=-1 gen=0 mode=provider csprng=00 control=00",        // negative time
		"T=1 gen=x mode=provider csprng=00 control=00",         // bad generation
		"T=1 gen=0 mode=provider csprng=- control=00",          // csprng not hex
		"T=1 gen=0 mode=provider csprng=00 control=",           // empty control
		"T=1 gen=0 mode=provider csprng=00 control=0",          // odd hex
		"T=4409392486 gen=2 mode=provider csprng=90 cont[    ", // garbled by a kernel line
	} {
		if _, err := ParseClient(bad); err == nil {
			t.Errorf("ParseClient(%q) succeeded", bad)
		}
	}
}

func TestParseWaiter(t *testing.T) {
	// Real records (Debian 6.1 guest: the source, then a clone).
	for _, tc := range []struct {
		in   string
		want Waiter
	}{
		{"ready gen=1 watchers=1", Waiter{Event: WaiterReady, Gen: 1, Watchers: 1}},
		{"bump gen=2 reason=acpi mono=4355851515", Waiter{Event: WaiterBump, Gen: 2, Reason: "acpi", Mono: 4355851515}},
		{"wait gen=2 exit=0", Waiter{Event: WaiterWait, Gen: 2}},
		{"wait gen=3 exit=4 extra=1", Waiter{Event: WaiterWait, Gen: 3, Exit: 4}},
	} {
		if !IsWaiterRecord(tc.in) {
			t.Errorf("IsWaiterRecord(%q) = false", tc.in)
		}
		got, err := ParseWaiter(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseWaiter(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, other := range []string{"snapsafectl wait: timed out after 10s: ...", "exited with status 1", "waiting", ""} {
		if IsWaiterRecord(other) {
			t.Errorf("IsWaiterRecord(%q) = true", other)
		}
	}
	for _, bad := range []string{
		"ready gen=1",                     // no watchers
		"bump gen=2 reason=acpi",          // no mono
		"bump gen=2 reason=acpi mono=-1",  // negative time
		"wait gen=x exit=0",               // bad generation
		"wait gen=2 exit=zero",            // bad exit code
		"wait gen=2 exit",                 // not key=value
		"other gen=1",                     // unknown event
		"ready gen=1 watchers=1.5",        // bad count
		"bump gen=2 reason=acpi mono=4e9", // not an integer
	} {
		if _, err := ParseWaiter(bad); err == nil {
			t.Errorf("ParseWaiter(%q) succeeded", bad)
		}
	}
}

func TestParseKmsg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Kmsg
	}{
		{"5,371,4192449,-;random: crng reseeded due to virtual machine fork",
			Kmsg{Facility: 0, Level: 5, Seq: 371, Time: 4192449 * time.Microsecond, Message: "random: crng reseeded due to virtual machine fork"}},
		{"14,370,3706090,-;guestclient: T=3686241937",
			Kmsg{Facility: 1, Level: 6, Seq: 370, Time: 3706090 * time.Microsecond, Message: "guestclient: T=3686241937"}},
		// A kernel built with CONFIG_PRINTK_CALLER adds a field; a message
		// may contain ';'.
		{"6,12,345,c,caller=T1;a;b", Kmsg{Facility: 0, Level: 6, Seq: 12, Time: 345 * time.Microsecond, Message: "a;b"}},
	} {
		got, err := ParseKmsg(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseKmsg(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{" SUBSYSTEM=acpi", "5,371;x", "x,1,2,-;m", "5,371,-4,-;m", ""} {
		if _, err := ParseKmsg(bad); err == nil {
			t.Errorf("ParseKmsg(%q) succeeded", bad)
		}
	}
}

func TestClockSync(t *testing.T) {
	k, err := ParseKmsg("14,370,3706090,-;guestclient: T=3686241937")
	if err != nil {
		t.Fatal(err)
	}
	s, ok := ParseClockSync(k)
	if !ok || s != (ClockSync{Kernel: 3706090 * time.Microsecond, T: 3686241937}) {
		t.Errorf("ParseClockSync = %+v, %v", s, ok)
	}
	// The kernel's facility cannot carry a sync, nor can other messages.
	for _, in := range []string{"6,1,2,-;guestclient: T=5", "14,1,2,-;guestclient: T=x", "14,1,2,-;other"} {
		k, err := ParseKmsg(in)
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := ParseClockSync(k); ok {
			t.Errorf("ParseClockSync(%q) = %+v", in, s)
		}
	}

	// Two real syncs around a real fork record, from a source and a clone:
	// the client clock is 19.8 ms behind at the first and 13.9 ms at the
	// second.
	syncs := []ClockSync{
		{Kernel: 4750645 * time.Microsecond, T: 4736717861},
		{Kernel: 3706090 * time.Microsecond, T: 3686241937},
	}
	got, ok := KernelToClient(syncs, 4192449*time.Microsecond)
	if !ok {
		t.Fatal("KernelToClient failed")
	}
	// Interpolated by hand: 3686241937 + (4192449000-3706090000) *
	// (4736717861-3686241937)/(4750645000-3706090000) = 4175357799 (floor).
	if want := time.Duration(4175357799); got < want-1 || got > want+1 {
		t.Errorf("KernelToClient = %d, want %d", got, want)
	}
	// Outside the syncs it extrapolates on the nearest pair's rate, here 1.
	syncs = append(syncs, ClockSync{Kernel: 5 * time.Second, T: 4986072861})
	if got, _ := KernelToClient(syncs, 6*time.Second); got != 5986072861 {
		t.Errorf("extrapolated after = %d, want 5986072861", got)
	}
	if got, _ := KernelToClient(syncs, 3706090*time.Microsecond); got != 3686241937 {
		t.Errorf("at a sync = %v, want its T", got)
	}
	for _, few := range [][]ClockSync{nil, syncs[:1], {syncs[0], syncs[0]}} {
		if _, ok := KernelToClient(few, time.Second); ok {
			t.Errorf("KernelToClient(%v) succeeded", few)
		}
	}
}
