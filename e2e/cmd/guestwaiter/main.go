// Command guestwaiter is the end-to-end test's stand-in for an orchestrator
// inside the guest: the host has no agent there, so a guest program must run
// `snapsafectl wait` once the provider has bumped after a restore.
//
// It attaches to the provider, waits until the watchers it is told to expect
// are registered, and prints
//
//	ready gen=<generation> watchers=<count>
//
// Then, each time the page's generation moves, it prints the page's bump
//
//	bump gen=<generation> reason=<reason> mono=<CLOCK_MONOTONIC ns of the bump>
//
// runs `snapsafectl wait --timeout D` (its messages appear on this
// program's output) and prints its exit code:
//
//	wait gen=<generation> exit=<code>
//
// The driver (e2e/cmd/clonetest) parses these lines with e2e/console.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/shm"
)

func main() {
	watchers := flag.Int("watchers", 1, "watchers that must be registered before it reports ready")
	waitTimeout := flag.Duration("wait-timeout", 10*time.Second, "--timeout of snapsafectl wait")
	// Watching the page is a load from shared memory; a watcher of our own
	// would be one more watcher for the wait to wait for.
	poll := flag.Duration("poll", 5*time.Millisecond, "how often to look at the generation page")
	flag.Parse()

	c, err := client.Attach("")
	if err != nil {
		fail(err)
	}
	tick := time.NewTicker(*poll)
	defer tick.Stop()
	next := func() {
		select {
		case <-c.Done():
			fail(fmt.Errorf("the provider went away: %w", c.Err()))
		case <-tick.C:
		}
	}

	var gen uint64
	for {
		st, err := c.Status(context.Background())
		if err != nil {
			fail(err)
		}
		if st.Watchers >= *watchers {
			gen = c.Generation()
			fmt.Printf("%s gen=%d watchers=%d\n", console.WaiterReady, gen, st.Watchers)
			break
		}
		next()
	}
	for {
		next()
		// Sleep until the bump's write section is over (its wipe mark,
		// written last, reaches the generation) rather than spin in the
		// page's reader: on a one-CPU guest a spinning reader takes the
		// CPU from the provider that is finishing the bump.
		if g := c.Generation(); g == gen || c.Page().Wiped() < g {
			continue
		}
		s, err := c.Snapshot()
		// The reader gives up after 50 ms in a write section, in case the
		// provider died mid-bump. Right after a restore under QEMU's TCG,
		// which translates every guest code path anew, a bump's write
		// section has lasted longer; the provider is alive as long as its
		// connection is, so wait on.
		for errors.Is(err, shm.ErrBusy) {
			next()
			s, err = c.Snapshot()
		}
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s gen=%d reason=%s mono=%d\n", console.WaiterBump, s.Generation, s.Reason, s.Mono.Nanoseconds())
		fmt.Printf("%s gen=%d exit=%d\n", console.WaiterWait, s.Generation, snapsafectlWait(*waitTimeout))
		gen = s.Generation
	}
}

// snapsafectlWait runs the orchestrator wait and returns its exit code, -1
// when it could not run.
func snapsafectlWait(timeout time.Duration) int {
	cmd := exec.Command("snapsafectl", "wait", "--timeout", timeout.String())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	fmt.Printf("guestwaiter: running snapsafectl wait: %v\n", err)
	return -1
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "guestwaiter: %v\n", err)
	os.Exit(1)
}
