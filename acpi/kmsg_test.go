package acpi

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// readTestdata returns the content of a file in testdata.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kmsgCapture splits testdata/kmsg.txt into the records read(2) returned, by
// sequence number. A record starts on every line that does not start with a
// space (continuation lines do).
func kmsgCapture(t testing.TB) map[uint64][]byte {
	t.Helper()
	recs := make(map[uint64][]byte)
	var cur []byte
	flush := func() {
		if cur == nil {
			return
		}
		seq, err := strconv.ParseUint(string(bytes.Split(cur, []byte(","))[1]), 10, 64)
		if err != nil {
			t.Fatalf("capture record %q: %v", cur, err)
		}
		recs[seq] = cur
	}
	for _, line := range bytes.SplitAfter(readTestdata(t, "kmsg.txt"), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if line[0] != ' ' {
			flush()
			cur = nil
		}
		cur = append(cur, line...)
	}
	flush()
	return recs
}

// synthUeventMessage is what the kernel logs, with facility 0 and level 4,
// when root writes arguments it cannot parse to the VMGENID device's uevent
// file.
const synthUeventMessage = "synth uevent: /devices/platform/VMGENCTR:00: incorrect uevent action arguments"

// synthUevent is that record as a KmsgMatch.
var synthUevent = KmsgMatch{Level: 4, Message: synthUeventMessage}

