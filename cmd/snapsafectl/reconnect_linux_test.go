package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/snapsafe/snapsafe/internal/eventually"
)

// A watcher outlives the provider: snapsafectl watch re-attaches when the
// provider comes back and handles its start-up generation, and a wait
// right after a restart passes only once it has.

// printed reports whether the watcher's output has gen on a line of its own.
func printed(out *syncBuffer, gen uint64) bool {
	return slices.Contains(strings.Split(out.String(), "\n"), strconv.FormatUint(gen, 10))
}

// running reports whether the process has not exited (it is not reaped
// before the test's cleanup).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses (the name may hold
	// a parenthesis itself); Z: exited.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && !bytes.HasPrefix(b[i+1:], []byte(" Z"))
}

// restartWithWatcherStopped restarts the provider (stopping it with sig)
// while the watcher process is stopped (SIGSTOP), once the watcher has
// lost the old provider, so that the new provider is up before the watcher
// can re-attach. It returns the new provider; resume the watcher with
// SIGCONT. The new provider starts with args.
func restartWithWatcherStopped(t *testing.T, dir string, p *provider, sig syscall.Signal, w *exec.Cmd, out *syncBuffer, args ...string) *provider {
	t.Helper()
	lost := strings.Count(out.String(), "lost the provider")
	p.stop(t, sig)
	eventually.True(t, "the watcher to lose the provider", func() bool {
		return strings.Count(out.String(), "lost the provider") == lost+1
	})
	if err := w.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Signal(syscall.SIGCONT) })
	return startProvider(t, dir, args...)
}

// expectedOnly checks that the watcher list holds only the placeholder of
// the watcher process pid, labelled svc: the new provider expects it back.
func expectedOnly(t *testing.T, dir string, pid int) {
	t.Helper()
	l := watcherList(t, dir)
	if len(l) != 1 || l[0].PID != pid || l[0].Label != "svc" || !l[0].Outdated || !l[0].Expected {
		t.Fatalf("right after the restart: watcher_list %+v, want watcher svc (pid %d) expected and outdated", l, pid)
	}
}

// TestIntegrationWatchSurvivesRestart walks the bar: a `watch --ack` keeps
// running across a provider restart (SIGTERM, then kill -9), and a wait
// started at once after the restart passes only once the watcher has
// printed (and so handled and acknowledged) the new provider's start-up
// generation. The watcher is stopped (SIGSTOP) until the wait is pending, so
// that the new provider is sure to see the wait first.
func TestIntegrationWatchSurvivesRestart(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	w, out := startWatch(t, dir, "--ack", "--label", "svc")
	eventually.True(t, "the watcher", func() bool { return status(t, dir).Watchers == 1 })
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if sig == syscall.SIGKILL {
			// A provider killed -9 leaves the watchers it last recorded
			// (at most a second old): let it record this one.
			eventually.True(t, "the provider to record the watcher", func() bool {
				b, _ := os.ReadFile(filepath.Join(dir, "watchers"))
				return strings.Contains(string(b), `"svc"`)
			})
		}
		p = restartWithWatcherStopped(t, dir, p, sig, w, out)
		gen := status(t, dir).Generation
		expectedOnly(t, dir, w.Process.Pid)
		wait := exec.Command(filepath.Join(bin, "snapsafectl"), "--dir", dir, "wait", "--timeout", "10s")
		var waitErr syncBuffer
		wait.Stderr = &waitErr
		if err := wait.Start(); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() { waited <- wait.Wait() }()
		eventually.True(t, "the wait to be pending", func() bool {
			select {
			case err := <-waited:
				t.Fatalf("after a restart (%v): wait ended (%v) while the watcher was stopped, before it handled the start-up generation %d: %s", sig, err, gen, &waitErr)
			default:
			}
			return status(t, dir).Waiting == 1
		})
		if err := w.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if err := <-waited; err != nil {
			t.Fatalf("after a restart (%v): wait: %v: %s\nwatcher output:\n%s", sig, err, &waitErr, out)
		}
		if !printed(out, gen) {
			t.Fatalf("after a restart (%v): wait passed before the watcher handled the start-up generation %d; watcher output:\n%s", sig, gen, out)
		}
		if !running(w.Process.Pid) {
			t.Fatalf("the watcher exited across the restart (%v):\n%s", sig, out)
		}
		if l := watcherList(t, dir); len(l) != 1 || l[0].PID != w.Process.Pid || l[0].Label != "svc" || l[0].Outdated || l[0].Expected {
			t.Fatalf("after a restart (%v): watcher_list %+v, want the watcher (pid %d), up to date", sig, l, w.Process.Pid)
		}
	}
	if n := strings.Count(out.String(), "re-attached to the provider"); n != 2 {
		t.Fatalf("the watcher said %d times that it re-attached, want 2:\n%s", n, out)
	}
}

