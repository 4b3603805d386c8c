package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
)

// The tests here run the real binaries, as a user would: a provider
// process and several snapsafectl processes.

var bin string // folder holding the built snapsafed and snapsafectl

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snapsafe-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Other users (uid 65534 below) must be able to run the binaries.
	os.Chmod(dir, 0o755)
	for _, cmd := range []string{"snapsafed", "snapsafectl"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "github.com/snapsafe/snapsafe/cmd/"+cmd).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", cmd, err, out)
			os.Exit(1)
		}
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stateDir makes a state directory every user can reach.
func stateDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "snapsafe-state-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type provider struct {
	cmd *exec.Cmd
	log *syncBuffer
	// cred is the provider's user when it is not this process's: clients
	// trust only a directory of root or their own user, so the test's
	// snapsafectl runs as that user too.
	cred *syscall.Credential
}

// startProvider starts snapsafed on dir with the manual backend and args,
// and waits until it serves status.
func startProvider(t *testing.T, dir string, args ...string) *provider {
	t.Helper()
	return startProviderAs(t, nil, dir, args...)
}

// startProviderAs is startProvider as cred (nil: this process's user); it
// checks readiness as cred too, since a client trusts only a directory of
// root or its own user.
func startProviderAs(t *testing.T, cred *syscall.Credential, dir string, args ...string) *provider {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "snapsafed"), append([]string{"--dir", dir, "--backend", "manual"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	log := new(syncBuffer)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &provider{cmd: cmd, log: log, cred: cred}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("provider log:\n%s", p.log)
		}
	})
	// Ready means the status command works.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, _, code := ctlAs(t, cred, dir, "status"); code == 0 {
			return p
		}
		if time.Now().After(end) {
			t.Fatalf("provider not ready after 10s:\n%s", log)
		}
	}
}

func (p *provider) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	err := p.cmd.Wait()
	if sig == syscall.SIGKILL {
		return
	}
	if err != nil {
		t.Fatalf("provider exited with %v after %v:\n%s", err, sig, p.log)
	}
}

// ctl runs snapsafectl and returns stdout, stderr and the exit code.
func ctl(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	return ctlAs(t, nil, dir, args...)
}

// ctlAs is ctl as cred (nil: this process's user).
func ctlAs(t *testing.T, cred *syscall.Credential, dir string, args ...string) (string, string, int) {
	t.Helper()
	return runAs(t, cred, nil, "snapsafectl", append([]string{"--dir", dir}, args...)...)
}

func mustCtl(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errs, code := ctl(t, dir, args...)
	if code != 0 {
		t.Fatalf("snapsafectl %v exited %d: %s", args, code, errs)
	}
	return strings.TrimSpace(out)
}

type statusJSON struct {
	Generation  uint64 `json:"generation"`
	Watchers    int    `json:"watchers"`
	Outdated    int    `json:"outdated"`
	Backend     string `json:"backend"`
	Epoch       string `json:"epoch"`
	ProviderPID int    `json:"provider_pid"`
	Waiting     int    `json:"waiting"`
	Refused     uint64 `json:"refused"`
	Reason      string `json:"reason"`
	Source      struct {
		Why               string `json:"why"`
		DetectsRestores   bool   `json:"detects_restores"`
		IgnoredSynthetic  uint64 `json:"ignored_synthetic"`
		IgnoredImitations uint64 `json:"ignored_imitations"`
		KmsgMatch         string `json:"kmsg_match"`
	} `json:"source"`
}

func status(t *testing.T, dir string) statusJSON {
	t.Helper()
	return statusAs(t, nil, dir)
}

