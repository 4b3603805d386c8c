// Command clonetest is snapsafe's end-to-end test on a real hypervisor. It
// boots a Linux guest under QEMU with a VM generation ID device, snapshots it
// while its programs run, restores the snapshot twice as two clones, resumes
// both and checks what their consoles show.
//
// Run it from the module root as root (Debian's kernels are mode 0600):
//
//	go run ./e2e/cmd/clonetest
//
// e2e/install-deps.sh installs QEMU, a static busybox and a guest kernel.
// A missing one is an error, never a skipped test.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
	"github.com/snapsafe/snapsafe/e2e/initramfs"
)

// guestProgram is one program /init starts in the guest.
type guestProgram struct {
	name string // console tag: its lines read "[name] ..."
	// pkg is the Go package built into the guest's /bin under its base name,
	// "" for a busybox applet.
	pkg  string
	argv []string
}

// guestPrograms run in the guest, started in this order. The checks find
// their lines by name.
var guestPrograms = []guestProgram{
	// The kernel log from boot on, records whole with facility and
	// timestamp; the fork record comes through here.
	{name: "kmsg", argv: []string{"cat", "/dev/kmsg"}},
	{name: "client", pkg: "github.com/snapsafe/snapsafe/e2e/cmd/guestclient", argv: []string{"guestclient"}},
}

// bootLines is how many client lines the source must print before it is
// snapshotted: proof that the guest programs run. The source also waits for
// two clock syncs (see console.ClockSync), about two seconds of running.
const bootLines = 10

func main() {
	var opts options
	flag.StringVar(&opts.kernel, "kernel", "", "guest kernel `path` (default: the newest /boot/vmlinuz-*)")
	flag.BoolVar(&opts.keep, "keep", false, "keep the work directory (consoles, QEMU logs, initramfs, VM state)")
	flag.DurationVar(&opts.timeout, "timeout", 5*time.Minute, "fail when the whole run takes longer")
	flag.StringVar(&opts.qemu, "qemu", "qemu-system-x86_64", "QEMU `binary`")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "clonetest: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()

	h := &harness{opts: opts}
	err := h.run(ctx)
	h.stopAll()
	if err != nil {
		h.printTails()
		fmt.Fprintf(os.Stderr, "clonetest: FAIL: %v\n", err)
	}
	switch {
	case h.dir == "":
	case opts.keep:
		fmt.Printf("clonetest: work directory kept: %s\n", h.dir)
	default:
		os.RemoveAll(h.dir)
	}
	if err != nil {
		os.Exit(1)
	}
	fmt.Println("clonetest: PASS")
}

type options struct {
	kernel, qemu string
	keep         bool
	timeout      time.Duration
}

// harness is one run.
type harness struct {
	opts options
	dir  string
	vms  []*vm // every QEMU started, for cleanup and diagnostics
}

func (h *harness) logf(format string, args ...any) {
	fmt.Printf("clonetest: "+format+"\n", args...)
}

func (h *harness) run(ctx context.Context) error {
	m, err := h.prepare(ctx)
	if err != nil {
		return err
	}
	var o observed
	state := filepath.Join(h.dir, "state")
	if err := h.bootAndSnapshot(ctx, m, state, &o); err != nil {
		return err
	}
	if err := h.runClones(ctx, m, state, &o); err != nil {
		return err
	}

	var failed []string
	for _, c := range checks {
		if err := c.fn(&o); err != nil {
			h.logf("check FAILED: %s:\n%v", c.name, err)
			failed = append(failed, c.name)
			continue
		}
		h.logf("check ok: %s", c.name)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d checks failed: %s", len(failed), len(checks), strings.Join(failed, "; "))
	}
	return nil
}