// TestIntegrationWatchRestartUnhindered: a watcher that is not held up
// re-attaches by itself, and a wait right after the restart still passes
// only once it handled the start-up generation.
func TestIntegrationWatchRestartUnhindered(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	w, out := startWatch(t, dir, "--ack", "--label", "svc")
	eventually.True(t, "the watcher", func() bool { return status(t, dir).Watchers == 1 })
	p.stop(t, syscall.SIGTERM)
	startProvider(t, dir)
	gen := status(t, dir).Generation
	if _, errs, code := ctl(t, dir, "wait", "--timeout", "5s"); code != 0 {
		t.Fatalf("wait after the restart exited %d: %s\nwatcher output:\n%s", code, errs, out)
	}
	if !printed(out, gen) || !running(w.Process.Pid) {
		t.Fatalf("wait passed before the watcher handled the start-up generation %d; watcher output:\n%s", gen, out)
	}
}

// TestIntegrationWatchNoAckHoldsWaitAfterRestart: a watcher that re-attaches
// but does not acknowledge (watch without --ack) holds up the wait after a
// restart, which names it, both before and after it registered again.
func TestIntegrationWatchNoAckHoldsWaitAfterRestart(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	w, out := startWatch(t, dir, "--label", "svc")
	eventually.True(t, "the watcher", func() bool { return status(t, dir).Watchers == 1 })
	restartWithWatcherStopped(t, dir, p, syscall.SIGTERM, w, out)
	gen := status(t, dir).Generation
	expectedOnly(t, dir, w.Process.Pid)
	named := "watcher svc pid " + strconv.Itoa(w.Process.Pid)
	if _, errs, code := ctl(t, dir, "wait", "--timeout", "1s"); code != 3 || !strings.Contains(errs, named) || !strings.Contains(errs, "not registered again") {
		t.Fatalf("wait right after the restart exited %d (%q), want 3 naming %s, not registered again", code, errs, named)
	}
	w.Process.Signal(syscall.SIGCONT)
	eventually.True(t, "the watcher to re-attach and print the start-up generation", func() bool { return printed(out, gen) })
	_, errs, code := ctl(t, dir, "wait", "--timeout", "1s")
	if code != 3 || !strings.Contains(errs, named) || strings.Contains(errs, "not registered again") {
		t.Fatalf("wait with the re-attached watcher that did not ack exited %d (%q), want 3 naming %s", code, errs, named)
	}
	if l := watcherList(t, dir); len(l) != 1 || l[0].PID != w.Process.Pid || !l[0].Outdated || l[0].Expected {
		t.Fatalf("watcher_list %+v, want the re-attached watcher (pid %d), outdated", l, w.Process.Pid)
	}
}

// TestIntegrationWatchOutlivesProvider: with the provider gone for good,
// watch keeps waiting for it; --timeout and a signal still end it.
func TestIntegrationWatchOutlivesProvider(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	timed, timedOut := startWatch(t, dir, "--ack", "--timeout", "1500ms")
	signalled, sigOut := startWatch(t, dir, "--ack")
	eventually.True(t, "the watchers", func() bool { return status(t, dir).Watchers == 2 })
	p.stop(t, syscall.SIGTERM)
	eventually.True(t, "the watcher to say it lost the provider", func() bool {
		return strings.Contains(sigOut.String(), "lost the provider")
	})
	signalled.Process.Signal(syscall.SIGTERM)
	if err := signalled.Wait(); err != nil {
		t.Fatalf("watch after SIGTERM with no provider: %v, want exit 0\n%s", err, sigOut)
	}
	timed.Wait()
	if code := timed.ProcessState.ExitCode(); code != 3 || !strings.Contains(timedOut.String(), "timed out") {
		t.Fatalf("watch --timeout with the provider gone exited %d, want 3 at the timeout:\n%s", code, timedOut)
	}
}

// TestDaemonRestartGraceFlag: a negative --restart-grace is a usage error
// (exit 2) naming the flag.
func TestDaemonRestartGraceFlag(t *testing.T) {
	cmd := exec.Command(filepath.Join(bin, "snapsafed"), "--dir", stateDir(t), "--backend", "manual", "--restart-grace", "-1s")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "--restart-grace") || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("snapsafed --restart-grace -1s: exit %d, output %q; want 2 and one line naming the flag", code, out)
	}
}

// TestIntegrationRestartGraceZero: with --restart-grace 0 the provider
// expects no watchers after a restart.
func TestIntegrationRestartGraceZero(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	w, out := startWatch(t, dir, "--ack", "--label", "svc")
	eventually.True(t, "the watcher", func() bool { return status(t, dir).Watchers == 1 })
	restartWithWatcherStopped(t, dir, p, syscall.SIGTERM, w, out, "--restart-grace", "0")
	if l := watcherList(t, dir); len(l) != 0 {
		t.Fatalf("with --restart-grace 0: watcher_list %+v, want none expected", l)
	}
}