// statusAs runs snapsafectl status --json with cred (nil: this process's).
func statusAs(t *testing.T, cred *syscall.Credential, dir string) statusJSON {
	t.Helper()
	out, errs, code := ctlAs(t, cred, dir, "status", "--json")
	if code != 0 {
		t.Fatalf("snapsafectl status --json exited %d: %s", code, errs)
	}
	var s statusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// syncBuffer is a bytes.Buffer that a child process may write while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWatch starts snapsafectl watch; its output goes to the buffer.
func startWatch(t *testing.T, dir string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	return startWatchAs(t, nil, dir, args...)
}

// startWatchAs is startWatch as cred (nil: this process's user).
func startWatchAs(t *testing.T, cred *syscall.Credential, dir string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "snapsafectl"), append([]string{"--dir", dir, "watch"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out := new(syncBuffer)
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, out
}

// TestIntegrationCLIContract walks the provider-core issue's bar.
func TestIntegrationCLIContract(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)

	s := status(t, dir)
	if s.Generation < 1 || s.Backend != "manual" || s.ProviderPID != p.cmd.Process.Pid || s.Epoch == "" {
		t.Fatalf("status = %+v", s)
	}
	fi, err := os.Stat(filepath.Join(dir, "generation"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 || fi.Size() < 4096 {
		t.Fatalf("page file mode %v size %d", fi.Mode().Perm(), fi.Size())
	}
	if got := mustCtl(t, dir, "bump", "--min", "100"); got != "100" {
		t.Fatalf("bump --min 100 printed %q", got)
	}
	if got := mustCtl(t, dir, "bump", "--min", "50"); got != "101" {
		t.Fatalf("bump --min 50 printed %q", got)
	}
	// The bricking bump: refused with exit 1 and a message naming the bound;
	// the generation stays and the next bump works.
	if out, errs, code := ctl(t, dir, "bump", "--min", "18446744073709551614"); code != 1 || out != "" || !strings.Contains(errs, "at most 4294967397") {
		t.Fatalf("bump --min 2^64-2 exited %d, stdout %q, stderr %q; want 1 and the bound", code, out, errs)
	}
	if got := mustCtl(t, dir, "bump"); got != "102" {
		t.Fatalf("bump after a refused one printed %q, want 102", got)
	}

	lazy, _ := startWatch(t, dir)
	_, ackOut := startWatch(t, dir, "--ack")
	eventually.True(t, "two watchers", func() bool { return status(t, dir).Watchers == 2 })
	mustCtl(t, dir, "bump")
	eventually.True(t, "the acking watcher to ack", func() bool { return status(t, dir).Outdated == 1 })
	if _, _, code := ctl(t, dir, "wait", "--timeout", "300ms"); code != 3 {
		t.Fatalf("wait with an outdated watcher exited %d, want 3", code)
	}

	// A bump during the wait: exit 4.
	wait := exec.Command(filepath.Join(bin, "snapsafectl"), "--dir", dir, "wait", "--timeout", "10s")
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the wait to register", func() bool { return status(t, dir).Waiting == 1 })
	mustCtl(t, dir, "bump")
	if err := wait.Wait(); wait.ProcessState.ExitCode() != 4 {
		t.Fatalf("wait across a bump: %v, want exit 4", err)
	}

	// Killing the outdated watcher releases the wait.
	lazy.Process.Kill()
	lazy.Wait()
	eventually.True(t, "no outdated watcher", func() bool { return status(t, dir).Outdated == 0 })
	if _, errs, code := ctl(t, dir, "wait", "--timeout", "5s"); code != 0 {
		t.Fatalf("wait with no outdated watcher exited %d: %s", code, errs)
	}
	if s := status(t, dir); s.Watchers != 1 {
		t.Fatalf("watchers = %d after the kill, want 1", s.Watchers)
	}
	if lines := strings.Fields(ackOut.String()); len(lines) != 2 || lines[0] != "103" || lines[1] != "104" {
		t.Fatalf("acking watcher printed %q, want 103 and 104", ackOut)
	}

	// Privilege: uid 65534 may read status but not bump.
	if os.Geteuid() != 0 {
		t.Log("skipping the uid 65534 checks: they need root to switch user (run the tests as root)")
	} else {
		nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
		before := status(t, dir).Generation
		_, errs, code := ctlAs(t, nobody, dir, "bump")
		if code != 5 || !strings.Contains(errs, "bump") {
			t.Fatalf("bump as uid 65534 exited %d (%q), want 5", code, errs)
		}
		if g := status(t, dir).Generation; g != before {
			t.Fatalf("refused bump moved the generation from %d to %d", before, g)
		}
		if out, errs, code := ctlAs(t, nobody, dir, "status", "--json"); code != 0 || !strings.Contains(out, `"generation"`) {
			t.Fatalf("status as uid 65534 exited %d: %s", code, errs)
		}
	}

	// Restarts never take the generation back.
	before := status(t, dir).Generation
	p.stop(t, syscall.SIGTERM)
	if _, errs, code := ctl(t, dir, "status"); code != 6 || !strings.Contains(errs, "snapsafed") {
		t.Fatalf("status with no provider exited %d (%q), want 6 naming snapsafed", code, errs)
	}
	p = startProvider(t, dir)
	afterClean := status(t, dir).Generation
	if afterClean <= before {
		t.Fatalf("generation %d after a clean restart, was %d", afterClean, before)
	}
	p.stop(t, syscall.SIGKILL)
	startProvider(t, dir)
	if g := status(t, dir).Generation; g <= afterClean {
		t.Fatalf("generation %d after kill -9 and restart, was %d", g, afterClean)
	}
}

// TestIntegrationRefused: a user past its bound on connections gets the
// provider's refusal from snapsafectl as one line and exit 1 (a provider
// runs: not 6, "no provider"), however often it tries; root's commands keep
// working; the provider logs one line for that user and counts every
// refusal.
func TestIntegrationRefused(t *testing.T) {
	testdevice.RequireRoot(t, "to run snapsafectl as another user")
	dir := stateDir(t)
	p := startProvider(t, dir, "--max-clients", "8", "--max-clients-per-uid", "2", "--reserved-clients", "2")
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	// A watcher of uid 65534 holds both its connections (attach and watch).
	w := exec.Command(filepath.Join(bin, "snapsafectl"), "--dir", dir, "watch", "--ack")
	w.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	eventually.True(t, "uid 65534's watcher", func() bool { return status(t, dir).Watchers == 1 })

	for _, cmd := range [][]string{{"status"}, {"wait"}, {"watch"}, {"status", "--json"}} {
		out, errs, code := ctlAs(t, nobody, dir, cmd...)
		if code != 1 || out != "" || strings.Count(errs, "\n") != 1 ||
			!strings.Contains(errs, "refused the connection: uid 65534 already holds its maximum of 2 connections") || !strings.Contains(errs, "--max-clients-per-uid") {
			t.Fatalf("snapsafectl %v as uid 65534 past its bound: exit %d, stdout %q, stderr %q; want 1 and the provider's reason in one line", cmd, code, out, errs)
		}
	}
	if s := status(t, dir); s.Refused != 4 {
		t.Fatalf("status refused = %d, want 4", s.Refused)
	}
	// Root is not bound by uid 65534's share.
	mustCtl(t, dir, "bump")
	if _, errs, code := ctl(t, dir, "wait", "--timeout", "10s"); code != 0 {
		t.Fatalf("root's wait after uid 65534's watcher acked: exit %d: %s", code, errs)
	}
	if n := strings.Count(p.log.String(), "refusing a client"); n != 1 {
		t.Fatalf("%d refusal lines in the provider's log for 4 refusals of one user, want 1:\n%s", n, p.log)
	}
}

// TestDaemonBoundFlags: bounds that cannot work are usage errors (exit 2)
// naming the flag, before snapsafed touches anything.
func TestDaemonBoundFlags(t *testing.T) {
	dir := stateDir(t)
	for _, args := range [][]string{
		{"--max-clients", "0"},
		{"--max-clients-per-uid", "-1"},
		{"--max-region-bytes-per-uid", "0"},
		{"--max-clients", "8", "--reserved-clients", "8"},
	} {
		cmd := exec.Command(filepath.Join(bin, "snapsafed"), append([]string{"--dir", dir, "--backend", "manual"}, args...)...)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), args[len(args)-2]) || strings.Count(string(out), "\n") != 1 {
			t.Errorf("snapsafed %v: exit %d, output %q; want 2 and one line naming %s", args, code, out, args[len(args)-2])
		}
	}
}

// TestIntegrationBumpPrivilege: besides root, CAP_CHECKPOINT_RESTORE and
// membership of --bump-group allow a forced bump.
func TestIntegrationBumpPrivilege(t *testing.T) {
	testdevice.RequireRoot(t, "to run snapsafectl as other users")
	dir := stateDir(t)
	startProvider(t, dir, "--bump-group", "nogroup") // gid 65534 on Debian
	const capCheckpointRestore = 40
	for _, tc := range []struct {
		name string
		proc *syscall.SysProcAttr
		want int
	}{
		{"plain user", &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 1}}, 5},
		{"supplementary bump group", &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 1, Groups: []uint32{65534}}}, 0},
		{"primary bump group", &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}, 0},
		{"CAP_CHECKPOINT_RESTORE", &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: 65534, Gid: 1},
			AmbientCaps: []uintptr{capCheckpointRestore},
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := status(t, dir).Generation
			cmd := exec.Command(filepath.Join(bin, "snapsafectl"), "--dir", dir, "bump")
			cmd.SysProcAttr = tc.proc
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tc.want {
				t.Fatalf("bump exited %d, want %d: %s", code, tc.want, out)
			}
			after := status(t, dir).Generation
			if moved := after != before; moved != (tc.want == 0) {
				t.Fatalf("generation %d -> %d with exit %d", before, after, tc.want)
			}
		})
	}
}