// prepare checks the host, makes the work directory, builds the guest
// programs and packs the initramfs.
func (h *harness) prepare(ctx context.Context) (machine, error) {
	tools, err := findTools(h.opts.qemu)
	if err != nil {
		return machine{}, err
	}
	kernel, err := findKernel(h.opts.kernel)
	if err != nil {
		return machine{}, err
	}
	if h.dir, err = os.MkdirTemp("", "clonetest-"); err != nil {
		return machine{}, err
	}
	h.logf("kernel %s, QEMU %s, work directory %s", kernel, tools.qemu, h.dir)

	t0 := time.Now()
	binaries, err := buildGuest(ctx, tools.goTool, filepath.Join(h.dir, "bin"))
	if err != nil {
		return machine{}, err
	}
	initrd := filepath.Join(h.dir, "initramfs.cpio")
	if err := packInitramfs(initrd, tools.busybox, binaries); err != nil {
		return machine{}, err
	}
	h.logf("built the guest and packed %s in %v", sizeOf(initrd), since(t0))
	return machine{qemu: tools.qemu, kernel: kernel, initrd: initrd, dir: h.dir}, nil
}

// bootAndSnapshot boots the source, lets its programs run, saves its state
// to the file state and ends it.
func (h *harness) bootAndSnapshot(ctx context.Context, m machine, state string, o *observed) error {
	src, err := h.start(ctx, m, "source")
	if err != nil {
		return err
	}
	if _, err := src.waitConsole(ctx, "the first client line", func(lines []console.Line) bool {
		recs, _ := clientRecords(lines, -1)
		return len(recs) > 0
	}); err != nil {
		return err
	}
	h.logf("source booted to its first client line in %v", since(src.started))
	if _, err := src.waitConsole(ctx, fmt.Sprintf("%d client lines and 2 clock syncs", bootLines), func(lines []console.Line) bool {
		recs, _ := clientRecords(lines, -1)
		return len(recs) >= bootLines && len(clockSyncs(lines)) >= 2
	}); err != nil {
		return err
	}
	h.logf("source ready for the snapshot %v after start", since(src.started))
	if o.sourceGenID, err = src.generationID(ctx); err != nil {
		return err
	}

	t0 := time.Now()
	if err := src.snapshot(ctx, state); err != nil {
		return err
	}
	h.logf("snapshot: stop and migration to %s (%s) in %v", state, sizeOf(state), since(t0))
	// The guest is stopped: its console is final.
	lines, err := src.lines()
	if err != nil {
		return err
	}
	recs, err := clientRecords(lines, -1)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	o.sourceLines, o.sourceLast = lines, recs[len(recs)-1]
	h.logf("snapshot point: last client line of the source: %s", clientString(o.sourceLast))
	if n := len(forkRecords(lines)); n != 0 {
		return fmt.Errorf("source: %d fork records before any restore", n)
	}
	src.stop()
	return nil
}

// runClones restores two clones from the file state, one after the other
// (one core restores two no faster), resumes them together and lets them
// run until each shows its fork record and enough client lines.
func (h *harness) runClones(ctx context.Context, m machine, state string, o *observed) error {
	var vms []*vm
	for _, name := range []string{"clone-a", "clone-b"} {
		v, err := h.start(ctx, m, name, "-incoming", "exec:cat "+shellQuote(state))
		if err != nil {
			return err
		}
		st, err := v.waitStatus(ctx, "paused", "running")
		if err != nil {
			return err
		}
		if st != "paused" {
			return fmt.Errorf("%s: came up %s, want paused until cont", name, st)
		}
		genID, err := v.generationID(ctx)
		if err != nil {
			return err
		}
		h.logf("%s: restored (paused) in %v, generation ID %s (source: %s)", name, since(v.started), genID, o.sourceGenID)
		vms = append(vms, v)
		o.clones = append(o.clones, clone{name: name, genID: genID})
	}
	resumed := make([]time.Time, len(vms))
	for i, v := range vms {
		if err := v.qmp.Execute(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		resumed[i] = time.Now()
	}

	forkSeen := make([]time.Time, len(vms))
	errs := make([]error, len(vms))
	var wg sync.WaitGroup
	for i, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, errs[i] = v.waitConsole(ctx, "the kernel's fork record", func(l []console.Line) bool {
				return len(forkRecords(l)) > 0
			}); errs[i] != nil {
				return
			}
			forkSeen[i] = time.Now()
			// A clock sync after the fork record lets reportFork
			// interpolate across it.
			o.clones[i].lines, errs[i] = v.waitConsole(ctx, fmt.Sprintf("%d client lines after the snapshot point and a clock sync", minAfter), func(l []console.Line) bool {
				recs, _ := clientRecords(l, o.sourceLast.T)
				return len(recs) >= minAfter && len(clockSyncs(l)) > 0
			})
		}()
	}
	wg.Wait()
	h.stopAll()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i, c := range o.clones {
		h.reportFork(o, c, forkSeen[i].Sub(resumed[i]))
	}
	return nil
}

