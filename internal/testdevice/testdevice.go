// Package testdevice lets tests drive this machine's real VMGENID device
// (synthetic uevents, kernel log records) one at a time.
//
// go test runs packages in parallel. A test that counts the restores a
// follower or a provider sees must not see the synthetic events of a test
// in another package, so every test that writes to the device, or counts
// what the device produces, holds an exclusive flock on one well-known file
// for its whole duration.
package testdevice

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// UeventPath is the uevent file of the VMGENID platform device on a
// Firecracker guest with Linux 6.10 or later.
const UeventPath = "/sys/bus/platform/devices/VMGENCTR:00/uevent"

// RequireEnv names the environment variable that turns the skips of this
// package into failures: .ci/run sets SNAPSAFE_REQUIRE_DEVICE=1 on CI's
// machine, which is root and has the device, so that a test that should
// have driven the real device can never pass by skipping.
const RequireEnv = "SNAPSAFE_REQUIRE_DEVICE"

// Skip skips the test because this machine lacks root or the VMGENID
// device, with a message that says why and what to do; with RequireEnv set
// to 1 it fails the test instead.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1: this machine must have root and the VMGENID device)", msg, RequireEnv)
	}
	t.Skip(msg)
}

// RequireRoot skips (see Skip) unless the test runs as root; why says what
// root is needed for.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (%s): run the tests as root", why)
	}
}

// Require skips (see Skip) unless the test runs as root on a machine with
// the device, then takes the device for the rest of the test.
func Require(t testing.TB) {
	t.Helper()
	RequireRoot(t, "to write the VMGENID device's sysfs uevent file and read /dev/kmsg")
	if _, err := os.Stat(UeventPath); err != nil {
		Skip(t, "needs a VMGENID device bound as a platform device (Firecracker guest, Linux 6.10+): %v", err)
	}
	Lock(t)
}

// Lock takes the device for the rest of the test, waiting for any other
// test process that holds it.
func Lock(t testing.TB) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "snapsafe-vmgenid-tests.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("opening the device test lock: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("locking %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
}

// Write writes s to the device's uevent file in one write(2) and returns
// the kernel's answer.
func Write(s string) error {
	f, err := os.OpenFile(UeventPath, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(s)
	if err := f.Close(); err != nil && werr == nil {
		return err
	}
	return werr
}

// Synthesize writes a synthetic change uevent with a fresh UUID (and the
// given KEY=VALUE arguments) and returns the UUID.
func Synthesize(t testing.TB, args ...string) string {
	t.Helper()
	id := uuid.NewString()
	if err := Write(strings.Join(append([]string{"change", id}, args...), " ")); err != nil {
		t.Fatalf("writing %s: %v", UeventPath, err)
	}
	return id
}

// MalformedMessage is the record the kernel logs, at facility 0, when root
// writes a malformed synthetic uevent to the device — lib/kobject_uevent.c's
// pr_warn("synth uevent: %s: %s\n", devpath, "incorrect uevent action
// arguments") — written "<LEVEL>TEXT" as dmesg -r prints it, the form the
// ACPI source's test match (snapsafed --test-kmsg-match) takes: a
// kernel-log record tests can cause on demand, and no process can forge.
// (The kernel then logs a second record, vmgenid's dev_err "uevent: failed
// to send synthetic uevent: -22", which does not match.)
const MalformedMessage = "<4>synth uevent: /devices/platform/VMGENCTR:00: incorrect uevent action arguments"

// LogMalformed makes the kernel log one MalformedMessage record.
func LogMalformed(t testing.TB) {
	t.Helper()
	if err := Write("change not-a-uuid extra"); err == nil {
		t.Fatal("the kernel accepted a malformed synthetic uevent")
	}
}

// ForgeUnprivileged plays the unprivileged attacker on the kernel log: as
// uid 65534, in a user and mount namespace of its own, it mounts a tmpfs
// with text as its option, and the kernel logs, at facility 0 (level 3),
// "tmpfs: Unknown parameter '<text>'". It fails the test unless the kernel
// logged exactly that record, so that a test using it cannot pass because
// the attack did not happen. It needs root (to switch to uid 65534),
// setpriv and unshare (util-linux), and unprivileged user namespaces.
func ForgeUnprivileged(t testing.TB, text string) {
	t.Helper()
	RequireRoot(t, "to run the forgery as uid 65534 and read /dev/kmsg")
	for _, tool := range []string{"setpriv", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			Skip(t, "needs %s (util-linux) to play the unprivileged user: %v", tool, err)
		}
	}
	mnt, err := os.MkdirTemp("", "snapsafe-forge-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt)
	if err := os.Chmod(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	kmsg, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/kmsg: %v", err)
	}
	defer unix.Close(kmsg)
	if _, err := unix.Seek(kmsg, 0, unix.SEEK_END); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "-o", text, "none", mnt)
	out, merr := cmd.CombinedOutput()
	if merr == nil {
		t.Fatalf("uid 65534 mounted a tmpfs with option %q; want the kernel to refuse it:\n%s", text, out)
	}
	want := ";tmpfs: Unknown parameter '" + text + "'\n"
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(kmsg, buf)
		if err == unix.EAGAIN {
			t.Fatalf("the kernel logged no %q record for uid 65534's mount (%v: %s); the forgery did not happen", want[1:len(want)-1], merr, out)
		}
		if err == unix.EPIPE {
			continue // records were overwritten; read on from the oldest left
		}
		if err != nil {
			t.Fatalf("reading /dev/kmsg: %v", err)
		}
		if rec := string(buf[:n]); strings.HasPrefix(rec, "3,") && strings.HasSuffix(rec, want) {
			return
		}
	}
}