func TestIntegrationWatchExec(t *testing.T) {
	dir := stateDir(t)
	startProvider(t, dir)
	marks := filepath.Join(dir, "marks")
	// The hook fails for even generations: those must stay unacknowledged.
	hook := `echo $SNAPSAFE_GENERATION >> ` + marks + `; test $((SNAPSAFE_GENERATION % 2)) = 1`
	cmd, out := startWatch(t, dir, "--ack", "--exec", hook, "--count", "2", "--timeout", "20s")
	eventually.True(t, "the watcher", func() bool { return status(t, dir).Watchers == 1 })
	g := status(t, dir).Generation
	next := g + 1
	if next%2 == 1 {
		next++ // start on an even generation
	}
	mustCtl(t, dir, "bump", "--min", strconv.FormatUint(next, 10))
	eventually.True(t, "the hook to run", func() bool { b, _ := os.ReadFile(marks); return len(b) > 0 })
	if s := status(t, dir); s.Outdated != 1 {
		t.Fatalf("outdated = %d after a failed hook, want 1", s.Outdated)
	}
	mustCtl(t, dir, "bump") // odd: the hook succeeds and the watcher acks
	// One run failed: watch exits 1 once --count is reached.
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("watch --count 2 with a failed run: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(out.String(), "some runs of --exec failed") {
		t.Fatalf("the failed run is not summed up: %s", out)
	}
	b, _ := os.ReadFile(marks)
	if got := strings.Fields(string(b)); len(got) != 2 || got[0] != strconv.FormatUint(next, 10) {
		t.Fatalf("hook saw generations %q, want %d then %d", got, next, next+1)
	}
	if !strings.Contains(out.String(), "not acknowledging") {
		t.Fatalf("failed hook not reported: %s", out)
	}
}

