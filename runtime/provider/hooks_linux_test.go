package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// The restore hooks' tests run real hooks: shell scripts (and a binary)
// in a directory of their own, each leaving its mark in a file of a second
// directory, out. That a hook did NOT run is shown with a fence: a good
// hook that runs after it, or a later generation it runs for, whose mark
// does appear.

// hookFixture is a provider running the hooks of dir, and a client of it.
type hookFixture struct {
	*testProvider
	logs *logBuffer
	c    *client.Client
	dir  string // the hooks directory
	out  string // where the hooks leave their marks
}

// newHookDirs makes a hooks directory (mode 0755) and an output
// directory.
func newHookDirs(t *testing.T) (dir, out string) {
	t.Helper()
	dir, out = t.TempDir(), t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, out
}

// startHooked runs a provider on the hooks of dir with timeout (0: the
// default).
func startHooked(t *testing.T, dir, out string, timeout time.Duration) *hookFixture {
	t.Helper()
	tp, logs := startBounded(t, Config{HooksDir: dir, HookTimeout: timeout}, time.Hour)
	return &hookFixture{testProvider: tp, logs: logs, c: attach(t, tp.Dir()), dir: dir, out: out}
}

// writeHook writes a hook: a shell script running body, with OUT replaced
// by the output directory.
func writeHook(t *testing.T, dir, out, name, body string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	script := "#!/bin/sh\n" + strings.ReplaceAll(body, "OUT", out) + "\n"
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // mode, whatever the umask
		t.Fatal(err)
	}
	return path
}

// mark is a hook body that appends its generation and reason to OUT/name.
func mark(name string) string {
	return `echo "$SNAPSAFE_GENERATION $SNAPSAFE_REASON" >> OUT/` + name
}

