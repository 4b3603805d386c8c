package acpi

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ueventMaxMessage is the size of the buffer a uevent is received into. The
// kernel builds a uevent from a header "action@devpath" (devpath shorter than
// PATH_MAX, 4096 bytes) and at most 2048 bytes of KEY=VALUE pairs, so no
// kernel uevent is larger.
const ueventMaxMessage = 8192

// ueventRcvbuf is the receive buffer asked for the uevent socket. Every
// device event on the machine is queued there until Run reads it; a burst
// (devices added at boot, udevadm trigger) must not overrun it while a
// restore is pending. The memory is only used while messages are queued.
const ueventRcvbuf = 4 << 20

// Uevent is one kernel uevent as broadcast on NETLINK_KOBJECT_UEVENT:
//
//	action@devpath\0ACTION=action\0DEVPATH=devpath\0SUBSYSTEM=...\0...\0SEQNUM=n\0
type Uevent struct {
	// Action is "add", "remove", "change", "bind" and so on.
	Action string
	// DevPath is the device's path under /sys, such as
	// /devices/platform/VMGENCTR:00.
	DevPath string
	// Subsystem is the device's subsystem ("acpi", "platform", ...), or
	// "" when the message carries none.
	Subsystem string
	// Seqnum is the kernel's uevent sequence number (SEQNUM).
	Seqnum uint64
	// Env holds every KEY=VALUE pair, including ACTION, DEVPATH,
	// SUBSYSTEM and SEQNUM.
	Env map[string]string
}

// libudevPrefix starts the messages that udevd forwards to its own
// listeners (on netlink group 2); they are not kernel uevents.
var libudevPrefix = []byte("libudev\x00")

// ParseUevent parses one message received on a NETLINK_KOBJECT_UEVENT
// socket. It rejects messages that are not kernel uevents (such as udevd's
// libudev messages), and truncated or otherwise malformed ones: every field
// must end in a NUL byte, the header must agree with ACTION and DEVPATH, and
// SEQNUM must be present. Errors wrap ErrMalformed.
func ParseUevent(b []byte) (Uevent, error) {
	if bytes.HasPrefix(b, libudevPrefix) {
		return Uevent{}, fmt.Errorf("%w uevent: a udevd (libudev) message, not a kernel uevent", ErrMalformed)
	}
	if len(b) == 0 || b[len(b)-1] != 0 {
		return Uevent{}, fmt.Errorf("%w uevent: does not end in a NUL byte (truncated?): %q", ErrMalformed, b)
	}
	fields := strings.Split(string(b[:len(b)-1]), "\x00")
	action, devpath, ok := strings.Cut(fields[0], "@")
	if !ok || action == "" || !strings.HasPrefix(devpath, "/") {
		return Uevent{}, fmt.Errorf("%w uevent: header %q is not action@/devpath", ErrMalformed, fields[0])
	}
	env := make(map[string]string, len(fields)-1)
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return Uevent{}, fmt.Errorf("%w uevent: field %q is not KEY=VALUE", ErrMalformed, f)
		}
		if _, dup := env[k]; dup {
			return Uevent{}, fmt.Errorf("%w uevent: key %s appears twice", ErrMalformed, k)
		}
		env[k] = v
	}
	for _, k := range []string{"ACTION", "DEVPATH", "SEQNUM"} {
		if _, ok := env[k]; !ok {
			return Uevent{}, fmt.Errorf("%w uevent: no %s (truncated?)", ErrMalformed, k)
		}
	}
	if env["ACTION"] != action || env["DEVPATH"] != devpath {
		return Uevent{}, fmt.Errorf("%w uevent: ACTION=%s DEVPATH=%s disagree with header %q", ErrMalformed, env["ACTION"], env["DEVPATH"], fields[0])
	}
	seq, err := strconv.ParseUint(env["SEQNUM"], 10, 64)
	if err != nil {
		return Uevent{}, fmt.Errorf("%w uevent: SEQNUM %q: %w", ErrMalformed, env["SEQNUM"], err)
	}
	return Uevent{Action: action, DevPath: devpath, Subsystem: env["SUBSYSTEM"], Seqnum: seq, Env: env}, nil
}

// synthetic reports whether root wrote u to the device's uevent file rather
// than the driver sending it: the kernel adds SYNTH_UUID to every such
// event, and a driver's event never has it.
func (u Uevent) synthetic() bool {
	_, ok := u.Env["SYNTH_UUID"]
	return ok
}

