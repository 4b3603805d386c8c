// Command snapsafectl inspects and drives a snapsafe provider: status,
// forced bumps, watchers and the orchestrator wait.
//
// Exit codes: 0 ok, 1 error, 2 usage, 3 timed out, 4 a newer generation
// arrived while waiting, 5 not permitted, 6 no provider running.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/client"
)

// Exit codes of the CLI contract.
const (
	exitOK            = 0
	exitError         = 1
	exitUsage         = 2
	exitTimeout       = 3
	exitNewGeneration = 4
	exitNotPermitted  = 5
	exitNoProvider    = 6
)

const usage = `usage: snapsafectl [--dir D] <command> [flags]

commands:
  status [--json]                 show the generation, watchers and provider state
  bump [--min N]                  force a new generation max(N, current+1) (privileged)
  watch [--ack] [--exec CMD] [--label L] [--count K] [--timeout D]
                                  print each new generation; run CMD, then ack;
                                  keeps watching across provider restarts
  wait [--timeout D]              wait until no watcher is outdated
  bench [--time D]                measure the probe and csprng against crypto/rand here

exit codes: 0 ok, 1 error, 2 usage, 3 timed out, 4 newer generation, 5 not permitted, 6 no provider
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// cli carries what every command needs.
type cli struct {
	dir    string
	stdout io.Writer
	stderr io.Writer
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("snapsafectl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	c := cli{stdout: stdout, stderr: stderr}
	fs.StringVar(&c.dir, "dir", "", "state directory (default $SNAPSAFE_DIR, else the running provider's)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmds := map[string]func([]string) int{
		"status": c.status,
		"bump":   c.bump,
		"watch":  c.watch,
		"wait":   c.wait,
		"bench":  c.bench,
	}
	cmd, ok := cmds[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(stderr, "snapsafectl: unknown command %q: use status, bump, watch, wait or bench (see -h)\n", fs.Arg(0))
		return exitUsage
	}
	return cmd(fs.Args()[1:])
}

// flags parses a command's flags; it returns false (and the exit code) on
// a usage error.
func (c cli) flags(name string, args []string, define func(*flag.FlagSet)) (int, bool) {
	fs := flag.NewFlagSet("snapsafectl "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	define(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "snapsafectl %s: unexpected argument %q (see snapsafectl %s -h)\n", name, fs.Arg(0), name)
		return exitUsage, false
	}
	return 0, true
}

// fail prints err as one line and maps it to the contract's exit code.
func (c cli) fail(err error) int {
	// Library errors already name the operation ("bump: ..."); errors from
	// attaching name the directory instead.
	fmt.Fprintf(c.stderr, "snapsafectl: %v\n", err)
	switch {
	case errors.Is(err, client.ErrRefused):
		// A provider runs, but its bounds on clients refused this one:
		// an error (1), not "no provider" (6).
		return exitError
	case errors.Is(err, client.ErrUntrusted):
		return exitError // someone else's directory or provider: never "no provider"
	case errors.Is(err, client.ErrNoProvider), errors.Is(err, client.ErrProviderGone):
		return exitNoProvider
	case errors.Is(err, client.ErrNotPermitted):
		return exitNotPermitted
	case errors.Is(err, client.ErrNewGeneration):
		return exitNewGeneration
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	}
	return exitError
}

// attached attaches to the provider and runs fn with a context that ends on
// SIGINT, SIGTERM or, when timeout > 0, after timeout.
func (c cli) attached(timeout time.Duration, fn func(context.Context, *client.Client) int) int {
	cl, err := client.Attach(c.dir)
	if err != nil {
		return c.fail(err)
	}
	defer cl.Close()
	ctx, cancel := signalContext(timeout)
	defer cancel()
	return fn(ctx, cl)
}

// signalContext is cancelled by SIGINT or SIGTERM and, when timeout > 0,
// times out after it.
func signalContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if timeout <= 0 {
		return ctx, stop
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	return tctx, func() { cancel(); stop() }
}

func (c cli) status(args []string) int {
	var asJSON bool
	if code, ok := c.flags("status", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	}); !ok {
		return code
	}
	return c.attached(5*time.Second, func(ctx context.Context, cl *client.Client) int { return c.printStatus(ctx, cl, asJSON) })
}

func (c cli) printStatus(ctx context.Context, cl *client.Client, asJSON bool) int {
	s, err := cl.Status(ctx)
	if err != nil {
		return c.fail(err)
	}
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return c.fail(err)
		}
		return exitOK
	}
	source, err := sourceFields(s.Source)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "generation  %d (reason %s, %s)\n", s.Generation, s.Reason, s.BumpTime.Format(time.RFC3339Nano))
	fmt.Fprintf(c.stdout, "epoch       %s\n", s.Epoch)
	fmt.Fprintf(c.stdout, "watchers    %d (%d outdated, %d orchestrator waits)\n", s.Watchers, s.Outdated, s.Waiting)
	for _, w := range s.WatcherList {
		state := "acked"
		switch {
		case w.Expected:
			state = "expected back after a restart"
		case w.Outdated:
			state = "OUTDATED"
		}
		if !w.Tracked {
			state += ", untracked"
		}
		fmt.Fprintf(c.stdout, "  %-20s pid %d uid %d %s: generation %d, %s\n", labelOr(w.Label), w.PID, w.UID, w.Comm, w.Acked, state)
	}
	for _, h := range s.Hooks {
		fmt.Fprintf(c.stdout, "  hook:%-15s %s %s\n", h.Name, h.State, h.Reason)
	}
	fmt.Fprintf(c.stdout, "clients     %d (%d wipe regions, %d bytes)\n", s.Clients, s.Regions, s.RegionBytes)
	fmt.Fprintf(c.stdout, "backend     %s\n", s.Backend)
	for _, k := range slices.Sorted(maps.Keys(source)) {
		fmt.Fprintf(c.stdout, "  %-18s %v\n", k, source[k])
	}
	v := s.VMGenID
	fmt.Fprintf(c.stdout, "vmgenid     kernel %s, signals %v, %d VM-fork records since boot\n", v.Kernel, v.Signals, v.ForkRecords)
	for _, d := range v.Devices {
		fmt.Fprintf(c.stdout, "  device %s (hid %s, driver %q)\n", d.SysfsPath, d.HID, d.Driver)
	}
	for _, p := range v.Problems {
		fmt.Fprintf(c.stdout, "  problem: %s\n", p)
	}
	fmt.Fprintf(c.stdout, "provider    pid %d, %s, %d bumps since %s\n", s.ProviderPID, s.State, s.Bumps, s.Started.Format(time.RFC3339))
	fmt.Fprintf(c.stdout, "directory   %s\n", s.Dir)
	return exitOK
}

// sourceFields returns the event source's description as the JSON object
// of the status reply, so that the listing shows the keys status --json
// shows.
func sourceFields(s api.SourceInfo) (map[string]any, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func (c cli) bump(args []string) int {
	var floor uint64
	if code, ok := c.flags("bump", args, func(fs *flag.FlagSet) {
		fs.Uint64Var(&floor, "min", 0, "the new generation is at least N")
	}); !ok {
		return code
	}
	return c.attached(5*time.Second, func(ctx context.Context, cl *client.Client) int {
		gen, err := cl.Bump(ctx, floor)
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintln(c.stdout, gen)
		return exitOK
	})
}

func (c cli) wait(args []string) int {
	var timeout time.Duration
	if code, ok := c.flags("wait", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&timeout, "timeout", 0, "give up after D (exit 3); 0 waits forever")
	}); !ok {
		return code
	}
	return c.attached(timeout, func(ctx context.Context, cl *client.Client) int {
		if err := cl.Wait(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				fmt.Fprintf(c.stderr, "snapsafectl wait: timed out after %v: these have not acknowledged the current generation:\n", timeout)
				c.printOutdated(cl)
				return exitTimeout
			}
			return c.fail(err)
		}
		return exitOK
	})
}

// printOutdated names, one line each on stderr, the tracked watchers and
// hooks that hold up the wait, so the operator knows whom to look at.
func (c cli) printOutdated(cl *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := cl.Status(ctx)
	if err != nil {
		fmt.Fprintf(c.stderr, "  (could not list them: %v)\n", err)
		return
	}
	for _, w := range s.WatcherList {
		if w.Outdated && w.Tracked {
			expected := ""
			if w.Expected {
				expected = ", not registered again since the provider started"
			}
			fmt.Fprintf(c.stderr, "  watcher %s pid %d (%s, uid %d), acked generation %d of %d%s\n",
				labelOr(w.Label), w.PID, w.Comm, w.UID, w.Acked, s.Generation, expected)
		}
	}
	for _, h := range s.Hooks {
		if h.State != "ok" && h.State != "refused" {
			fmt.Fprintf(c.stderr, "  hook:%s %s %s\n", h.Name, h.State, h.Reason)
		}
	}
}

func labelOr(l string) string {
	if l == "" {
		return "(no label)"
	}
	return l
}

func (c cli) watch(args []string) int {
	var (
		ack     bool
		command string
		label   string
		count   int
		timeout time.Duration
	)
	if code, ok := c.flags("watch", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&ack, "ack", false, "acknowledge each generation (after CMD succeeded, with --exec)")
		fs.StringVar(&command, "exec", "", "run CMD with sh -c on each new generation, with SNAPSAFE_GENERATION set")
		fs.StringVar(&label, "label", "", "name this watcher in status and in wait's report (at most 64 bytes)")
		fs.IntVar(&count, "count", 0, "exit 0 after K generations (0: no limit)")
		fs.DurationVar(&timeout, "timeout", 0, "exit 3 after D unless --count was reached (0: no limit)")
	}); !ok {
		return code
	}
	if count < 0 {
		fmt.Fprintf(c.stderr, "snapsafectl watch: --count %d: must be 0 or more\n", count)
		return exitUsage
	}
	return c.attached(timeout, func(ctx context.Context, cl *client.Client) int {
		return c.watchLoop(ctx, cl, watchArgs{ack, command, label, count, timeout})
	})
}

// watchArgs are watch's flags.
type watchArgs struct {
	ack     bool
	command string
	label   string
	count   int
	timeout time.Duration
}

// watchLoop prints each new generation, runs --exec and acks. It exits 1
// at the end if any run of the command failed. It outlives the provider:
// the watcher re-attaches when the provider is back, and the new provider's
// start-up generation is handled like any other; only --count, --timeout
// and a signal end it.
func (c cli) watchLoop(ctx context.Context, cl *client.Client, a watchArgs) int {
	// The callbacks run one at a time, on the watcher's reconnect goroutine.
	attached := true
	lost := func(err error) {
		if attached {
			attached = false
			fmt.Fprintf(c.stderr, "snapsafectl watch: lost the provider on %s (%v): re-attaching once it is back\n", cl.Dir(), err)
			return
		}
		fmt.Fprintf(c.stderr, "snapsafectl watch: cannot re-attach yet (%v): retrying\n", err)
	}
	regained := func(gen uint64) {
		attached = true
		fmt.Fprintf(c.stderr, "snapsafectl watch: re-attached to the provider on %s at generation %d\n", cl.Dir(), gen)
	}
	w, err := cl.Watch(ctx, client.WithLabel(a.label), client.OnConnection(lost, regained))
	if err != nil {
		return c.fail(err)
	}
	defer w.Close()
	failed := false
	end := func(code int) int {
		if failed && code == exitOK {
			fmt.Fprintln(c.stderr, "snapsafectl watch: some runs of --exec failed (see above)")
			return exitError
		}
		return code
	}
	for n := 0; a.count == 0 || n < a.count; n++ {
		gen, err := w.Next(ctx)
		if err != nil {
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				fmt.Fprintf(c.stderr, "snapsafectl watch: timed out after %v\n", a.timeout)
				return exitTimeout
			case errors.Is(err, context.Canceled):
				return end(exitOK) // interrupted by a signal
			}
			return c.fail(err)
		}
		fmt.Fprintln(c.stdout, gen)
		if a.command != "" && !c.runHook(ctx, a.command, gen) {
			failed = true
			continue // not acknowledged: the watcher stays outdated
		}
		if a.ack {
			err := w.Ack(ctx, gen)
			switch {
			case err == nil:
			case errors.Is(err, client.ErrBadAck):
				// A newer generation arrived meanwhile; Next returns it.
			case errors.Is(err, client.ErrProviderGone) && ctx.Err() == nil:
				// The provider went away: Next returns the generation
				// of the next one, once the watcher re-attached.
			case errors.Is(err, context.DeadlineExceeded):
				fmt.Fprintf(c.stderr, "snapsafectl watch: timed out after %v\n", a.timeout)
				return exitTimeout
			case errors.Is(err, context.Canceled):
				return end(exitOK)
			default:
				return c.fail(err)
			}
		}
	}
	return end(exitOK)
}

// runHook runs the --exec command for gen and reports whether it succeeded.
func (c cli) runHook(ctx context.Context, command string, gen uint64) bool {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), "SNAPSAFE_GENERATION="+strconv.FormatUint(gen, 10))
	cmd.Stdout, cmd.Stderr = c.stderr, c.stderr // stdout carries only generations
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(c.stderr, "snapsafectl watch: --exec for generation %d failed (%v): not acknowledging\n", gen, err)
		return false
	}
	return true
}
