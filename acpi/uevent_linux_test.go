package acpi

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"golang.org/x/sys/unix"
)

// ours returns the index of the UUID in ids that e's Detail names, or -1
// for an event this test did not cause (another process on the machine may
// write synthetic events too).
func ours(e Event, ids []string) int {
	for i, id := range ids {
		if strings.Contains(e.Detail, id) {
			return i
		}
	}
	return -1
}

// TestIntegrationUeventSynthetic writes synthetic change events to the real
// VMGENID device: a follower with AcceptSynthetic reports each exactly once,
// a follower without it reports none.
func TestIntegrationUeventSynthetic(t *testing.T) {
	requireVMGenID(t)
	accepting, err := NewUeventFollower(UeventOptions{AcceptSynthetic: true})
	if err != nil {
		t.Fatal(err)
	}
	defer accepting.Close()
	strict, err := NewUeventFollower(UeventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	ra, rs := start(t, accepting.Run), start(t, strict.Run)

	var ids []string
	var got []Event
	for i := 0; i < 3; i++ {
		ids = append(ids, testdevice.Synthesize(t))
		for {
			e := ra.next(t)
			if ours(e, ids) >= 0 {
				got = append(got, e)
				break
			}
		}
	}
	waitDrained(t, accepting.c)
	waitDrained(t, strict.c)
	got = append(got, ra.stop(t)...)
	if events := rs.stop(t); len(events) != 0 {
		t.Errorf("the follower without AcceptSynthetic reported %+v", events)
	}

	n := 0
	for _, e := range got {
		i := ours(e, ids)
		if i < 0 {
			continue
		}
		if i != n || e.Signal != SignalUevent || e.Lost || e.Seq == 0 {
			t.Errorf("event %+v: want the uevent event for write %d", e, n)
		}
		n++
	}
	if n != len(ids) {
		t.Errorf("got %d events for %d synthetic uevents: %+v", n, len(ids), got)
	}
}

// TestIntegrationUeventSyntheticArgs checks how an added key arrives: the
// kernel renames it SYNTH_ARG_KEY.
func TestIntegrationUeventSyntheticArgs(t *testing.T) {
	requireVMGenID(t)
	c, err := openUevent(ueventRcvbuf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	id := testdevice.Synthesize(t, "FOO=bar")
	if err := c.setReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ueventMaxMessage)
	for {
		n, sender, err := c.recv(buf)
		if err != nil {
			t.Fatalf("waiting for the uevent: %v", err)
		}
		u, err := ParseUevent(buf[:n])
		if err != nil {
			t.Fatalf("from sender %d: %v", sender, err)
		}
		if u.Env["SYNTH_UUID"] != id {
			continue
		}
		if sender != 0 {
			t.Errorf("sender port %d, want 0 (the kernel)", sender)
		}
		if u.Env["SYNTH_ARG_FOO"] != "bar" || u.Env["FOO"] != "" {
			t.Errorf("env %v: want SYNTH_ARG_FOO=bar and no FOO", u.Env)
		}
		if u.DevPath != "/devices/platform/VMGENCTR:00" || !u.IsRestore(true) || u.IsRestore(false) {
			t.Errorf("uevent %+v: want a synthetic restore of the platform device", u)
		}
		return
	}
}

// TestIntegrationUeventForged sends a well-formed NEW_VMGENID=1 uevent to the
// kernel's group from a process, as root may: followers must ignore it, and
// log that once.
func TestIntegrationUeventForged(t *testing.T) {
	requireRoot(t)
	log, logBuf := testLogger()
	f, err := newUeventFollower(UeventOptions{AcceptSynthetic: true, Logger: log}, ueventRcvbuf)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	observer, err := openUevent(ueventRcvbuf)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.close()
	r := start(t, f.Run)

	sender, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sender)
	if err := unix.Bind(sender, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	msg := readTestdata(t, "uevent-linux68-newvmgenid.bin")
	for i := 0; i < 2; i++ {
		err := unix.Sendto(sender, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: ueventGroupKernel})
		if errors.Is(err, unix.EPERM) {
			testdevice.Skip(t, "this kernel does not let this process send to the uevent group (needs CAP_NET_ADMIN in the initial namespace): nothing to forge")
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	// The observer proves the messages were delivered to the group.
	if err := observer.setReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ueventMaxMessage)
	for seen := 0; seen < 2; {
		n, port, err := observer.recv(buf)
		if err != nil {
			t.Fatalf("observer: %v", err)
		}
		if string(buf[:n]) == string(msg) {
			if port == 0 {
				t.Fatal("a message sent by a process arrived with the kernel's port id 0")
			}
			seen++
		}
	}
	waitDrained(t, f.c)
	if events := r.stop(t); len(events) != 0 {
		t.Errorf("forged uevents produced events: %+v", events)
	}
	if n := strings.Count(logBuf.String(), "not the kernel"); n != 1 {
		t.Errorf("logged %d warnings about the forged messages, want 1:\n%s", n, logBuf)
	}
}

// TestIntegrationUeventOverrun overruns a tiny receive buffer with real
// synthetic uevents: the follower reports one loss, then carries on.
func TestIntegrationUeventOverrun(t *testing.T) {
	requireVMGenID(t)
	// The kernel raises a tiny buffer to its minimum, a few KiB: room for
	// two or three uevents.
	f, err := newUeventFollower(UeventOptions{AcceptSynthetic: true}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	const burst = 32
	for i := 0; i < burst; i++ {
		ids = append(ids, testdevice.Synthesize(t))
	}
	r := start(t, f.Run)
	lost, restores := 0, 0
	for lost == 0 {
		e := r.next(t)
		switch {
		case e.Lost:
			lost++
		case ours(e, ids) >= 0:
			restores++
		}
	}
	waitDrained(t, f.c)
	ids = append(ids[:0], testdevice.Synthesize(t))
	for {
		e := r.next(t)
		if e.Lost {
			lost++
		}
		if ours(e, ids) >= 0 {
			break
		}
	}
	for _, e := range r.stop(t) {
		if e.Lost {
			lost++
		}
	}
	t.Logf("%d of %d uevents arrived before the loss was reported", restores, burst)
	if lost != 1 {
		t.Errorf("%d loss events for one overrun, want 1", lost)
	}
	if restores >= burst {
		t.Errorf("%d of %d uevents arrived through a tiny buffer: no overrun happened", restores, burst)
	}
}
