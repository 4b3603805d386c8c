package main

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// forkMessage is the kernel's record of a VM generation ID change (drivers/
// virt/vmgenid.c calls add_vmfork_randomness, which logs it as "random: ...").
const forkMessage = "random: crng reseeded due to virtual machine fork"

// minAfter is how many client lines each clone must print after the
// snapshot point before the checks run: 20 lines are about a second.
const minAfter = 20

// minReseeded is how many of those lines must come after the provider's
// bump: their csprng output is what the clones must not share.
const minReseeded = 10

// maxBumpDelay bounds the time from cont to the provider's bump.
const maxBumpDelay = time.Second

// observed is what a run saw: the input of the checks.
type observed struct {
	// vmgenid says the VMs had a VM generation ID device.
	vmgenid     bool
	sourceGenID string
	// sourceStatus is the source's GET /v1/status, read by the host
	// through its forwarded port just before the snapshot.
	sourceStatus api.Status
	sourceLines  []console.Line
	// sourceLast is the last client line the source printed before it was
	// stopped: the snapshot point. Later lines come only from clones.
	sourceLast console.Client
	// sourceReady is the source's waiter record: the generation at the
	// snapshot and the watchers registered then.
	sourceReady console.Waiter
	clones      []clone
}

// clone is what one clone showed after it was resumed.
type clone struct {
	name  string
	genID string
	lines []console.Line
	// bumpSeen is the host time from cont until the driver saw the waiter's
	// bump record on the console: an upper bound of the time to the bump,
	// as it adds the waiter's and the driver's polling (5 and 20 ms).
	bumpSeen time.Duration
	// host is what the host saw through the clone's forwarded port.
	host hostRun
}

// check is one condition over a run's observations.
type check struct {
	name string
	fn   func(*observed) error
}

// The checks of each scenario run in order after the clones have run;
// every one must pass. To check more, add a function over the parsed
// console lines and the host's observations here.
var (
	vmgenidChecks = []check{
		{"each clone got its own VM generation ID", checkGenerationIDs},
		{"the host read the source's generation through its forwarded port (GET /v1/status; backend acpi)", checkSourceStatus},
		{"the kernel logged one fork record in each clone", checkForkRecords},
		{"the provider bumped (reason acpi) within 1s of cont in each clone (host clock)", checkBump("acpi", maxBumpDelay)},
		{"after the bump, csprng output differs between the clones and from all the source printed", checkCSPRNGDiverges},
		{"the clones' control generators produced identical bytes", checkControlIdentical},
		{"snapsafectl wait exited 0 in each clone once the watcher acked", checkWait},
		{"the host's GET /v1/wait?after=N answered 200 adapted, above N, in each clone", checkHostWait},
		{"latencies from the fork record measured on the guest clock", checkLatencies},
	}
	hostPushChecks = []check{
		{"the host read the source's generation through its forwarded port (GET /v1/status; no VMGENID device, backend manual)", checkSourceStatus},
		{"the kernel logged no fork record in any clone", checkNoForkRecords},
		{"POST /v1/restore with a wrong token was refused (403) in each clone", checkHostRefused},
		{"POST /v1/restore answered 200 ok, kernel reseeded, above N, in each clone", checkHostRestore},
		{"the provider bumped once (reason host) in each clone", checkBump("host", 0)},
		{"after the bump, csprng output differs between the clones and from all the source printed", checkCSPRNGDiverges},
		{"the clones' control generators produced identical bytes", checkControlIdentical},
		{"snapsafectl wait exited 0 in each clone once the watcher acked", checkWait},
		{"the host's GET /v1/wait?after=N answered 200 adapted, above N, in each clone", checkHostWait},
	}
)

// clientRecords returns the client's lines after the snapshot point.
func clientRecords(lines []console.Line, after time.Duration) ([]console.Client, error) {
	var out []console.Client
	for _, l := range lines {
		if l.Prog != "client" || !strings.HasPrefix(l.Text, "T=") {
			continue // e.g. "exited with status 1", which the tail shows
		}
		c, err := console.ParseClient(l.Text)
		if err != nil {
			return nil, err
		}
		if c.T > after {
			out = append(out, c)
		}
	}
	return out, nil
}

// waiterRecords returns the waiter's records of one event.
func waiterRecords(lines []console.Line, event string) ([]console.Waiter, error) {
	var out []console.Waiter
	for _, l := range lines {
		if l.Prog != "waiter" || !console.IsWaiterRecord(l.Text) {
			continue // what snapsafectl wait printed, which the tail shows
		}
		w, err := console.ParseWaiter(l.Text)
		if err != nil {
			return nil, err
		}
		if w.Event == event {
			out = append(out, w)
		}
	}
	return out, nil
}