func (f *hookFixture) bump(t *testing.T) uint64 {
	t.Helper()
	g, err := f.c.Bump(ctxT(t, 5*time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// wait is an orchestrator wait that must succeed.
func (f *hookFixture) wait(t *testing.T) {
	t.Helper()
	if err := f.c.Wait(ctxT(t, eventually.Timeout)); err != nil {
		t.Fatalf("wait: %v\nhooks: %+v\nprovider log:\n%s", err, f.hooks(t), f.logs)
	}
}

// blocked checks that an orchestrator wait is held up: it is still
// waiting when its context's deadline passes.
func (f *hookFixture) blocked(t *testing.T) {
	t.Helper()
	if err := f.c.Wait(ctxT(t, 500*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait = %v, want context.DeadlineExceeded (held up by the hooks: %+v)", err, f.hooks(t))
	}
}

// hooks returns the hooks as status lists them, by name.
func (f *hookFixture) hooks(t *testing.T) map[string]api.Hook {
	t.Helper()
	m := map[string]api.Hook{}
	for _, h := range status(t, f.c).Hooks {
		m[h.Name] = h
	}
	return m
}

// marks returns the lines hook name appended to OUT/name.
func (f *hookFixture) marks(t *testing.T, name string) []string {
	t.Helper()
	return readMarks(t, f.out, name)
}

// readMarks returns the lines of out/name, nil when there is no such file.
func readMarks(t *testing.T, out, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func genMark(g uint64, reason string) string { return fmt.Sprintf("%d %s", g, reason) }

// processGone reports whether the process pid has ended (a zombie that
// nobody has reaped yet counts as ended).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// forkingHook is a hook that starts a child and waits for it; it writes
// its own pid and the child's to OUT/hook and OUT/child (hookPIDs), the
// hook's last.
const forkingHook = `sleep 1000 &
echo $! > OUT/child
echo $$ > OUT/hook
wait`

// hookPIDs reads the pids a forkingHook wrote to out.
func hookPIDs(t *testing.T, out string) (hook, child int) {
	t.Helper()
	return readPID(t, filepath.Join(out, "hook")), readPID(t, filepath.Join(out, "child"))
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// TestHookRunsOnBump: a script and a binary in the directory run on a
// bump, with the generation, the reason and nothing of the provider's
// environment; the wait returns once they exited 0, and not before; their
// output is logged line by line; they are up to date in status. A dot file
// and a file nobody may execute are no hooks.
func TestHookRunsOnBump(t *testing.T) {
	t.Setenv("SNAPSAFE_TEST_SECRET", "hunter2") // the provider's environment: no hook may see it
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-record", mark("10-record")+`
env > OUT/env
echo "to stdout $SNAPSAFE_GENERATION"
echo "to stderr" >&2`, 0o755)
	trueBin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(trueBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "20-binary"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeHook(t, dir, out, ".hidden", mark(".hidden"), 0o755)
	writeHook(t, dir, out, "README", mark("README"), 0o644)

	f := startHooked(t, dir, out, 0)
	s := status(t, f.c)
	if s.Outdated != 0 || len(s.Hooks) != 2 || s.Hooks[0].Name != "10-record" || s.Hooks[1].Name != "20-binary" {
		t.Fatalf("after start-up: outdated %d, hooks %+v; want 0 and 10-record, 20-binary", s.Outdated, s.Hooks)
	}
	for _, h := range s.Hooks {
		if h.State != "ok" || h.Acked != 0 {
			t.Fatalf("after start-up: hook %+v, want ok, acked 0", h)
		}
	}

	g := f.bump(t)
	f.wait(t)
	// The wait returned: the hooks have run, there is no need to poll.
	if got, want := f.marks(t, "10-record"), []string{genMark(g, "forced")}; !slices.Equal(got, want) {
		t.Fatalf("10-record marked %q, want %q", got, want)
	}
	env := f.marks(t, "env")
	for _, want := range []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SNAPSAFE_GENERATION=" + strconv.FormatUint(g, 10),
		"SNAPSAFE_REASON=forced", "SNAPSAFE_HOOK=10-record", "SNAPSAFE_DIR=" + f.Dir()} {
		if !slices.Contains(env, want) {
			t.Errorf("hook environment lacks %s: %q", want, env)
		}
	}
	for _, kv := range env {
		if strings.Contains(kv, "hunter2") {
			t.Errorf("hook environment has the provider's %s", kv)
		}
	}
	for name, h := range f.hooks(t) {
		if h.State != "ok" || h.Acked != g {
			t.Errorf("hook %s after the bump: %+v, want ok, acked %d", name, h, g)
		}
	}
	if s := status(t, f.c); s.Outdated != 0 {
		t.Errorf("outdated %d after the hooks ran, want 0", s.Outdated)
	}
	for _, want := range []string{
		fmt.Sprintf(`hook=10-record stream=stdout generation=%d line="to stdout %d"`, g, g),
		fmt.Sprintf(`hook=10-record stream=stderr generation=%d line="to stderr"`, g),
		fmt.Sprintf(`msg="restore hook done" hook=20-binary generation=%d`, g),
	} {
		if len(f.logs.lines(want)) != 1 {
			t.Errorf("provider log lacks %s:\n%s", want, f.logs)
		}
	}
	for _, name := range []string{".hidden", "README"} {
		if m := f.marks(t, name); m != nil {
			t.Errorf("%s ran (%q): it is no hook", name, m)
		}
	}
}

// TestHookNotAtStartup: no hook runs for a start-up generation, neither
// the first provider's nor a restarted one's: the first bump after them
// runs the hook exactly once.
func TestHookNotAtStartup(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-record", mark("10-record"), 0o755)
	f := startHooked(t, dir, out, 0)
	f.stop()
	f = startHooked(t, dir, out, 0)
	if h := f.hooks(t)["10-record"]; h.State != "ok" || h.Reason != "nothing to do for the start-up generation" {
		t.Fatalf("hook after start-up: %+v", h)
	}
	g := f.bump(t)
	f.wait(t)
	if got, want := f.marks(t, "10-record"), []string{genMark(g, "forced")}; !slices.Equal(got, want) {
		t.Fatalf("10-record marked %q after two start-ups and one bump, want %q", got, want)
	}
}

// TestHookFailureBlocksWait: a hook that exits 1 holds up the wait (and
// does not stop the hooks after it); status shows it failed and counts it
// outdated, until a later generation it handles.
func TestHookFailureBlocksWait(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-fail", mark("10-fail")+`
[ -e OUT/fixed ] || { echo "not fixed" >&2; exit 1; }`, 0o755)
	writeHook(t, dir, out, "20-after", mark("20-after"), 0o755)
	f := startHooked(t, dir, out, 0)

	g := f.bump(t)
	eventually.True(t, "the hooks to run", func() bool {
		h := f.hooks(t)
		return h["10-fail"].State == "failed" && h["20-after"].State == "ok"
	})
	f.blocked(t)
	s := status(t, f.c)
	if s.Outdated != 1 || len(s.Hooks) != 2 {
		t.Fatalf("outdated %d, hooks %+v; want 1 outdated", s.Outdated, s.Hooks)
	}
	if h := s.Hooks[0]; h.Name != "10-fail" || h.State != "failed" || h.Reason != "exit status 1" || h.Acked != 0 {
		t.Fatalf("failed hook in status: %+v", h)
	}
	if got := f.marks(t, "20-after"); !slices.Equal(got, []string{genMark(g, "forced")}) {
		t.Fatalf("20-after marked %q", got)
	}

	if err := os.WriteFile(filepath.Join(out, "fixed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	g2 := f.bump(t)
	f.wait(t)
	if h := f.hooks(t)["10-fail"]; h.State != "ok" || h.Acked != g2 {
		t.Fatalf("fixed hook after the next bump: %+v, want ok, acked %d", h, g2)
	}
}

// TestHookTimeoutKillsGroup: a hook that runs past --hook-timeout is
// killed with its whole process group (the child it spawned too), counts
// as failed and holds up the wait.
func TestHookTimeoutKillsGroup(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-hang", forkingHook, 0o755)
	f := startHooked(t, dir, out, time.Second)
	f.bump(t)
	eventually.True(t, "the hook to time out", func() bool { return f.hooks(t)["10-hang"].State == "failed" })
	h := f.hooks(t)["10-hang"]
	if !strings.Contains(h.Reason, "timed out after 1s") {
		t.Fatalf("timed-out hook: %+v", h)
	}
	hook, child := hookPIDs(t, out)
	eventually.True(t, "the hook and its child to be killed", func() bool { return processGone(hook) && processGone(child) })
	if s := status(t, f.c); s.Outdated != 1 {
		t.Fatalf("outdated %d after the hook timed out, want 1", s.Outdated)
	}
	f.blocked(t)
}

// TestHookRefused: hooks writable by the group, setuid, a symbolic link to
// an executable and a FIFO are refused, logged at start-up and shown in
// status, and never run: the good hook after them runs (a fence), and the
// wait does not wait for them.
func TestHookRefused(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-groupwrite", mark("10-groupwrite"), 0o775)
	writeHook(t, dir, out, "20-setuid", mark("20-setuid"), os.ModeSetuid|0o755)
	writeHook(t, dir, out, "25-setgid", mark("25-setgid"), os.ModeSetgid|0o755)
	target := writeHook(t, out, out, "real", mark("30-symlink"), 0o755)
	if err := os.Symlink(target, filepath.Join(dir, "30-symlink")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "40-fifo"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeHook(t, dir, out, "90-fence", mark("90-fence"), 0o755)
	refused := map[string]string{
		"10-groupwrite": "writable by group or others (mode 0775)",
		"20-setuid":     "setuid or setgid (mode 4755)",
		"25-setgid":     "setuid or setgid (mode 2755)",
		"30-symlink":    "a symbolic link",
		"40-fifo":       "not a regular file",
	}

	f := startHooked(t, dir, out, 0)
	for name, why := range refused {
		if len(f.logs.lines(`msg="restore hook refused: it never runs" hook=`+name)) != 1 {
			t.Errorf("start-up log does not refuse %s:\n%s", name, f.logs)
		}
		if h := f.hooks(t)[name]; h.State != "refused" || !strings.Contains(h.Reason, why) {
			t.Errorf("hook %s in status: %+v, want refused: %s", name, h, why)
		}
	}
	g := f.bump(t)
	f.wait(t)
	if got := f.marks(t, "90-fence"); !slices.Equal(got, []string{genMark(g, "forced")}) {
		t.Fatalf("the fence marked %q, want one run for generation %d", got, g)
	}
	for name := range refused {
		if m := f.marks(t, name); m != nil {
			t.Errorf("refused hook %s ran: %q", name, m)
		}
		if h := f.hooks(t)[name]; h.State != "refused" {
			t.Errorf("hook %s after the bump: %+v, want refused", name, h)
		}
	}
}

// TestHookRefusedOtherOwner: a hook another user owns is refused and never
// runs.
func TestHookRefusedOtherOwner(t *testing.T) {
	testdevice.RequireRoot(t, "to give a hook to another user")
	dir, out := newHookDirs(t)
	if err := os.Lchown(writeHook(t, dir, out, "10-nobody", mark("10-nobody"), 0o755), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	writeHook(t, dir, out, "90-fence", mark("90-fence"), 0o755)
	f := startHooked(t, dir, out, 0)
	if h := f.hooks(t)["10-nobody"]; h.State != "refused" || !strings.HasPrefix(h.Reason, "owned by uid 65534") {
		t.Fatalf("hook of uid 65534 in status: %+v", h)
	}
	g := f.bump(t)
	f.wait(t)
	if got := f.marks(t, "90-fence"); !slices.Equal(got, []string{genMark(g, "forced")}) {
		t.Fatalf("the fence marked %q", got)
	}
	if m := f.marks(t, "10-nobody"); m != nil {
		t.Fatalf("the hook of uid 65534 ran: %q", m)
	}
}

// TestHookDirRefused: a hooks directory others may write, or reached
// through a symbolic link, is refused: status says so, no hook in it runs
// or holds up the wait. Once the mode is fixed, the next generation runs
// the hook: once (the fence), so it did not run before.
func TestHookDirRefused(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-record", mark("10-record"), 0o755)

	t.Run("symlink", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "restore.d")
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		f := startHooked(t, link, out, 0)
		if h := f.hooks(t)[link]; h.State != "refused" || !strings.Contains(h.Reason, "symbolic link") {
			t.Fatalf("symlinked directory in status: %+v", f.hooks(t))
		}
		f.bump(t)
		f.wait(t) // passes once the scan for the generation is done
		if m := f.marks(t, "10-record"); m != nil {
			t.Fatalf("hook of a symlinked directory ran: %q", m)
		}
	})

	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	f := startHooked(t, dir, out, 0)
	if h := f.hooks(t)[dir]; h.State != "refused" || !strings.Contains(h.Reason, "writable by group or others (mode 0777)") {
		t.Fatalf("writable directory in status: %+v", f.hooks(t))
	}
	if len(f.logs.lines(`msg="restore hooks directory refused: no hook runs"`)) != 1 {
		t.Fatalf("start-up log does not refuse the directory:\n%s", f.logs)
	}
	f.bump(t)
	f.wait(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	g := f.bump(t)
	f.wait(t)
	if got := f.marks(t, "10-record"); !slices.Equal(got, []string{genMark(g, "forced")}) {
		t.Fatalf("10-record marked %q, want one run for generation %d", got, g)
	}
}

// TestHookNewGenerationStartsOver: a generation that arrives while a hook
// runs lets that hook finish, then the hooks start over from the first one
// for the newest generation; the later hooks never run for the older one,
// and a good run for the older one does not count for the newer.
func TestHookNewGenerationStartsOver(t *testing.T) {
	dir, out := newHookDirs(t)
	// 10-slow runs until OUT/go-GENERATION exists.
	writeHook(t, dir, out, "10-slow", mark("10-slow")+`
while [ ! -e OUT/go-$SNAPSAFE_GENERATION ]; do sleep 0.01; done`, 0o755)
	writeHook(t, dir, out, "20-mark", mark("20-mark"), 0o755)
	f := startHooked(t, dir, out, 0)
	release := func(g uint64) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(out, fmt.Sprintf("go-%d", g)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Both hooks are outdated while 10-slow runs, and 20-mark pending.
	outdated := func(step string, g, then uint64) {
		t.Helper()
		s := status(t, f.c)
		if s.Outdated != 2 {
			t.Fatalf("%s: outdated %d, want 2 (both hooks): %+v", step, s.Outdated, s.Hooks)
		}
		want := fmt.Sprintf("for generation %d", g)
		if then != 0 {
			want += fmt.Sprintf(", then again for %d", then)
		}
		if h := f.hooks(t)["10-slow"]; h.State != "running" || h.Reason != want {
			t.Fatalf("%s: 10-slow %+v, want running %s", step, h, want)
		}
		if h := f.hooks(t)["20-mark"]; h.State != "pending" {
			t.Fatalf("%s: 20-mark %+v, want pending", step, h)
		}
		f.blocked(t)
	}

	g1 := f.bump(t)
	eventually.True(t, "10-slow to run", func() bool { return len(f.marks(t, "10-slow")) == 1 })
	g2 := f.bump(t)
	outdated("second bump while 10-slow runs", g1, g2)
	release(g1)
	eventually.True(t, "10-slow to run again", func() bool { return len(f.marks(t, "10-slow")) == 2 })
	outdated("10-slow runs again", g2, 0)
	if h := f.hooks(t)["10-slow"]; h.Acked != g1 {
		t.Fatalf("10-slow acked %d, want %d: its run for the older generation exited 0", h.Acked, g1)
	}
	release(g2)
	f.wait(t)
	if got, want := f.marks(t, "10-slow"), []string{genMark(g1, "forced"), genMark(g2, "forced")}; !slices.Equal(got, want) {
		t.Fatalf("10-slow marked %q, want %q", got, want)
	}
	if got, want := f.marks(t, "20-mark"), []string{genMark(g2, "forced")}; !slices.Equal(got, want) {
		t.Fatalf("20-mark marked %q, want only %q", got, want)
	}
}

// TestHookRescan: the directory is scanned again on every generation: a
// hook added since runs, a removed one is dropped from status.
func TestHookRescan(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-a", mark("10-a"), 0o755)
	f := startHooked(t, dir, out, 0)
	g1 := f.bump(t)
	f.wait(t)
	writeHook(t, dir, out, "20-b", mark("20-b"), 0o755)
	if err := os.Remove(filepath.Join(dir, "10-a")); err != nil {
		t.Fatal(err)
	}
	g2 := f.bump(t)
	f.wait(t)
	if got := f.marks(t, "10-a"); !slices.Equal(got, []string{genMark(g1, "forced")}) {
		t.Fatalf("10-a marked %q", got)
	}
	if got := f.marks(t, "20-b"); !slices.Equal(got, []string{genMark(g2, "forced")}) {
		t.Fatalf("20-b marked %q", got)
	}
	if s := status(t, f.c).Hooks; len(s) != 1 || s[0].Name != "20-b" || s[0].State != "ok" || s[0].Acked != g2 {
		t.Fatalf("hooks after the rescan: %+v, want 20-b alone, ok", s)
	}
}

// TestHookShutdownKillsRunning: stopping the provider kills a running
// hook with its process group, and does not wait for its timeout.
func TestHookShutdownKillsRunning(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-forever", forkingHook, 0o755)
	f := startHooked(t, dir, out, time.Hour)
	f.bump(t)
	eventually.True(t, "the hook to start its child", func() bool {
		b, _ := os.ReadFile(filepath.Join(out, "hook"))
		return strings.HasSuffix(string(b), "\n")
	})
	hook, child := hookPIDs(t, out)
	f.stop()
	eventually.True(t, "the hook and its child to be killed", func() bool { return processGone(hook) && processGone(child) })
	if len(f.logs.lines(`why="killed with its process group: the provider is stopping"`)) != 1 {
		t.Fatalf("provider log:\n%s", f.logs)
	}
}

// TestHookOutputBounded: a hook that writes a flood of lines has the first
// maxHookLines of each stream logged and the rest counted.
func TestHookOutputBounded(t *testing.T) {
	dir, out := newHookDirs(t)
	writeHook(t, dir, out, "10-flood", `i=0
while [ $i -lt 1500 ]; do echo "line $i"; i=$((i+1)); done`, 0o755)
	f := startHooked(t, dir, out, 0)
	g := f.bump(t)
	f.wait(t)
	if n := len(f.logs.lines(`msg="restore hook output" hook=10-flood stream=stdout`)); n != maxHookLines {
		t.Fatalf("%d output lines logged, want %d", n, maxHookLines)
	}
	if len(f.logs.lines(fmt.Sprintf(`msg="restore hook output not logged" hook=10-flood stream=stdout generation=%d lines=500`, g))) != 1 {
		t.Fatalf("no summary of the lines not logged:\n%s", strings.Join(f.logs.lines("not logged"), "\n"))
	}
}

// TestHookAccounting: the hooks' share of the outdated count, step by
// step, including the moment between a bump and the rescan of a directory
// that had no hook, which no test with processes can catch reliably: a
// hook added meanwhile must hold up waits from the bump on.
func TestHookAccounting(t *testing.T) {
	p := &Provider{hooks: &hookSet{dir: "/hooks", wake: make(chan struct{}, 1)}}
	p.gen.Store(1)
	check := func(step string, want int) {
		t.Helper()
		if p.outdated != want || p.hooks.counted != want {
			t.Fatalf("%s: outdated %d (hooks %d), want %d", step, p.outdated, p.hooks.counted, want)
		}
	}
	p.bumpHooksLocked(shm.ReasonStartup, 1)
	p.installHooksLocked(nil, "", 1, true)
	check("start-up with no hook", 0)

	p.gen.Store(2)
	p.outdated = 0
	p.bumpHooksLocked(shm.ReasonACPI, 2)
	check("bump before the rescan", 1)
	p.installHooksLocked([]scannedHook{{name: "10-new"}, {name: "20-bad", refused: "no"}}, "", 2, false)
	check("rescan found a runnable hook and a refused one", 1)
	p.startHookLocked("10-new", 2)
	p.endHookLocked("10-new", 2, false, "exit status 1")
	check("the hook failed", 1)

	p.gen.Store(3)
	p.outdated = 0
	p.bumpHooksLocked(shm.ReasonVMClock, 3)
	check("bump with a hook in the list", 1)
	p.installHooksLocked([]scannedHook{{name: "10-new"}}, "", 3, false)
	check("rescan", 1)
	p.endHookLocked("10-new", 3, true, "")
	check("the hook exited 0", 0)
	if l := p.hookListLocked(); len(l) != 1 || l[0] != (api.Hook{Name: "10-new", State: "ok", Acked: 3}) {
		t.Fatalf("hooks: %+v", l)
	}
}

// TestHookRunsTheCheckedFile: the hook run is the file that was opened and
// checked, even when its path names another file by the time it runs (a
// rename over it): it is executed through its descriptor.
func TestHookRunsTheCheckedFile(t *testing.T) {
	dir, out := newHookDirs(t)
	path := writeHook(t, dir, out, "10-hook", mark("checked"), 0o755)
	evil := writeHook(t, out, out, "evil", mark("evil"), 0o755)
	logs := new(logBuffer)
	p := &Provider{dir: "/run/test", log: slog.New(slog.NewTextHandler(logs, nil)),
		hooks: &hookSet{dir: dir, timeout: eventually.Timeout}}
	d, why := openHookDir(dir)
	if d == nil {
		t.Fatalf("hooks directory refused: %s", why)
	}
	defer d.Close()
	h, why, err := openHook(d, "10-hook")
	if h == nil {
		t.Fatalf("hook refused: %q, %v", why, err)
	}
	defer h.Close()
	if err := os.Rename(evil, path); err != nil {
		t.Fatal(err)
	}
	if ok, why := p.execHook(context.Background(), h, "10-hook", 7, shm.ReasonACPI); !ok {
		t.Fatalf("hook failed: %s\n%s", why, logs)
	}
	if got := readMarks(t, out, "checked"); !slices.Equal(got, []string{"7 acpi"}) {
		t.Fatalf("the checked hook marked %q", got)
	}
	if got := readMarks(t, out, "evil"); got != nil {
		t.Fatalf("the file renamed over the hook ran: %q", got)
	}
}

// TestHookExamples: the example hooks of docs/examples/restore.d are
// executable shell scripts that parse, and use set -eu.
func TestHookExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "docs", "examples", "restore.d")
	for _, name := range []string{"10-ssh-host-keys", "20-machine-id"} {
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable (%v)", path, fi.Mode())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "#!/bin/sh\n") || !strings.Contains(string(b), "\nset -eu\n") {
			t.Errorf("%s: not a #!/bin/sh script with set -eu", path)
		}
		if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", path, err, out)
		}
	}
}
