package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
)

// summaryReseeded is how many reseeded lines of each clone the summary's
// table shows.
const summaryReseeded = 3

// printSummary prints what a passing run of the vmgenid scenario showed:
// the generations, the wait's result, the latencies, and the clones' client
// lines side by side from the snapshot point until a few lines after the
// bump.
func printSummary(w io.Writer, kernel string, o *observed) {
	p := printer(w)
	p("==== summary, guest kernel %s, scenario vmgenid", kernel)

	var lats []latency
	for _, c := range o.clones {
		l, err := measure(o, c)
		if err != nil {
			// The checks passed, so this does not happen; say so if it does.
			p("%s: cannot summarize: the checks should have failed", c.name)
			return
		}
		lats = append(lats, l)
	}
	after, ok := summarizeClones(p, o)
	if !ok {
		return
	}
	var ues []string
	for _, c := range o.clones {
		ev := "none"
		if u := uevents(c.lines); len(u) > 0 {
			ev = strings.Join(u, "; ")
		}
		ues = append(ues, c.name+" "+ev)
	}
	p("uevents after the resume: %s", strings.Join(ues, ", "))

	a, b := o.clones[0], o.clones[1]
	row := latencyTable(p, a, b)
	row("cont -> bump on the console (host)", a.bumpSeen, b.bumpSeen)
	row("cont -> GET /v1/wait adapted (host)", a.host.adapted, b.host.adapted)
	row("resume -> fork record (guest, at most)", lats[0].resumeToRecord, lats[1].resumeToRecord)
	row("fork record -> page bump (guest)", lats[0].recordToBump, lats[1].recordToBump)
	row("fork record -> 1st reseeded line (guest)", lats[0].recordToOutput, lats[1].recordToOutput)

	clientTable(p, o, after, "after the resume but before the provider's bump: the window of README.md, \"Races, honestly\"")
}

// printPushSummary prints what a passing run of the host-push scenario
// showed: the generations, the host's push and wait, the latencies and the
// clones' client lines.
func printPushSummary(w io.Writer, kernel string, o *observed) {
	p := printer(w)
	p("==== summary, guest kernel %s, scenario host-push (no VMGENID device: backend %s, detects restores: %v)",
		kernel, o.sourceStatus.Source.Name, o.sourceStatus.Source.DetectsRestores)
	after, ok := summarizeClones(p, o)
	if !ok {
		return
	}
	var pushes, refused []string
	for _, c := range o.clones {
		r := c.host.restore
		pushes = append(pushes, fmt.Sprintf("%s %s ok=%v generation %d kernel_reseeded=%v (%s)",
			c.name, statusText(c.host.restoreCode), r.OK, r.Generation, r.KernelReseeded, r.KernelReseed))
		refused = append(refused, fmt.Sprintf("%s %s", c.name, statusText(c.host.refusedCode)))
	}
	p("POST /v1/restore, %d bytes of the host's entropy, its own for each clone: %s", o.clones[0].host.entropy, strings.Join(pushes, "; "))
	p("POST /v1/restore with a wrong token, before: %s", strings.Join(refused, ", "))

	a, b := o.clones[0], o.clones[1]
	var firsts [2]time.Duration
	for i, c := range o.clones[:2] {
		bump, err1 := bumpOf(c)
		recs, err2 := reseeded(o, c)
		if err1 != nil || err2 != nil || len(recs) == 0 {
			p("%s: cannot summarize: the checks should have failed", c.name)
			return
		}
		firsts[i] = recs[0].T - bump.Mono
	}
	row := latencyTable(p, a, b)
	row("cont -> POST /v1/restore answered (host)", a.host.restored, b.host.restored)
	row("cont -> bump on the console (host)", a.bumpSeen, b.bumpSeen)
	row("cont -> GET /v1/wait adapted (host)", a.host.adapted, b.host.adapted)
	row("page bump -> 1st reseeded line (guest)", firsts[0], firsts[1])

	clientTable(p, o, after, "after the resume but before the host's push: without a VMGENID device nothing else tells the provider")
}

type printFunc func(format string, args ...any)

