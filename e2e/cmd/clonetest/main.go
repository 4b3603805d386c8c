// Command clonetest is snapsafe's end-to-end test on a real hypervisor. It
// boots a Linux guest under QEMU, runs the provider (snapsafed --backend
// auto, with its host endpoint on a port QEMU forwards from the host's
// loopback), a watcher, a client of the csprng package and a stand-in
// orchestrator in it, snapshots it while they run, restores the snapshot
// twice as two clones, resumes both and checks what their consoles and
// their host endpoints show: each clone's provider bumped, csprng's output
// diverged while a userspace generator repeated byte for byte, and
// `snapsafectl wait` in the guest and GET /v1/wait from the host returned
// once the watcher had acked.
//
// It runs two scenarios (see scenarios): "vmgenid", with a VM generation
// ID device, where the provider bumps for the kernel's VM-fork record and
// the host only waits; and "host-push", without one, where the provider
// cannot see the restore and the host pushes it (POST /v1/restore with
// fresh entropy and the token baked into the guest).
//
// Run it from the module root as root (Debian's kernels are mode 0600):
//
//	go run ./e2e/cmd/clonetest
//
// It runs once per guest kernel: every /boot/vmlinuz-* with the vmgenid
// driver built in, or those given with -kernel. e2e/install-deps.sh installs
// QEMU, a static busybox and a guest kernel. A missing one is an error,
// never a skipped test.
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

const module = "github.com/snapsafe/snapsafe"

// guestPrograms run in the guest, started in this order. The checks find
// their lines by name.
var guestPrograms = []guestProgram{
	// The kernel log from boot on, records whole with facility and
	// timestamp; the fork record comes through here.
	{name: "kmsg", argv: []string{"cat", "/dev/kmsg"}},
	// Every uevent the kernel sends once /init runs, one line each: the
	// summary shows whether the kernel sent one on the restore (only 6.8
	// sends NEW_VMGENID=1; see docs/sources.md).
	{name: "uevent", argv: []string{"uevent", "sh", "-c", `echo "ACTION=$ACTION DEVPATH=$DEVPATH SUBSYSTEM=$SUBSYSTEM NEW_VMGENID=$NEW_VMGENID"`}},
	// The host endpoint listens on every address of the guest; the only
	// way to it is QEMU's forward from the host's loopback (machine.args).
	{name: "snapsafed", pkg: module + "/cmd/snapsafed", argv: []string{"snapsafed", "--backend", "auto",
		"--host-listen", fmt.Sprintf("tcp:0.0.0.0:%d", guestPort), "--host-token-file", "/" + guestTokenFile}},
	// The watcher rebuilds nothing; it acknowledges each generation it is
	// told of, which is what releases the orchestrator wait.
	{name: "watcher", pkg: module + "/cmd/snapsafectl", argv: afterProvider("snapsafectl", "watch", "--ack")},
	{name: "client", pkg: module + "/e2e/cmd/guestclient", argv: afterProvider("guestclient")},
	// It reports ready once the watcher is registered, and runs
	// snapsafectl wait after each bump.
	{name: "waiter", pkg: module + "/e2e/cmd/guestwaiter", argv: afterProvider("guestwaiter", "-watchers", "1")},
}

// afterProvider wraps argv so that it starts once the provider answers
// (snapsafectl status exits 0): csprng picks its source on first use, and
// the watcher must find a provider to register with.
func afterProvider(argv ...string) []string {
	return append([]string{"sh", "-c", `until snapsafectl status >/dev/null 2>&1; do sleep 0.05; done; exec "$@"`, "sh"}, argv...)
}

// bootLines is how many client lines the source must print before it is
// snapshotted: proof that the guest programs run. The source also waits for
// two clock syncs (see console.ClockSync), about two seconds of running, and
// for the waiter to report ready.
const bootLines = 10

// cloneTimeout bounds the clones' run from cont until they show everything
// the checks need (about a second of running): past it the run fails with
// what the consoles show.
const cloneTimeout = 20 * time.Second

// statusTimeout bounds the wait for the source's host endpoint to answer
// once the guest programs run (it answers within a few 100 ms).
const statusTimeout = 15 * time.Second