func TestParseKmsgCapture(t *testing.T) {
	recs := kmsgCapture(t)
	tests := []struct {
		seq     uint64
		want    Record
		restore bool // IsRestore()
	}{
		{0, Record{Facility: 0, Level: 5, Seq: 0, Usec: 0, Flags: "-",
			Message: "Linux version 6.18.44-fc-v669 (builder@sandboxing) (gcc (GCC) 15.3.0, GNU ld (GNU Binutils) 2.46) #1 SMP PREEMPT_DYNAMIC @0"}, false},
		{90, Record{Facility: 0, Level: 6, Seq: 90, Usec: 242990, Flags: "-",
			Message: "rcu: \tRCU restricting CPUs from NR_CPUS=256 to nr_cpu_ids=2."}, false},
		{194, Record{Facility: 0, Level: 6, Seq: 194, Usec: 296696, Flags: "-",
			Message: "acpi PNP0A08:00: PCIe port services disabled; not requesting _OSC control",
			Dict:    map[string]string{"SUBSYSTEM": "acpi", "DEVICE": "+acpi:PNP0A08:00"}}, false},
		{286, Record{Facility: 0, Level: 4, Seq: 286, Usec: 425421, Flags: "-",
			Message: "amd_pstate: The CPPC feature is supported but currently disabled by the BIOS.\nPlease enable it if your BIOS has the CPPC option."}, false},
		{319, Record{Facility: 0, Level: 7, Seq: 319, Usec: 470290, Flags: "-", Message: "  with arguments:"}, false},
		{340, Record{Facility: 0, Level: 5, Seq: 340, Usec: 1270039, Flags: "-",
			Message: "virtio_blk virtio1: [vda] new size: 536870912 512-byte logical blocks (275 GB/256 GiB)",
			Dict:    map[string]string{"SUBSYSTEM": "virtio", "DEVICE": "+virtio:virtio1"}}, false},
		{341, Record{Facility: 0, Level: 5, Seq: 341, Usec: 1270712, Flags: "-",
			Message: "random: crng reseeded due to virtual machine fork"}, true},
		{344, Record{Facility: 0, Level: 4, Seq: 344, Usec: 1043711363, Flags: "-", Message: synthUeventMessage}, false},
		{345, Record{Facility: 0, Level: 3, Seq: 345, Usec: 1043711451, Flags: "-",
			Message: "vmgenid VMGENCTR:00: uevent: failed to send synthetic uevent: -22",
			Dict:    map[string]string{"SUBSYSTEM": "platform", "DEVICE": "+platform:VMGENCTR:00"}}, false},
		// Written by root to /dev/kmsg as "<6>random: crng reseeded due to
		// virtual machine fork": the kernel forces facility 1.
		{410, Record{Facility: 1, Level: 6, Seq: 410, Usec: 1055112063, Flags: "-",
			Message: "random: crng reseeded due to virtual machine fork"}, false},
		{411, Record{Facility: 1, Level: 4, Seq: 411, Usec: 1055112080, Flags: "-", Message: "plain"}, false},
		// Written as "<0>hello zero".
		{412, Record{Facility: 1, Level: 0, Seq: 412, Usec: 1055112092, Flags: "-", Message: "hello zero"}, false},
		// The unprivileged forgery: uid 65534 in a user namespace mounted a
		// tmpfs with the fork text as its option. Facility 0, and it holds
		// the text, but the whole message is not the fork record.
		{1708, Record{Facility: 0, Level: 3, Seq: 1708, Usec: 1490883419, Flags: "-",
			Message: "tmpfs: Unknown parameter 'random: crng reseeded due to virtual machine fork'"}, false},
		// Root's copy at the kernel's own level, "<5>random: ...": the
		// kernel still forces facility 1.
		{1709, Record{Facility: 1, Level: 5, Seq: 1709, Usec: 1495219898, Flags: "-",
			Message: "random: crng reseeded due to virtual machine fork"}, false},
	}
	if len(recs) != len(tests) {
		t.Errorf("capture has %d records, the table covers %d", len(recs), len(tests))
	}
	for _, tt := range tests {
		rec, ok := recs[tt.seq]
		if !ok {
			t.Errorf("record %d missing from the capture", tt.seq)
			continue
		}
		got, err := ParseKmsg(rec)
		if err != nil {
			t.Errorf("ParseKmsg(%q): %v", rec, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseKmsg(%q)\n got %+v\nwant %+v", rec, got, tt.want)
		}
		if r := got.IsRestore(); r != tt.restore {
			t.Errorf("record %d: IsRestore() = %v, want %v", tt.seq, r, tt.restore)
		}
		if r := got.Matches(synthUevent); r != (tt.seq == 344) {
			t.Errorf("record %d: Matches(synth uevent record) = %v, want %v", tt.seq, r, tt.seq == 344)
		}
		if imitation := tt.seq == 410 || tt.seq == 1708 || tt.seq == 1709; got.isImitation() != imitation {
			t.Errorf("record %d: isImitation() = %v, want %v", tt.seq, got.isImitation(), imitation)
		}
	}
}

// TestRecordMatches: only the kernel's own record counts — facility 0, the
// level it is logged at, the whole text and nothing else — whatever a
// forger puts around the text or however close it comes.
func TestRecordMatches(t *testing.T) {
	for _, tt := range []struct {
		rec  string
		want bool
	}{
		{"5,1,2,-;random: crng reseeded due to virtual machine fork\n", true},
		// Header fields after flags change nothing.
		{"5,1,2,-,caller=T1;random: crng reseeded due to virtual machine fork\n", true},
		// Another level, or a facility other than the kernel's.
		{"6,1,2,-;random: crng reseeded due to virtual machine fork\n", false},
		{"3,1,2,-;random: crng reseeded due to virtual machine fork\n", false},
		{"13,1,2,-;random: crng reseeded due to virtual machine fork\n", false},
		{"8,1,2,-;random: crng reseeded due to virtual machine fork\n", false},
		// A prefix, a suffix, the text without the driver's prefix.
		{"5,1,2,-;tmpfs: Unknown parameter 'random: crng reseeded due to virtual machine fork'\n", false},
		{"5,1,2,-;x random: crng reseeded due to virtual machine fork\n", false},
		{"5,1,2,-;random: crng reseeded due to virtual machine fork \n", false},
		{"5,1,2,-;random: crng reseeded due to virtual machine fork'\n", false},
		{"5,1,2,-;random: crng reseeded due to virtual machine fork\\x0a\n", false},
		{"5,1,2,-;crng reseeded due to virtual machine fork\n", false},
		// A device dictionary: a dev_printk, not random.c's pr_notice.
		{"5,1,2,-;random: crng reseeded due to virtual machine fork\n SUBSYSTEM=platform\n DEVICE=+platform:VMGENCTR:00\n", false},
	} {
		r, err := ParseKmsg([]byte(tt.rec))
		if err != nil {
			t.Fatalf("ParseKmsg(%q): %v", tt.rec, err)
		}
		if got := r.IsRestore(); got != tt.want {
			t.Errorf("IsRestore(%q) = %v, want %v", tt.rec, got, tt.want)
		}
		if got := r.Matches(ForkRecord); got != tt.want {
			t.Errorf("Matches(ForkRecord) on %q = %v, want %v", tt.rec, got, tt.want)
		}
	}
}

func TestParseKmsgMatch(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want KmsgMatch
	}{
		{"<5>random: crng reseeded due to virtual machine fork", ForkRecord},
		{"<4>" + synthUeventMessage, synthUevent},
		{"<0>x", KmsgMatch{Level: 0, Message: "x"}},
	} {
		got, err := ParseKmsgMatch(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseKmsgMatch(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if s := got.String(); s != tt.in {
			t.Errorf("%+v.String() = %q, want %q", got, s, tt.in)
		}
	}
	// A facility other than 0, no level, no text, a bare substring: all
	// refused, so a test match can only name one whole kernel record.
	for _, in := range []string{"", "crng reseeded", "<5>", "<8>text", "<13>text", "<a>text", "5>text", "<5text", "<-1>text"} {
		if m, err := ParseKmsgMatch(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseKmsgMatch(%q) = %+v, %v; want ErrMalformed", in, m, err)
		}
	}
}

func TestParseKmsgForms(t *testing.T) {
	tests := []struct {
		in   string
		want Record
	}{
		// Fields after flags (caller= with CONFIG_PRINTK_CALLER) are ignored.
		{"6,7,8,c,caller=T1;hi\n", Record{Level: 6, Seq: 7, Usec: 8, Flags: "c", Message: "hi"}},
		{"191,1,2,-;\n", Record{Facility: 23, Level: 7, Seq: 1, Usec: 2, Flags: "-"}},
		// The kernel escapes the backslash itself; an escape that is
		// cut short or not hex is kept as it is.
		{`0,1,2,-;a\x5cb \xzz \x4` + "\n", Record{Seq: 1, Usec: 2, Flags: "-", Message: `a\b \xzz \x4`}},
		{"0,1,2,-;m\n K=a\\x0ab\n E=\n", Record{Seq: 1, Usec: 2, Flags: "-", Message: "m",
			Dict: map[string]string{"K": "a\nb", "E": ""}}},
	}
	for _, tt := range tests {
		got, err := ParseKmsg([]byte(tt.in))
		if err != nil {
			t.Errorf("ParseKmsg(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseKmsg(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseKmsgMalformed(t *testing.T) {
	for _, in := range []string{
		"",
		"\n",
		"6,1,2,-;no newline",
		"6,1,2,-,no semicolon\n",
		"6,1,2;three fields\n",
		"x,1,2,-;bad prio\n",
		"-6,1,2,-;negative prio\n",
		"70000,1,2,-;prio too large\n",
		"6,y,2,-;bad seq\n",
		"6,1,z,-;bad usec\n",
		"6,1,2,-;m\nK=no leading space\n",
		"6,1,2,-;m\n no equals\n",
		"6,1,2,-;m\n =empty key\n",
		"6,1,2,-;m\n\n",
	} {
		if r, err := ParseKmsg([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseKmsg(%q) = %+v, %v; want an error wrapping ErrMalformed", in, r, err)
		}
	}
}

func FuzzParseKmsg(f *testing.F) {
	for _, rec := range kmsgCapture(f) {
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseKmsg(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if r.Facility < 0 || r.Level < 0 || r.Level > 7 {
			t.Fatalf("ParseKmsg(%q) = %+v: priority out of range", b, r)
		}
	})
}