func TestIntegrationWatchTimeout(t *testing.T) {
	dir := stateDir(t)
	startProvider(t, dir)
	if _, _, code := ctl(t, dir, "watch", "--timeout", "100ms"); code != 3 {
		t.Fatalf("watch --timeout with no bump exited %d, want 3", code)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := stateDir(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"bump", "--min", "minus-one"},
		{"status", "extra"},
		{"watch", "--count", "-1"},
	} {
		_, errs, code := ctl(t, dir, args...)
		if code != 2 {
			t.Errorf("snapsafectl %v exited %d, want 2 (%s)", args, code, errs)
		}
		if errs == "" {
			t.Errorf("snapsafectl %v printed no error", args)
		}
	}
	// No provider: exit 6, for every command.
	for _, cmd := range []string{"status", "bump", "wait", "watch"} {
		if _, _, code := ctl(t, dir, cmd); code != 6 {
			t.Errorf("snapsafectl %s with no provider exited %d, want 6", cmd, code)
		}
	}
}

// TestIntegrationACPIBar walks the sources issue's bar on a machine with a
// real VMGENID device: auto picks acpi; five synthetic uevents make exactly
// five bumps with --accept-synthetic, and none without it; a user-written
// copy of the kernel's fork record never bumps.
func TestIntegrationACPIBar(t *testing.T) {
	testdevice.Require(t)
	if _, err := os.Stat("/dev/vmclock0"); err == nil {
		t.Skip("this machine has a VMClock device, which auto prefers over acpi")
	}
	dir := stateDir(t)
	p := startProvider(t, dir, "--backend", "auto", "--accept-synthetic")
	if s := status(t, dir); s.Backend != "acpi" {
		t.Fatalf("auto picked backend %q, want acpi", s.Backend)
	}
	before := status(t, dir).Generation
	for range 5 {
		testdevice.Synthesize(t)
	}
	eventually.True(t, "five bumps", func() bool { return status(t, dir).Generation >= before+5 })
	// Fence: a sixth event down the same FIFO path must bump exactly once
	// more; anything the first five caused late arrives before it.
	testdevice.Synthesize(t)
	eventually.True(t, "the fence's bump", func() bool { return status(t, dir).Generation >= before+6 })
	if g := status(t, dir).Generation; g != before+6 {
		t.Fatalf("five synthetic uevents and a fence moved the generation from %d to %d, want +6", before, g)
	}
	p.stop(t, syscall.SIGTERM)

	// Without --accept-synthetic: neither the synthetic uevents nor a
	// user-written copy of the fork record bump. Fences, one per path,
	// show that the provider has judged them: the uevent follower counts
	// the synthetic events it ignores, in the order the kernel sent them;
	// on the kernel log, a record the provider is told to count follows
	// the copy, and must be the one and only bump.
	startProvider(t, dir, "--backend", "acpi", "--test-kmsg-match", testdevice.MalformedMessage)
	before = status(t, dir).Generation
	for range 5 {
		testdevice.Synthesize(t)
	}
	if err := os.WriteFile("/dev/kmsg", []byte("<5>random: crng reseeded due to virtual machine fork\n"), 0); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "five ignored synthetic uevents", func() bool { return status(t, dir).Source.IgnoredSynthetic == 5 })
	testdevice.LogMalformed(t)
	eventually.True(t, "the kernel-log fence's bump", func() bool { return status(t, dir).Generation >= before+1 })
	s := status(t, dir)
	if s.Generation != before+1 {
		t.Fatalf("without --accept-synthetic, five synthetic uevents, a user-written fork record and a fence moved the generation from %d to %d, want +1 (the fence)", before, s.Generation)
	}
	if s.Source.IgnoredSynthetic != 5 || s.Source.IgnoredImitations != 1 {
		t.Fatalf("status counts %d ignored synthetic uevents and %d ignored imitations, want 5 and 1", s.Source.IgnoredSynthetic, s.Source.IgnoredImitations)
	}
}

