package main

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
)

// forkMessage is the kernel's record of a VM generation ID change (drivers/
// virt/vmgenid.c calls add_vmfork_randomness, which logs it as "random: ...").
const forkMessage = "random: crng reseeded due to virtual machine fork"

// minAfter is how many client lines each clone must print after the
// snapshot point before the checks run: 20 lines are about a second.
const minAfter = 20

// observed is what a run saw: the input of the checks.
type observed struct {
	sourceGenID string
	sourceLines []console.Line
	// sourceLast is the last client line the source printed before it was
	// stopped: the snapshot point. Later lines come only from clones.
	sourceLast console.Client
	clones     []clone
}

// clone is what one clone showed after it was resumed.
type clone struct {
	name  string
	genID string
	lines []console.Line
}

// check is one condition over a run's observations.
type check struct {
	name string
	fn   func(*observed) error
}

// checks run in order after the clones have run; every one must pass. To
// check more (the csprng output, the generation, the watchers), add a
// function over the parsed console lines here.
var checks = []check{
	{"each clone got its own VM generation ID", checkGenerationIDs},
	{"the kernel logged one fork record in each clone", checkForkRecords},
	{"the clones' control generators produced identical bytes", checkControlIdentical},
}

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

// forkPlacement is where a clone's fork record falls among its client lines.
type forkPlacement struct {
	record console.Kmsg
	t      time.Duration // the record's time on the client's clock
	// Up to two client lines on either side, the source's included.
	before, after []console.Client
}

// placeFork converts the time of the clone's fork record to the client's
// clock (see console.ClockSync) and finds the client lines around it.
func placeFork(o *observed, c clone) (forkPlacement, error) {
	forks := forkRecords(c.lines)
	if len(forks) == 0 {
		return forkPlacement{}, errors.New("no fork record")
	}
	p := forkPlacement{record: forks[0]}
	t, ok := console.KernelToClient(clockSyncs(o.sourceLines, c.lines), p.record.Time)
	if !ok {
		return forkPlacement{}, errors.New("too few clock syncs to place the fork record among the client lines")
	}
	p.t = t
	recs, err := clientRecords(slices.Concat(o.sourceLines, c.lines), -1)
	if err != nil {
		return forkPlacement{}, err
	}
	i, _ := slices.BinarySearchFunc(recs, t, func(r console.Client, t time.Duration) int { return cmp.Compare(r.T, t) })
	p.before = recs[max(i-2, 0):i]
	p.after = recs[i:min(i+2, len(recs))]
	return p, nil
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
					"  so this setup does not clone process memory the way the test assumes.",
				}, "\n"))
			}
		}
	}
	return nil
}