// watcherGenerations returns the generations `snapsafectl watch` printed:
// it prints one when it is told of it, before it acks.
func watcherGenerations(lines []console.Line) []uint64 {
	var out []uint64
	for _, l := range lines {
		if g, err := strconv.ParseUint(l.Text, 10, 64); l.Prog == "watcher" && err == nil {
			out = append(out, g)
		}
	}
	return out
}

// uevents returns the lines of the uevent program: one per uevent, such as
// "ACTION=change DEVPATH=/devices/... SUBSYSTEM=acpi NEW_VMGENID=".
func uevents(lines []console.Line) []string {
	var out []string
	for _, l := range lines {
		if l.Prog == "uevent" && strings.HasPrefix(l.Text, "ACTION=") {
			out = append(out, l.Text)
		}
	}
	return out
}

// forkRecords returns the kernel's fork records among the kmsg lines: of
// facility 0, so written by the kernel, not by a process through /dev/kmsg.
func forkRecords(lines []console.Line) []console.Kmsg {
	var out []console.Kmsg
	for _, l := range lines {
		if l.Prog != "kmsg" {
			continue
		}
		// Continuation lines (" KEY=value") and anything garbled are not
		// records; a missing fork record fails the check that needs it.
		k, err := console.ParseKmsg(l.Text)
		if err == nil && k.Facility == 0 && k.Message == forkMessage {
			out = append(out, k)
		}
	}
	return out
}