// TestIntegrationForgedRestoreNoBump plays the unprivileged user who makes
// the kernel itself log the fork text at facility 0 — a tmpfs mount option
// in a user namespace of its own gives "tmpfs: Unknown parameter '<text>'" —
// and root writing the exact record, at the kernel's level, to /dev/kmsg.
// Neither bumps the provider: after both, a fence on the same path (a record
// the provider is told to count) moves the generation by exactly one.
func TestIntegrationForgedRestoreNoBump(t *testing.T) {
	testdevice.Require(t)
	dir := stateDir(t)
	startProvider(t, dir, "--backend", "acpi", "--test-kmsg-match", testdevice.MalformedMessage)
	before := status(t, dir).Generation
	const fork = "random: crng reseeded due to virtual machine fork"
	testdevice.ForgeUnprivileged(t, fork)
	if err := os.WriteFile("/dev/kmsg", []byte("<5>"+fork+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	// Both forgeries judged, one way or the other; then the fence.
	eventually.True(t, "the two forgeries to be judged", func() bool {
		s := status(t, dir)
		return s.Source.IgnoredImitations+(s.Generation-before) == 2
	})
	testdevice.LogMalformed(t)
	eventually.True(t, "the fence's bump", func() bool { return status(t, dir).Generation >= before+1 })
	if s := status(t, dir); s.Generation != before+1 || s.Source.IgnoredImitations != 2 {
		t.Fatalf("two forged fork records and a fence moved the generation from %d to %d (%d imitations ignored); want +1 (the fence), and 2", before, s.Generation, s.Source.IgnoredImitations)
	}
}

// nobodyDir makes a state directory owned by uid 65534, for a provider
// running as that user.
func nobodyDir(t *testing.T) string {
	t.Helper()
	dir := stateDir(t)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestIntegrationBlindBackend runs snapsafed as uid 65534, which cannot read
// the kernel log, on a kernel that sends no VMGENID uevent: it can see no
// restore. An explicit --backend acpi refuses to start, in one line that
// says why and what to do; --backend auto starts on the manual backend and
// says, in its first log line and in status, that restores will not be
// detected, and why.
func TestIntegrationBlindBackend(t *testing.T) {
	testdevice.RequireRoot(t, "to run snapsafed as uid 65534")
	if _, err := os.Stat(testdevice.UeventPath); err != nil {
		testdevice.Skip(t, "needs a VMGENID device bound as a platform device (Firecracker guest, Linux 6.10+): %v", err)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/dmesg_restrict"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skipf("needs kernel.dmesg_restrict=1, so that uid 65534 cannot read the kernel log (%q, %v)", b, err)
	}
	if _, err := os.Stat("/dev/vmclock0"); err == nil {
		t.Skip("this machine has a VMClock device, which auto would pick")
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	dir := nobodyDir(t)

	for _, args := range [][]string{{"--backend", "acpi"}, {"--backend", "acpi", "--accept-synthetic"}} {
		// A provider that starts anyway is killed after the timeout.
		ctx, cancel := context.WithTimeout(context.Background(), eventually.Timeout)
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "snapsafed"), append([]string{"--dir", dir}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		cmd.Run()
		cancel()
		msg := errb.String()
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			t.Fatalf("snapsafed %v as uid 65534 exited %d, want 1:\n%s", args, code, msg)
		}
		if !strings.HasPrefix(msg, "snapsafed: --backend acpi: cannot see restores here: /dev/kmsg is not readable (run as root or with CAP_SYSLOG) and this kernel (") ||
			!strings.HasSuffix(msg, "sends no VMGENID uevent"+map[bool]string{true: " (synthetic uevents are a test hook, not restores)"}[len(args) == 3]+"; use --backend auto or manual\n") ||
			strings.Count(msg, "\n") != 1 {
			t.Fatalf("snapsafed %v as uid 65534 said %q; want one line saying it cannot see restores, why, and what to do", args, msg)
		}
	}

	cmd := exec.Command(filepath.Join(bin, "snapsafed"), "--dir", dir, "--backend", "auto")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	log := new(syncBuffer)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("provider log:\n%s", log)
		}
	})
	eventually.True(t, "the provider as uid 65534", func() bool {
		_, _, code := ctlAs(t, nobody, dir, "status")
		return code == 0
	})
	s := statusAs(t, nobody, dir)
	const why = "/dev/kmsg is not readable (run as root or with CAP_SYSLOG) and this kernel ("
	if s.Backend != "manual" || s.Source.DetectsRestores ||
		!strings.Contains(s.Source.Why, "restores will not be detected") || !strings.Contains(s.Source.Why, why) {
		t.Fatalf("status as uid 65534: backend %q, detects_restores %v, why %q; want manual, false, and why", s.Backend, s.Source.DetectsRestores, s.Source.Why)
	}
	first, _, _ := strings.Cut(log.String(), "\n")
	if !strings.Contains(first, "level=WARN") || !strings.Contains(first, "restores will not be detected") ||
		!strings.Contains(first, "backend=manual") || !strings.Contains(first, "detects_restores=false") || !strings.Contains(first, why) {
		t.Fatalf("first log line %q; want a warning that restores will not be detected, and why", first)
	}
}

