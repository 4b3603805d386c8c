package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
	"github.com/snapsafe/snapsafe/e2e/initramfs"
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
	// vmgenid gives the VMs a VM generation ID device (guid=auto: a new
	// ID on every restore).
	vmgenid bool
}

// guestPort is the guest's TCP port of the host endpoint (snapsafed
// --host-listen); each VM forwards a port of the host's loopback to it.
const guestPort = 8080

// guestNet is the guest's address in QEMU's user network (slirp), which
// lives inside the QEMU process: 10.0.2.2 is slirp's gateway, nothing on
// the host's network.
var guestNet = initramfs.Net{Interface: "eth0", Address: "10.0.2.15/24", Gateway: "10.0.2.2"}

// args returns QEMU's command line for the VM called name.
func (m machine) args(name string) []string {
	args := []string{
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
		// User networking, restricted: the guest reaches nothing outside
		// QEMU (no routing to the host or beyond, no DNS), and the one way
		// in is the forward from a port of the host's loopback, which QEMU
		// picks (port 0) and hostForward reads back. A clone restored with
		// another host port is fine: the forward is slirp's, on the host
		// side, and set up from the command line, not from the state.
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:0-:%d", guestPort),
		// romfile= : no PXE ROM, which direct kernel boot does not use and
		// ipxe-qemu would provide.
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		"-qmp", "unix:" + m.qmpPath(name) + ",server=on,wait=off",
	}
	if m.vmgenid {
		args = append(args, "-device", "vmgenid,id=vmgenid0,guid=auto")
	}
	return args
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

// hostForward returns the port of the host's loopback that QEMU forwards to
// the guest's guestPort.
func (v *vm) hostForward(ctx context.Context) (int, error) {
	var out string
	if err := v.qmp.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info usernet"}, &out); err != nil {
		return 0, fmt.Errorf("%s: %w", v.name, err)
	}
	port, err := parseHostForward(out, guestPort)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", v.name, err)
	}
	return port, nil
}

// parseHostForward finds, in the output of QEMU's "info usernet", the
// host's port of the TCP forward to the guest's port guest:
//
//	Hub -1 (n0):
//	  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
//	  TCP[HOST_FORWARD]   3       127.0.0.1 43735       10.0.2.15  8080     0     0
func parseHostForward(out string, guest int) (int, error) {
	var found []int
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || f[0] != "TCP[HOST_FORWARD]" {
			continue
		}
		src, err1 := strconv.Atoi(f[3])
		dst, err2 := strconv.Atoi(f[5])
		if err1 != nil || err2 != nil || src <= 0 || src > 65535 {
			return 0, fmt.Errorf("info usernet: cannot read the forward %q", strings.TrimSpace(l))
		}
		if dst == guest {
			found = append(found, src)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("info usernet: %d TCP forwards to the guest's port %d, want 1:\n%s", len(found), guest, out)
	}
	return found[0], nil
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