// start starts a VM and keeps it for cleanup and diagnostics.
func (h *harness) start(ctx context.Context, m machine, name string, extra ...string) (*vm, error) {
	v, err := startVM(ctx, m, name, extra...)
	if v != nil {
		h.vms = append(h.vms, v)
	}
	return v, err
}

// stopAll ends every QEMU of the run.
func (h *harness) stopAll() {
	for _, v := range h.vms {
		v.stop()
	}
}

// reportFork prints where the fork record falls among a clone's client
// lines. The guest's clocks stand still while it is stopped, so the record's
// distance from the last client line before the snapshot bounds the guest
// time from resume to the record.
func (h *harness) reportFork(o *observed, c clone, hostDelay time.Duration) {
	p, err := placeFork(o, c)
	if err != nil {
		h.logf("%s: %v", c.name, err)
		return
	}
	h.logf("%s: fork record seq %d at kernel time %v (facility %d, level %d), on the console %v after cont",
		c.name, p.record.Seq, p.record.Time, p.record.Facility, p.record.Level, hostDelay.Round(time.Millisecond))
	h.logf("%s: fork record at client time T=%v, %v after the last client line before the snapshot",
		c.name, p.t, p.t-o.sourceLast.T)
	for _, r := range p.before {
		h.logf("%s:   %s", c.name, clientString(r))
	}
	h.logf("%s:   ---- fork record (T=%v)", c.name, p.t)
	for _, r := range p.after {
		h.logf("%s:   %s", c.name, clientString(r))
	}
}

func clientString(c console.Client) string {
	return fmt.Sprintf("T=%v gen=%d csprng=%s control=%s", c.T, c.Gen, c.CSPRNG, c.Control)
}

// printTails shows every VM's QMP events (a SHUTDOWN says why QEMU ended)
// and the end of its console and QEMU log.
func (h *harness) printTails() {
	for _, v := range h.vms {
		for _, e := range v.events {
			fmt.Fprintf(os.Stderr, "==== %s: QMP event %s %s %s\n", v.name, e.Time.Format("15:04:05.000"), e.Name, e.Data)
		}
		for _, f := range []string{v.console, v.log} {
			data, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintf(os.Stderr, "==== %s: %v\n", f, err)
				continue
			}
			if len(data) == 0 {
				fmt.Fprintf(os.Stderr, "==== %s: %s is empty\n", v.name, f)
				continue
			}
			lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
			lines = lines[max(len(lines)-40, 0):]
			fmt.Fprintf(os.Stderr, "==== %s: last %d lines of %s\n%s\n", v.name, len(lines), f, strings.Join(lines, "\n"))
		}
	}
}

// buildGuest builds the Go guest programs as static Linux binaries into dir.
func buildGuest(ctx context.Context, goTool, dir string) ([]string, error) {
	var pkgs, bins []string
	for _, p := range guestPrograms {
		if p.pkg != "" && !slices.Contains(pkgs, p.pkg) {
			pkgs = append(pkgs, p.pkg)
			bins = append(bins, filepath.Join(dir, path.Base(p.pkg)))
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, goTool, append([]string{"build", "-trimpath", "-o", dir + "/"}, pkgs...)...)
	// No cgo: the guest has no C library.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the guest programs (run from the snapsafe module): %v\n%s", err, out)
	}
	return bins, nil
}

func packInitramfs(path, busybox string, binaries []string) error {
	spec := initramfs.Spec{Busybox: busybox, Binaries: binaries}
	for _, p := range guestPrograms {
		spec.Programs = append(spec.Programs, initramfs.Program{Name: p.name, Argv: p.argv})
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := initramfs.Write(f, spec); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sizeOf(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "size unknown"
	}
	return fmt.Sprintf("%.1f MiB", float64(fi.Size())/(1<<20))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
