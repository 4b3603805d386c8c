package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
	"github.com/snapsafe/snapsafe/e2e/qmp"
)

// pollInterval is how often the driver looks at a console or asks QEMU for
// a status while it waits for a condition.
const pollInterval = 20 * time.Millisecond

// machine is what every VM of a run shares: a clone must be started with the
// same devices as the source for QEMU to accept its state.
type machine struct {
	qemu, kernel, initrd string
	dir                  string // work directory: consoles, logs, sockets
}

// args returns QEMU's command line for the VM called name.
func (m machine) args(name string) []string {
	return []string{
		"-nodefaults", "-no-user-config",
		"-accel", "tcg",
		// The guest needs RDRAND: without it its RNG is never ready in time
		// and the kernel skips the fork record.
		"-cpu", "max",
		"-m", "512", "-smp", "1",
		"-no-reboot", "-display", "none",
		"-kernel", m.kernel, "-initrd", m.initrd,
		// quiet keeps kernel lines off the console (they would interleave
		// with the programs' lines); the kmsg program copies the log instead.
		// panic=-1 with -no-reboot makes a guest panic end QEMU.
		"-append", "console=ttyS0 quiet panic=-1",
		"-serial", "file:" + m.consolePath(name),
		"-device", "vmgenid,id=vmgenid0,guid=auto",
		"-qmp", "unix:" + m.qmpPath(name) + ",server=on,wait=off",
	}
}

func (m machine) consolePath(name string) string { return filepath.Join(m.dir, name+".console") }
func (m machine) qmpPath(name string) string     { return filepath.Join(m.dir, name+".qmp") }
func (m machine) logPath(name string) string     { return filepath.Join(m.dir, name+".qemu.log") }

// vm is one running QEMU.
type vm struct {
	name    string
	console string // the guest's serial console, written by QEMU
	log     string // QEMU's own stdout and stderr
	cmd     *exec.Cmd
	qmp     *qmp.Client
	events  []qmp.Event // QMP events received until stop
	started time.Time
	exited  chan struct{} // closed when QEMU has exited; then exitErr is set
	exitErr error
}

// startVM starts QEMU with the machine's arguments and extra, and connects
// to its QMP socket.
func startVM(ctx context.Context, m machine, name string, extra ...string) (*vm, error) {
	v := &vm{name: name, console: m.consolePath(name), log: m.logPath(name), exited: make(chan struct{})}
	logFile, err := os.Create(v.log)
	if err != nil {
		return nil, err
	}
	v.cmd = exec.Command(m.qemu, append(m.args(name), extra...)...)
	v.cmd.Stdout, v.cmd.Stderr = logFile, logFile
	v.cmd.SysProcAttr = qemuSysProcAttr()
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%s: starting QEMU: %w", name, err)
	}
	go func() {
		v.exitErr = v.cmd.Wait()
		logFile.Close()
		close(v.exited)
	}()

	// QEMU creates the socket early in its start-up; wait for it by trying.
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := qmp.Dial(dctx, m.qmpPath(name))
		cancel()
		if err == nil {
			v.qmp = c
			return v, nil
		}
		select {
		case <-ctx.Done():
			v.stop()
			return v, fmt.Errorf("%s: connecting to QMP: %w (last error: %v)", name, ctx.Err(), err)
		case <-v.exited:
			return v, fmt.Errorf("%s: QEMU exited at start: %v", name, v.exitErr)
		case <-tick.C:
		}
	}
}

// stop ends QEMU: politely through QMP, then by force. It is safe to call
// more than once and on a VM that already exited.
func (v *vm) stop() {
	if v.qmp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v.qmp.Execute(ctx, "quit", nil, nil)
		cancel()
		v.qmp.Close()
		v.events = v.qmp.Events()
		v.qmp = nil
	}
	select {
	case <-v.exited:
		return
	case <-time.After(5 * time.Second):
	}
	v.cmd.Process.Kill()
	<-v.exited
}

// lines returns the complete lines of the VM's console so far.
func (v *vm) lines() ([]console.Line, error) {
	data, err := os.ReadFile(v.console)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // QEMU has not opened it yet
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reading console: %w", v.name, err)
	}
	return console.Parse(data), nil
}

// waitConsole polls the console until cond holds for its lines, the context
// ends or QEMU exits, and returns the lines that satisfied cond.
func (v *vm) waitConsole(ctx context.Context, what string, cond func([]console.Line) bool) ([]console.Line, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		lines, err := v.lines()
		if err != nil {
			return nil, err
		}
		if cond(lines) {
			return lines, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting for %s: %w", v.name, what, ctx.Err())
		case <-v.exited:
			return nil, fmt.Errorf("%s: QEMU exited (%v) while waiting for %s", v.name, v.exitErr, what)
		case <-tick.C:
		}
	}
}

// waitStatus polls QMP query-status until the run state is one of want and
// returns it.
func (v *vm) waitStatus(ctx context.Context, want ...string) (string, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := v.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
			return "", fmt.Errorf("%s: %w", v.name, err)
		}
		for _, w := range want {
			if st.Status == w {
				return st.Status, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: waiting for run state %s (now %s): %w", v.name, strings.Join(want, " or "), st.Status, ctx.Err())
		case <-tick.C:
		}
	}
}

// generationID returns the VM generation ID QEMU gives the guest.
func (v *vm) generationID(ctx context.Context) (string, error) {
	var r struct {
		GUID string `json:"guid"`
	}
	if err := v.qmp.Execute(ctx, "query-vm-generation-id", nil, &r); err != nil {
		return "", fmt.Errorf("%s: %w", v.name, err)
	}
	return r.GUID, nil
}

// snapshot stops the VM and saves its state to path with a migration to a
// file; it returns when QEMU reports the migration completed.
func (v *vm) snapshot(ctx context.Context, path string) error {
	if err := v.qmp.Execute(ctx, "stop", nil, nil); err != nil {
		return fmt.Errorf("%s: %w", v.name, err)
	}
	uri := "exec:cat > " + shellQuote(path)
	if err := v.qmp.Execute(ctx, "migrate", map[string]string{"uri": uri}, nil); err != nil {
		return fmt.Errorf("%s: %w", v.name, err)
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := v.qmp.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("%s: migration to %s %s: %s", v.name, path, st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for the migration to %s (status %q): %w", v.name, path, st.Status, ctx.Err())
		case <-tick.C:
		}
	}
}

// shellQuote quotes s as one word for sh, which runs QEMU's exec: URIs.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