// clockSyncs returns the client's clock syncs among the kmsg lines.
func clockSyncs(lines ...[]console.Line) []console.ClockSync {
	var out []console.ClockSync
	for _, l := range slices.Concat(lines...) {
		if l.Prog != "kmsg" {
			continue
		}
		if k, err := console.ParseKmsg(l.Text); err == nil {
			if s, ok := console.ParseClockSync(k); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// cloneDone reports whether a clone's console shows all the checks need:
// the wait's result, minAfter client lines after the snapshot point of
// which minReseeded after the bump, and with a VM generation ID device the
// fork record and a clock sync. A line that does not parse ends the wait
// too: the checks report it.
func cloneDone(o *observed, lines []console.Line) bool {
	after, err := clientRecords(lines, o.sourceLast.T)
	if err != nil {
		return true
	}
	waits, err := waiterRecords(lines, console.WaiterWait)
	if err != nil {
		return true
	}
	n := 0
	for _, r := range after {
		if r.Gen > o.sourceReady.Gen {
			n++
		}
	}
	if len(waits) == 0 || len(after) < minAfter || n < minReseeded {
		return false
	}
	return !o.vmgenid || len(forkRecords(lines)) > 0 && len(clockSyncs(lines)) > 0
}

// bumpOf returns the clone's one bump, as the waiter read it from the page.
func bumpOf(c clone) (console.Waiter, error) {
	bumps, err := waiterRecords(c.lines, console.WaiterBump)
	if err != nil {
		return console.Waiter{}, fmt.Errorf("%s: %w", c.name, err)
	}
	if len(bumps) != 1 {
		return console.Waiter{}, fmt.Errorf("%s: the provider bumped %d times after the restore, want 1", c.name, len(bumps))
	}
	return bumps[0], nil
}

// reseeded returns the clone's client lines that show a generation newer
// than the source's: their bytes were drawn after the bump was visible.
func reseeded(o *observed, c clone) ([]console.Client, error) {
	recs, err := clientRecords(c.lines, o.sourceLast.T)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return slices.DeleteFunc(recs, func(r console.Client) bool { return r.Gen <= o.sourceReady.Gen }), nil
}

// latency is what the guest's clock (CLOCK_MONOTONIC) says about one clone.
type latency struct {
	record console.Kmsg
	// recordT is the record's time on the guest's CLOCK_MONOTONIC,
	// interpolated between clock syncs (console.KernelToClient).
	recordT time.Duration
	// resumeToRecord bounds the time from the resume to the record: the
	// guest's clocks stand still while it is stopped, so it is measured
	// from the source's last client line.
	resumeToRecord time.Duration
	recordToBump   time.Duration // to the page's monotonic_ns
	recordToOutput time.Duration // to the first client line with the new generation
	firstReseeded  console.Client
}

// measure places the clone's fork record on the guest's clock and measures
// from it to the provider's bump and to the client's first reseeded output.
func measure(o *observed, c clone) (latency, error) {
	forks := forkRecords(c.lines)
	if len(forks) == 0 {
		return latency{}, fmt.Errorf("%s: no fork record", c.name)
	}
	l := latency{record: forks[0]}
	t, ok := console.KernelToClient(clockSyncs(o.sourceLines, c.lines), l.record.Time)
	if !ok {
		return latency{}, fmt.Errorf("%s: too few clock syncs to place the fork record on the guest's clock", c.name)
	}
	l.recordT = t
	l.resumeToRecord = t - o.sourceLast.T
	b, err := bumpOf(c)
	if err != nil {
		return latency{}, err
	}
	// The provider reads the record after the kernel wrote it: a bump
	// stamped earlier means the clock mapping is wrong.
	if l.recordToBump = b.Mono - t; l.recordToBump < 0 {
		return latency{}, fmt.Errorf("%s: the page's bump (monotonic %v) precedes the fork record (%v on the same clock): the clock syncs do not map the kernel's clock", c.name, b.Mono, t)
	}
	recs, err := reseeded(o, c)
	if err != nil {
		return latency{}, err
	}
	if len(recs) == 0 {
		return latency{}, fmt.Errorf("%s: no client line with a generation newer than %d", c.name, o.sourceReady.Gen)
	}
	l.firstReseeded = recs[0]
	l.recordToOutput = recs[0].T - t
	return l, nil
}

func checkGenerationIDs(o *observed) error {
	seen := map[string]string{o.sourceGenID: "the source"}
	for _, c := range o.clones {
		if c.genID == "" {
			return fmt.Errorf("%s: no generation ID", c.name)
		}
		if prev, ok := seen[c.genID]; ok {
			return fmt.Errorf("%s has the generation ID of %s (%s): QEMU's guid=auto did not change it on restore", c.name, prev, c.genID)
		}
		seen[c.genID] = c.name
	}
	return nil
}

func checkForkRecords(o *observed) error {
	for _, c := range o.clones {
		if n := len(forkRecords(c.lines)); n != 1 {
			return fmt.Errorf("%s: %d kernel records %q, want 1", c.name, n, forkMessage)
		}
	}
	return nil
}

// checkBump returns a check that each clone's provider bumped for the
// restore: one bump, for reason (acpi: the kernel's fork record; host: the
// host's push), above the source's generation, seen on the console within
// maxDelay of cont on the host's clock (0: any time).
func checkBump(reason string, maxDelay time.Duration) func(*observed) error {
	return func(o *observed) error {
		for _, c := range o.clones {
			b, err := bumpOf(c)
			if err != nil {
				return err
			}
			if b.Reason != reason {
				return fmt.Errorf("%s: the provider bumped to %d for reason %q, want %s (%s)", c.name, b.Gen, b.Reason, reason, reasonText[reason])
			}
			if b.Gen <= o.sourceReady.Gen {
				return fmt.Errorf("%s: bumped to generation %d, not above the source's %d", c.name, b.Gen, o.sourceReady.Gen)
			}
			if c.bumpSeen <= 0 || maxDelay > 0 && c.bumpSeen > maxDelay {
				return fmt.Errorf("%s: the bump reached the console %v after cont, want within %v", c.name, c.bumpSeen, maxDelay)
			}
		}
		return nil
	}
}

// reasonText says what a bump's reason stands for.
var reasonText = map[string]string{
	"acpi": "the kernel's VM-fork record",
	"host": "the host's POST /v1/restore",
}

// checkSourceStatus checks what the host read from the source before the
// snapshot: the generation the waiter saw at the snapshot point (the N the
// host waits past), and the event source the scenario's devices make
// snapsafed --backend auto choose: acpi with a VMGENID device, manual,
// which cannot see a restore, without.
func checkSourceStatus(o *observed) error {
	st := o.sourceStatus
	if st.Generation == 0 || st.Generation != o.sourceReady.Gen {
		return fmt.Errorf("the source's endpoint said generation %d, its waiter %d at the snapshot point", st.Generation, o.sourceReady.Gen)
	}
	devices := len(st.VMGenID.Devices)
	switch {
	case o.vmgenid && (st.Source.Name != "acpi" || !st.Source.DetectsRestores || devices == 0):
		return fmt.Errorf("with a VMGENID device: backend %s (detects restores: %v), %d devices probed; want acpi detecting restores", st.Source.Name, st.Source.DetectsRestores, devices)
	case !o.vmgenid && (st.Source.Name != "manual" || st.Source.DetectsRestores || devices != 0):
		return fmt.Errorf("without a VMGENID device: backend %s (detects restores: %v), %d devices probed; want manual, which cannot detect restores", st.Source.Name, st.Source.DetectsRestores, devices)
	}
	return nil
}

// checkNoForkRecords checks that without a VM generation ID device the
// kernel did not reseed for the restore: only the host's push can tell the
// provider.
func checkNoForkRecords(o *observed) error {
	for _, c := range o.clones {
		if n := len(forkRecords(c.lines)); n != 0 {
			return fmt.Errorf("%s: %d kernel records %q without a VMGENID device, want none", c.name, n, forkMessage)
		}
	}
	return nil
}

// checkHostRefused checks that a push with a wrong bearer token was
// refused; checkBump's one bump shows that it did not bump.
func checkHostRefused(o *observed) error {
	for _, c := range o.clones {
		if r := c.host; r.refusedCode != http.StatusForbidden {
			return fmt.Errorf("%s: POST /v1/restore with a wrong token: %s (%v), want 403 Forbidden", c.name, statusText(r.refusedCode), r.refusedErr)
		}
	}
	return nil
}

// checkHostRestore checks the host's push: 200, ok, the kernel RNG
// reseeded (snapsafed runs as root in the guest, with CAP_SYS_ADMIN), the
// generation above the snapshot's and the one the clone's waiter saw.
func checkHostRestore(o *observed) error {
	n := o.sourceStatus.Generation
	for _, c := range o.clones {
		r := c.host
		switch {
		case !r.pushed:
			return fmt.Errorf("%s: the host pushed no restore", c.name)
		case r.restoreErr != nil:
			return fmt.Errorf("%s: POST /v1/restore: %v", c.name, r.restoreErr)
		case r.restoreCode != http.StatusOK || !r.restore.OK || !r.restore.KernelReseeded:
			return fmt.Errorf("%s: POST /v1/restore: %s, ok=%v, kernel_reseeded=%v (%s); want 200, ok, reseeded", c.name, statusText(r.restoreCode), r.restore.OK, r.restore.KernelReseeded, r.restore.KernelReseed)
		case r.restore.Generation <= n:
			return fmt.Errorf("%s: POST /v1/restore: generation %d, not above the snapshot's %d", c.name, r.restore.Generation, n)
		}
		if b, err := bumpOf(c); err == nil && b.Gen != r.restore.Generation {
			return fmt.Errorf("%s: POST /v1/restore said generation %d, the waiter saw the page bump to %d", c.name, r.restore.Generation, b.Gen)
		}
	}
	return nil
}

// checkHostWait checks the host's GET /v1/wait?after=N, N the source's
// generation read before the snapshot: 200, adapted, at a generation above
// N, the one the clone's waiter saw.
func checkHostWait(o *observed) error {
	n := o.sourceStatus.Generation
	for _, c := range o.clones {
		r := c.host
		switch {
		case r.waitErr != nil:
			return fmt.Errorf("%s: GET /v1/wait?after=%d: %v", c.name, n, r.waitErr)
		case r.waitCode != http.StatusOK || !r.wait.Adapted:
			return fmt.Errorf("%s: GET /v1/wait?after=%d: %s, adapted=%v at generation %d, outdated %+v: the clone never adapted within %v", c.name, n, statusText(r.waitCode), r.wait.Adapted, r.wait.Generation, r.wait.Outdated, hostWaitTimeout)
		case r.wait.Generation <= n:
			return fmt.Errorf("%s: GET /v1/wait?after=%d: adapted at generation %d, not above %d", c.name, n, r.wait.Generation, n)
		case r.adapted <= 0:
			return fmt.Errorf("%s: GET /v1/wait: no time measured from cont", c.name)
		}
		if b, err := bumpOf(c); err == nil && b.Gen != r.wait.Generation {
			return fmt.Errorf("%s: GET /v1/wait said generation %d, the waiter saw the page bump to %d", c.name, r.wait.Generation, b.Gen)
		}
	}
	return nil
}

// checkCSPRNGDiverges checks what snapsafe promises: once the provider has
// bumped, no clone's csprng output repeats the other clone's or anything
// the source printed. Lines drawn before the bump was visible (the window
// of docs/sources.md) are not held to it; the summary shows them.
func checkCSPRNGDiverges(o *observed) error {
	if len(o.clones) < 2 {
		return fmt.Errorf("%d clones, want at least 2", len(o.clones))
	}
	where := map[string]string{}
	add := func(out, at string) error {
		if prev, ok := where[out]; ok {
			return fmt.Errorf("CSPRNG OUTPUT REPEATED: %s was printed by %s and by %s", out, prev, at)
		}
		where[out] = at
		return nil
	}
	src, err := clientRecords(o.sourceLines, -1)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	for _, r := range src {
		if err := add(r.CSPRNG, fmt.Sprintf("the source at T=%v", r.T)); err != nil {
			return err
		}
	}
	for _, c := range o.clones {
		b, err := bumpOf(c)
		if err != nil {
			return err
		}
		recs, err := reseeded(o, c)
		if err != nil {
			return err
		}
		if len(recs) < minReseeded {
			return fmt.Errorf("%s: %d client lines after the bump, want at least %d", c.name, len(recs), minReseeded)
		}
		for _, r := range recs {
			if r.Gen != b.Gen || r.Mode != "provider" {
				return fmt.Errorf("%s: client line %s: want generation %d from the provider", c.name, clientString(r), b.Gen)
			}
			if err := add(r.CSPRNG, fmt.Sprintf("%s at T=%v (generation %d)", c.name, r.T, r.Gen)); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkControlIdentical checks that the problem is real here: a userspace
// generator's state is cloned, so every clone continues with the same bytes.
// If the clones differ, this setup cannot show what snapsafe fixes.
func checkControlIdentical(o *observed) error {
	if len(o.clones) < 2 {
		return fmt.Errorf("%d clones, want at least 2", len(o.clones))
	}
	var ref []console.Client
	for i, c := range o.clones {
		recs, err := clientRecords(c.lines, o.sourceLast.T)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		if len(recs) < minAfter {
			return fmt.Errorf("%s: %d client lines after the snapshot point, want at least %d", c.name, len(recs), minAfter)
		}
		// A generator that repeats itself would make identical clones prove
		// nothing.
		seen := map[string]bool{o.sourceLast.Control: true}
		for _, r := range recs {
			if seen[r.Control] {
				return fmt.Errorf("%s: control value %s repeats: the client's generator is broken", c.name, r.Control)
			}
			seen[r.Control] = true
		}
		if i == 0 {
			ref = recs
			continue
		}
		for j := 0; j < len(recs) && j < len(ref); j++ {
			if recs[j].Control != ref[j].Control {
				return errors.New(strings.Join([]string{
					"PROBLEM NOT REPRODUCED: the clones' control bytes differ after the snapshot point",
					fmt.Sprintf("  line %d after it: %s control=%s (T=%d)", j, o.clones[0].name, ref[j].Control, ref[j].T),
					fmt.Sprintf("  line %d after it: %s control=%s (T=%d)", j, c.name, recs[j].Control, recs[j].T),
					"  A userspace generator must continue identically in every clone of one snapshot; here it did not,",
					"  so this setup does not clone process memory the way the test assumes and proves nothing.",
				}, "\n"))
			}
		}
	}
	return nil
}

// checkWait checks the orchestrator wait: in each clone, snapsafectl wait,
// run after the bump, exited 0, and the watcher that was registered at the
// snapshot was told of the bump (it prints a generation before it acks it),
// so the wait had a watcher to wait for.
func checkWait(o *observed) error {
	if o.sourceReady.Watchers < 1 {
		return errors.New("no watcher was registered at the snapshot: the wait would prove nothing")
	}
	for _, c := range o.clones {
		b, err := bumpOf(c)
		if err != nil {
			return err
		}
		waits, err := waiterRecords(c.lines, console.WaiterWait)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		if len(waits) != 1 {
			return fmt.Errorf("%s: %d results of snapsafectl wait, want 1", c.name, len(waits))
		}
		if w := waits[0]; w.Gen != b.Gen || w.Exit != 0 {
			return fmt.Errorf("%s: snapsafectl wait after the bump to %d exited %d, want 0 (3: timed out, 4: a newer generation, 6: no provider)", c.name, w.Gen, w.Exit)
		}
		if gens := watcherGenerations(c.lines); !slices.Contains(gens, b.Gen) {
			return fmt.Errorf("%s: the watcher printed generations %v, not %d: it was not told of the bump", c.name, gens, b.Gen)
		}
	}
	return nil
}

func checkLatencies(o *observed) error {
	for _, c := range o.clones {
		if _, err := measure(o, c); err != nil {
			return err
		}
	}
	return nil
}