func main() {
	var opts options
	flag.Func("kernel", "guest kernel `path`, repeatable (default: every /boot/vmlinuz-* with CONFIG_VMGENID=y)", func(p string) error {
		opts.kernels = append(opts.kernels, p)
		return nil
	})
	flag.BoolVar(&opts.keep, "keep", false, "keep the work directory (consoles, QEMU logs, initramfs, VM state)")
	flag.DurationVar(&opts.timeout, "timeout", 90*time.Second, "fail a kernel's run of a scenario when it takes longer (a passing one takes about 15s)")
	flag.Func("scenario", "run only this `scenario` (vmgenid or host-push), repeatable (default: both)", func(name string) error {
		for _, sc := range scenarios {
			if sc.name == name {
				opts.scenarios = append(opts.scenarios, sc)
				return nil
			}
		}
		return fmt.Errorf("unknown scenario %q: use vmgenid or host-push", name)
	})
	flag.StringVar(&opts.qemu, "qemu", "qemu-system-x86_64", "QEMU `binary`")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "clonetest: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	t0 := time.Now()
	results, err := runAll(ctx, opts)
	for _, r := range results {
		fmt.Print(r.summary)
	}
	for _, r := range results {
		if r.err == nil {
			fmt.Printf("clonetest: PASS %s %s in %v\n", r.kernel, r.scenario, r.took)
		} else {
			fmt.Printf("clonetest: FAIL %s %s in %v: %v\n", r.kernel, r.scenario, r.took, r.err)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "clonetest: FAIL: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("clonetest: PASS (%d runs in %v)\n", len(results), since(t0))
}

type options struct {
	kernels   []string
	scenarios []scenario
	qemu      string
	keep      bool
	timeout   time.Duration
}

// result is how one kernel's run of one scenario ended.
type result struct {
	kernel, scenario string
	took             time.Duration
	err              error
	summary          string // what the scenario's summary printed for a passing run
}

// runAll checks the host, builds the guest programs once and runs every
// scenario on every kernel. The error is nil only when every run passed.
func runAll(ctx context.Context, opts options) ([]result, error) {
	scs := opts.scenarios
	if len(scs) == 0 {
		scs = scenarios
	}
	tools, err := findTools(opts.qemu)
	if err != nil {
		return nil, err
	}
	kernels, err := findKernels(opts.kernels)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "clonetest-")
	if err != nil {
		return nil, err
	}
	if opts.keep {
		defer fmt.Printf("clonetest: work directory kept: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	mods := map[string][]string{}
	for _, k := range kernels {
		if mods[k], err = netModules(kernelVersion(k)); err != nil {
			return nil, fmt.Errorf("guest kernel %s: %w", k, err)
		}
		if err := checkApplets(tools.busybox, mods[k]); err != nil {
			return nil, err
		}
	}
	var names []string
	for _, sc := range scs {
		names = append(names, sc.name)
	}
	logf("kernels %s; scenarios %s; QEMU %s; work directory %s", strings.Join(kernels, ", "), strings.Join(names, ", "), tools.qemu, dir)

	t0 := time.Now()
	binaries, err := buildGuest(ctx, tools.goTool, filepath.Join(dir, "bin"))
	if err != nil {
		return nil, err
	}
	logf("built the guest programs (static) in %v", since(t0))
	token, err := newToken()
	if err != nil {
		return nil, err
	}

	var results []result
	var failed []string
	for _, k := range kernels {
		// One initramfs per kernel, for its modules; the scenarios differ
		// only in QEMU's devices.
		kdir := filepath.Join(dir, kernelVersion(k))
		if err := os.MkdirAll(kdir, 0o755); err != nil {
			return results, err
		}
		initrd := filepath.Join(kdir, "initramfs.cpio")
		if err := packInitramfs(initrd, tools.busybox, binaries, mods[k], token); err != nil {
			return results, err
		}
		logf("packed %s (%s) with %d kernel modules for the network: %s", initrd, sizeOf(initrd), len(mods[k]), moduleNames(mods[k]))
		for _, sc := range scs {
			m := machine{qemu: tools.qemu, kernel: k, initrd: initrd, dir: filepath.Join(kdir, sc.name), vmgenid: sc.vmgenid}
			t0 := time.Now()
			summary, err := runKernel(ctx, opts.timeout, m, sc, token)
			results = append(results, result{kernel: kernelVersion(k), scenario: sc.name, took: since(t0), err: err, summary: summary})
			if !opts.keep {
				// The VM state is 150 MB; the consoles are kept until the end.
				os.Remove(filepath.Join(m.dir, "state"))
			}
			if err != nil {
				failed = append(failed, kernelVersion(k)+" "+sc.name)
			}
			if ctx.Err() != nil {
				break // interrupted: the remaining runs would fail at once
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(failed) > 0 {
		return results, fmt.Errorf("%d of %d runs failed: %s", len(failed), len(kernels)*len(scs), strings.Join(failed, ", "))
	}
	return results, nil
}

// runKernel is one run of a scenario on one kernel: boot, snapshot, two
// clones, checks. It returns the run's summary when it passed, and prints
// the QMP events and the tails of every VM's console and log when it
// failed.
func runKernel(ctx context.Context, timeout time.Duration, m machine, sc scenario, token string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logf("==== %s, scenario %s: %s", m.kernel, sc.name, sc.what)
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return "", err
	}
	h := &harness{m: m, sc: sc, token: token}
	err := h.run(ctx)
	h.stopAll()
	if err != nil {
		h.printTails()
		return "", err
	}
	return h.summary.String(), nil
}

func logf(format string, args ...any) {
	fmt.Printf("clonetest: "+format+"\n", args...)
}

// harness is one kernel's run of one scenario.
type harness struct {
	m       machine
	sc      scenario
	token   string // the bearer token baked into the guest
	vms     []*vm  // every QEMU started, for cleanup and diagnostics
	summary strings.Builder
}

func (h *harness) run(ctx context.Context) error {
	o := observed{vmgenid: h.m.vmgenid}
	state := filepath.Join(h.m.dir, "state")
	if err := h.bootAndSnapshot(ctx, state, &o); err != nil {
		return err
	}
	waitErr := h.runClones(ctx, state, &o)

	checks := h.sc.checks
	var failed []string
	for _, c := range checks {
		if err := c.fn(&o); err != nil {
			logf("check FAILED: %s:\n%v", c.name, err)
			failed = append(failed, c.name)
			continue
		}
		logf("check ok: %s", c.name)
	}
	if waitErr == nil && len(failed) == 0 {
		h.sc.summary(&h.summary, kernelVersion(h.m.kernel), &o)
	}
	var errs []error
	if waitErr != nil {
		errs = append(errs, waitErr)
	}
	if len(failed) > 0 {
		errs = append(errs, fmt.Errorf("%d of %d checks failed: %s", len(failed), len(checks), strings.Join(failed, "; ")))
	}
	return errors.Join(errs...)
}

// bootAndSnapshot boots the source, lets its programs run, saves its state
// to the file state and ends it.
func (h *harness) bootAndSnapshot(ctx context.Context, state string, o *observed) error {
	src, err := h.start(ctx, "source")
	if err != nil {
		return err
	}
	if _, err := src.waitConsole(ctx, "the first client line", func(lines []console.Line) bool {
		recs, _ := clientRecords(lines, -1)
		return len(recs) > 0
	}); err != nil {
		return err
	}
	logf("source booted to its first client line in %v", since(src.started))
	if _, err := src.waitConsole(ctx, fmt.Sprintf("%d client lines, 2 clock syncs and the waiter ready", bootLines), func(lines []console.Line) bool {
		recs, _ := clientRecords(lines, -1)
		ready, _ := waiterRecords(lines, console.WaiterReady)
		return len(recs) >= bootLines && len(clockSyncs(lines)) >= 2 && len(ready) > 0
	}); err != nil {
		return err
	}
	logf("source ready for the snapshot %v after start", since(src.started))
	if h.m.vmgenid {
		if o.sourceGenID, err = src.generationID(ctx); err != nil {
			return err
		}
	}
	// The host reads the generation it will wait past, through the port
	// QEMU forwards to the guest's endpoint.
	port, err := src.hostForward(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	o.sourceStatus, err = newEndpoint(src.name, port).waitStatus(sctx)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: see /init's network line and snapsafed's lines on the console", err)
	}
	logf("source: GET http://127.0.0.1:%d/v1/status (to the guest's %s:%d) answered in %v: generation %d, backend %s (detects restores: %v), %d VMGENID device(s)",
		port, strings.Split(guestNet.Address, "/")[0], guestPort, since(t0), o.sourceStatus.Generation, o.sourceStatus.Source.Name,
		o.sourceStatus.Source.DetectsRestores, len(o.sourceStatus.VMGenID.Devices))

	t0 = time.Now()
	if err := src.snapshot(ctx, state); err != nil {
		return err
	}
	logf("snapshot: stop and migration to %s (%s) in %v", state, sizeOf(state), since(t0))
	// The guest is stopped: its console is final.
	lines, err := src.lines()
	if err != nil {
		return err
	}
	recs, err := clientRecords(lines, -1)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	ready, err := waiterRecords(lines, console.WaiterReady)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	o.sourceLines, o.sourceLast, o.sourceReady = lines, recs[len(recs)-1], ready[0]
	logf("snapshot point: generation %d, %d watcher(s); last client line of the source: %s",
		o.sourceReady.Gen, o.sourceReady.Watchers, clientString(o.sourceLast))
	if n := len(forkRecords(lines)); n != 0 {
		return fmt.Errorf("source: %d fork records before any restore", n)
	}
	src.stop()
	return nil
}

// runClones restores two clones from the file state, one after the other
// (one core restores two no faster), resumes them together and lets them
// run until each shows what the checks need. On a timeout it keeps what
// the consoles show, for the checks to say what is missing.
func (h *harness) runClones(ctx context.Context, state string, o *observed) error {
	var vms []*vm
	for _, name := range []string{"clone-a", "clone-b"} {
		v, err := h.start(ctx, name, "-incoming", "exec:cat "+shellQuote(state))
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
		c := clone{name: name}
		if h.m.vmgenid {
			if c.genID, err = v.generationID(ctx); err != nil {
				return err
			}
		}
		if c.host.port, err = v.hostForward(ctx); err != nil {
			return err
		}
		logf("%s: restored (paused) in %v, generation ID %q (source: %q), host endpoint on 127.0.0.1:%d", name, since(v.started), c.genID, o.sourceGenID, c.host.port)
		vms = append(vms, v)
		o.clones = append(o.clones, c)
	}
	resumed := make([]time.Time, len(vms))
	for i, v := range vms {
		if err := v.qmp.Execute(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		resumed[i] = time.Now()
	}

	// The host's part, on the host's clock from cont, bounded by the run's
	// timeout: a wait that times out says which watchers were outdated.
	var hostWG sync.WaitGroup
	defer hostWG.Wait()
	for i, v := range vms {
		hostWG.Add(1)
		go func() {
			defer hostWG.Done()
			h.sc.host(ctx, newEndpoint(v.name, o.clones[i].host.port), h.token, o.sourceStatus.Generation, &o.clones[i].host, resumed[i])
		}()
	}

	cctx, cancel := context.WithTimeout(ctx, cloneTimeout)
	defer cancel()
	errs := make([]error, len(vms))
	var wg sync.WaitGroup
	for i, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &o.clones[i]
			if _, errs[i] = v.waitConsole(cctx, "the provider's bump", func(l []console.Line) bool {
				b, _ := waiterRecords(l, console.WaiterBump)
				return len(b) > 0
			}); errs[i] == nil {
				c.bumpSeen = time.Since(resumed[i])
				what := "the wait's result and enough client lines"
				if o.vmgenid {
					what = "the fork record, " + what + " and a clock sync"
				}
				_, errs[i] = v.waitConsole(cctx, what, func(l []console.Line) bool {
					return cloneDone(o, l)
				})
			}
		}()
	}
	wg.Wait()
	// The host's requests are answered before the clones stop.
	hostWG.Wait()
	for i, v := range vms {
		// The lines so far, complete or not, go to the checks.
		var err error
		if o.clones[i].lines, err = v.lines(); err != nil {
			errs[i] = errors.Join(errs[i], err)
		}
	}
	h.stopAll()
	for i, c := range o.clones {
		if errs[i] == nil {
			logf("%s: the provider's bump reached the console %v after cont", c.name, c.bumpSeen.Round(time.Millisecond))
		}
		logf("%s: host: %s", c.name, c.host.String())
	}
	return errors.Join(errs...)
}

// start starts a VM and keeps it for cleanup and diagnostics.
func (h *harness) start(ctx context.Context, name string, extra ...string) (*vm, error) {
	v, err := startVM(ctx, h.m, name, extra...)
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

func clientString(c console.Client) string {
	return fmt.Sprintf("T=%v gen=%d mode=%s csprng=%s control=%s", c.T, c.Gen, c.Mode, c.CSPRNG, c.Control)
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

// packInitramfs packs the guest: busybox, the binaries, the kernel modules
// for the network, the host endpoint's token and /init.
func packInitramfs(path, busybox string, binaries, modules []string, token string) error {
	spec := initramfs.Spec{Busybox: busybox, Binaries: binaries, Modules: modules, Net: &guestNet,
		// snapsafed refuses a token file others may read.
		Files: []initramfs.File{{Name: guestTokenFile, Mode: 0o600, Data: []byte(token + "\n")}}}
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