// TestIntegrationKmsgBump drives the provider's kernel-log path end to end
// with a facility-0 record root can make the kernel print.
func TestIntegrationKmsgBump(t *testing.T) {
	testdevice.Require(t)
	dir := stateDir(t)
	startProvider(t, dir, "--backend", "acpi", "--test-kmsg-match", testdevice.MalformedMessage)
	before := status(t, dir).Generation
	for range 3 {
		testdevice.LogMalformed(t)
	}
	eventually.True(t, "three bumps", func() bool { return status(t, dir).Generation == before+3 })
	if s := status(t, dir); s.Reason != "acpi" || s.Source.KmsgMatch != testdevice.MalformedMessage || !s.Source.DetectsRestores {
		t.Fatalf("status after kernel-log bumps: %+v", s)
	}
}

func TestBench(t *testing.T) {
	dir := stateDir(t)
	out, errs, code := ctl(t, dir, "bench", "--time", "5ms")
	if code != 0 || !strings.Contains(out, "csprng.Uint64") || !strings.Contains(out, "no provider") {
		t.Fatalf("bench exited %d:\n%s%s", code, out, errs)
	}
	if _, _, code := ctl(t, dir, "bench", "--time", "0s"); code != 2 {
		t.Fatalf("bench --time 0s exited %d, want 2", code)
	}
}

// TestIntegrationNotifyReady: under a service manager (NOTIFY_SOCKET),
// snapsafed says READY=1 only once the page is published and clients are
// served, and STOPPING=1 when it shuts down.
func TestIntegrationNotifyReady(t *testing.T) {
	dir := stateDir(t)
	sock := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(filepath.Join(bin, "snapsafed"), "--dir", dir, "--backend", "manual")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	read := func() string {
		ln.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 256)
		n, err := ln.Read(b)
		if err != nil {
			t.Fatalf("no notification from snapsafed: %v", err)
		}
		return string(b[:n])
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// Ready means usable, at once.
	if s := status(t, dir); s.Generation < 1 {
		t.Fatalf("generation %d when ready", s.Generation)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("notification on SIGTERM %q, want STOPPING=1", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("snapsafed after SIGTERM: %v", err)
	}
}
