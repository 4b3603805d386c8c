package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/runtime/provider/hostapi"
)

// scenario is one way to clone the guest and tell its provider: the VMs'
// devices, what the host does after cont, the checks and the summary.
type scenario struct {
	name string
	what string // one line for the log
	// vmgenid gives the VMs a VM generation ID device.
	vmgenid bool
	// host is the host's part on one clone, run right after its cont
	// (resumed): through e, the clone's host endpoint, it records what it
	// sees in r. after is the source's generation at the snapshot.
	host    func(ctx context.Context, e *endpoint, token string, after uint64, r *hostRun, resumed time.Time)
	checks  []check
	summary func(w io.Writer, kernel string, o *observed)
}

// scenarios are run in this order on each kernel.
var scenarios = []scenario{
	{
		name:    "vmgenid",
		what:    "a VM generation ID device; the provider bumps for the kernel's fork record, the host waits (GET /v1/wait)",
		vmgenid: true,
		host:    hostWait,
		checks:  vmgenidChecks,
		summary: printSummary,
	},
	{
		name:    "host-push",
		what:    "no VM generation ID device; the host pushes the restore (POST /v1/restore) and waits (GET /v1/wait)",
		vmgenid: false,
		host:    hostPush,
		checks:  hostPushChecks,
		summary: printPushSummary,
	},
}

// hostRun is what the host saw of one clone's endpoint, on the host's clock
// from the clone's cont.
type hostRun struct {
	port int // the host's loopback port QEMU forwards to the guest's endpoint

	// POST /v1/restore with a wrong token (host-push): the endpoint must
	// refuse it.
	refusedCode int
	refusedErr  error
	// POST /v1/restore with the token and fresh entropy (host-push).
	pushed      bool
	restoreCode int
	restore     hostapi.RestoreResponse
	restoreErr  error
	restored    time.Duration // cont -> the restore's answer
	entropy     int           // bytes of entropy sent

	// GET /v1/wait?after=N&timeout=hostWaitTimeout.
	waitCode int
	wait     hostapi.WaitResponse
	waitErr  error
	adapted  time.Duration // cont -> the wait's answer
}

// String says what the host saw, for the log.
func (r *hostRun) String() string {
	var parts []string
	if r.pushed {
		s := fmt.Sprintf("wrong token -> HTTP %d", r.refusedCode)
		if r.refusedCode == 0 {
			s = fmt.Sprintf("wrong token -> %v", r.refusedErr)
		}
		parts = append(parts, s)
		if r.restoreErr != nil {
			parts = append(parts, fmt.Sprintf("POST /v1/restore: %v", r.restoreErr))
		} else {
			parts = append(parts, fmt.Sprintf("POST /v1/restore -> HTTP %d ok=%v generation %d kernel_reseeded=%v %v after cont",
				r.restoreCode, r.restore.OK, r.restore.Generation, r.restore.KernelReseeded, r.restored.Round(time.Millisecond)))
		}
	}
	if r.waitErr != nil {
		parts = append(parts, fmt.Sprintf("GET /v1/wait: %v", r.waitErr))
	} else {
		parts = append(parts, fmt.Sprintf("GET /v1/wait -> HTTP %d adapted=%v generation %d %v after cont (waited %.3fs in the guest)",
			r.waitCode, r.wait.Adapted, r.wait.Generation, r.adapted.Round(time.Millisecond), r.wait.WaitedSeconds))
	}
	return strings.Join(parts, "; ")
}

// hostWait is the host's part when the guest sees the restore itself: wait
// until the clone's provider has bumped past the snapshot's generation and
// its watchers adapted.
func hostWait(ctx context.Context, e *endpoint, _ string, after uint64, r *hostRun, resumed time.Time) {
	r.waitCode, r.wait, r.waitErr = e.wait(ctx, after, hostWaitTimeout)
	r.adapted = time.Since(resumed)
}

// hostPush is the host's part when the guest cannot see the restore: push
// it with fresh entropy of the host's, different for every clone, after a
// push with a wrong token that must change nothing; then wait as hostWait.
func hostPush(ctx context.Context, e *endpoint, token string, after uint64, r *hostRun, resumed time.Time) {
	r.pushed = true
	entropy := make([]byte, 32)
	if _, err := rand.Read(entropy); err != nil {
		r.restoreErr = err
		return
	}
	wrong := make([]byte, 32)
	rand.Read(wrong)
	r.refusedCode, _, r.refusedErr = e.restore(ctx, hex.EncodeToString(wrong), entropy)

	r.entropy = len(entropy)
	r.restoreCode, r.restore, r.restoreErr = e.restore(ctx, token, entropy)
	r.restored = time.Since(resumed)
	hostWait(ctx, e, token, after, r, resumed)
}

// newToken returns a random bearer token for the guest's host endpoint.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// moduleNames lists the modules of paths by name, for the log.
func moduleNames(paths []string) string {
	if len(paths) == 0 {
		return "none (built in)"
	}
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = moduleName(filepath.Base(p))
	}
	return strings.Join(names, " ")
}

// statusText names an HTTP status code, "no answer" for 0.
func statusText(code int) string {
	if code == 0 {
		return "no answer"
	}
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}