func printer(w io.Writer) printFunc {
	return func(format string, args ...any) { fmt.Fprintf(w, "clonetest: "+format+"\n", args...) }
}

// summarizeClones prints the lines every scenario's summary has: the
// generations, the host's view of them and the guest's wait, and returns
// each clone's client lines after the snapshot point.
func summarizeClones(p printFunc, o *observed) ([][]console.Client, bool) {
	var gens, waits, host []string
	var after [][]console.Client
	for _, c := range o.clones {
		b, err1 := bumpOf(c)
		ws, err2 := waiterRecords(c.lines, console.WaiterWait)
		recs, err3 := clientRecords(c.lines, o.sourceLast.T)
		if err1 != nil || err2 != nil || err3 != nil || len(ws) == 0 {
			// The checks passed, so this does not happen; say so if it does.
			p("%s: cannot summarize: the checks should have failed", c.name)
			return nil, false
		}
		gens = append(gens, fmt.Sprintf("%s %d -> %d (reason %s)", c.name, o.sourceReady.Gen, b.Gen, b.Reason))
		waits = append(waits, fmt.Sprintf("%s exit %d", c.name, ws[0].Exit))
		host = append(host, fmt.Sprintf("%s on 127.0.0.1:%d %s adapted=%v at generation %d (waited %.3fs in the guest)",
			c.name, c.host.port, statusText(c.host.waitCode), c.host.wait.Adapted, c.host.wait.Generation, c.host.wait.WaitedSeconds))
		after = append(after, recs)
	}
	p("generation: source %d at the snapshot; %s", o.sourceReady.Gen, strings.Join(gens, "; "))
	p("host: GET /v1/status on the source before the snapshot: generation %d; GET /v1/wait?after=%d&timeout=%v after cont: %s",
		o.sourceStatus.Generation, o.sourceStatus.Generation, hostWaitTimeout, strings.Join(host, "; "))
	p("snapsafectl wait after the bump: %s (%d watcher, acked)", strings.Join(waits, ", "), o.sourceReady.Watchers)
	return after, true
}

// latencyTable prints the header of a latency table of clones a and b and
// returns the function that prints its rows.
func latencyTable(p printFunc, a, b clone) func(what string, x, y time.Duration) {
	p("  %-42s%-12s%s", "latencies", a.name, b.name)
	return func(what string, x, y time.Duration) {
		p("  %-42s%-12v%v", what, x.Round(10*time.Microsecond), y.Round(10*time.Microsecond))
	}
}

// clientTable prints the first two clones' client lines side by side until
// each has shown summaryReseeded reseeded lines; window says when the lines
// drawn with the source's generation were drawn.
func clientTable(p printFunc, o *observed, after [][]console.Client, window string) {
	a, b := o.clones[0], o.clones[1]
	n := 0
	for _, recs := range after[:2] {
		seen := 0
		for i, r := range recs {
			if r.Gen > o.sourceReady.Gen {
				if seen++; seen == summaryReseeded {
					n = max(n, i+1)
					break
				}
			}
		}
	}
	n = min(n, len(after[0]), len(after[1]))
	p("client lines after the snapshot (gen, 16 bytes of csprng; 16 bytes of the control generator):")
	p("  %-4s %-36s %-36s %-7s %s", "line", a.name, b.name, "csprng", "control")
	inWindow := false
	for i := range n {
		x, y := after[0][i], after[1][i]
		csprng := "differ"
		switch {
		case x.CSPRNG != y.CSPRNG:
		case x.Gen <= o.sourceReady.Gen || y.Gen <= o.sourceReady.Gen:
			csprng, inWindow = "same*", true
		default:
			csprng = "SAME"
		}
		control := x.Control + " identical"
		if x.Control != y.Control {
			control = x.Control + " | " + y.Control + " DIFFER"
		}
		p("  +%-3d %-3d %-32s %-3d %-32s %-7s %s", i+1, x.Gen, x.CSPRNG, y.Gen, y.CSPRNG, csprng, control)
	}
	if inWindow {
		p("  * drawn with generation %d, %s", o.sourceReady.Gen, window)
	}
}