// IsRestore reports whether u announces a restore: a "change" of a VMGENID
// device — its ACPI device (/devices/LNXSYSTM:00/.../VMGENCTR:00) or the
// platform device made from it (/devices/platform/VMGENCTR:00) — carrying
// NEW_VMGENID=1, as Linux 6.8 sent it. A synthetic change of the device
// counts only when acceptSynthetic is true. Root cannot forge NEW_VMGENID
// through the uevent file: the kernel renames written keys SYNTH_ARG_*.
func (u Uevent) IsRestore(acceptSynthetic bool) bool {
	if !u.vmgenidChange() {
		return false
	}
	if u.synthetic() {
		return acceptSynthetic
	}
	return u.Env["NEW_VMGENID"] == "1"
}

// vmgenidChange reports whether u is a "change" of a VMGENID device.
func (u Uevent) vmgenidChange() bool {
	hid, _, _ := strings.Cut(path.Base(u.DevPath), ":")
	return u.Action == "change" && isVMGenID(hid, u.Env["MODALIAS"])
}

// UeventOptions configures a UeventFollower.
type UeventOptions struct {
	// AcceptSynthetic makes synthetic change events on the VMGENID
	// device, which only root can cause, count as restores.
	AcceptSynthetic bool
	// Logger receives warnings (messages from userspace, malformed
	// uevents); nil means slog.Default().
	Logger *slog.Logger
}

// UeventFollower reports the kernel uevents that announce a restore. Only
// messages sent by the kernel count: a process with CAP_NET_ADMIN can send to
// the kernel's uevent group too, and such messages are ignored.
type UeventFollower struct {
	c      conn
	accept bool
	log    *slog.Logger
	// ignored counts the synthetic changes of the VMGENID device that did
	// not count because accept is false.
	ignored atomic.Uint64
}

// NewUeventFollower opens a NETLINK_KOBJECT_UEVENT socket subscribed to the
// kernel's uevent group. Any user may open one.
func NewUeventFollower(opts UeventOptions) (*UeventFollower, error) {
	return newUeventFollower(opts, ueventRcvbuf)
}

// newUeventFollower is NewUeventFollower with the receive buffer size as a
// parameter, so that a test can overrun a small one.
func newUeventFollower(opts UeventOptions, rcvbuf int) (*UeventFollower, error) {
	c, err := openUevent(rcvbuf)
	if err != nil {
		return nil, fmt.Errorf("opening the kernel uevent socket: %w", err)
	}
	f := &UeventFollower{c: c, accept: opts.AcceptSynthetic, log: opts.Logger}
	if f.log == nil {
		f.log = slog.Default()
	}
	return f, nil
}

// Run reports each restore uevent, and each loss of uevents, with emit until
// ctx is done; then it returns nil. emit is called from Run's goroutine. Run
// must not be called concurrently with itself.
func (f *UeventFollower) Run(ctx context.Context, emit func(Event)) error {
	warnedSender := false
	err := follow(ctx, f.c, ueventMaxMessage, func(msg []byte, sender uint32) {
		if sender != 0 {
			// The kernel sends from port id 0, which no userspace
			// socket can have.
			if !warnedSender {
				warnedSender = true
				f.log.Warn("ignoring uevent messages sent by a process, not the kernel (logged once)", "sender_port", sender)
			}
			return
		}
		u, err := ParseUevent(msg)
		if err != nil {
			f.log.Warn("ignoring kernel uevent", "err", err)
			return
		}
		if !u.IsRestore(f.accept) {
			if u.vmgenidChange() && u.synthetic() {
				f.ignored.Add(1)
			}
			return
		}
		detail := fmt.Sprintf("NEW_VMGENID=1 change of %s", u.DevPath)
		if u.synthetic() {
			detail = fmt.Sprintf("synthetic change of %s (SYNTH_UUID=%s)", u.DevPath, u.Env["SYNTH_UUID"])
		}
		emit(Event{Signal: SignalUevent, Seq: u.Seqnum, Time: time.Now(), Detail: detail})
	}, func() {
		emit(Event{Signal: SignalUevent, Lost: true, Time: time.Now(),
			Detail: "uevents were dropped because the socket's receive buffer overran"})
	})
	if err != nil {
		return fmt.Errorf("receiving uevents: %w", err)
	}
	return nil
}

// IgnoredSynthetic returns how many synthetic changes of the VMGENID device
// Run has received and not counted, because AcceptSynthetic is false. The
// follower handles messages in the order the kernel sent them, so once it
// has counted a synthetic event every uevent sent before it was handled.
func (f *UeventFollower) IgnoredSynthetic() uint64 {
	return f.ignored.Load()
}

// Close releases the socket. It may be called more than once, and makes a
// running Run return an error.
func (f *UeventFollower) Close() error {
	return f.c.close()
}
