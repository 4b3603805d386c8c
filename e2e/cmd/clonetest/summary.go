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

// printSummary prints what a passing run showed: the generations, the
// wait's result, the latencies, and the clones' client lines side by side
// from the snapshot point until a few lines after the bump.
func printSummary(w io.Writer, kernel string, o *observed) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "clonetest: "+format+"\n", args...) }
	p("==== summary, guest kernel %s", kernel)

	var gens, waits []string
	var lats []latency
	var after [][]console.Client
	for _, c := range o.clones {
		b, err1 := bumpOf(c)
		ws, err2 := waiterRecords(c.lines, console.WaiterWait)
		l, err3 := measure(o, c)
		recs, err4 := clientRecords(c.lines, o.sourceLast.T)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(ws) == 0 {
			// The checks passed, so this does not happen; say so if it does.
			p("%s: cannot summarize: the checks should have failed", c.name)
			return
		}
		gens = append(gens, fmt.Sprintf("%s %d -> %d (reason %s)", c.name, o.sourceReady.Gen, b.Gen, b.Reason))
		waits = append(waits, fmt.Sprintf("%s exit %d", c.name, ws[0].Exit))
		lats = append(lats, l)
		after = append(after, recs)
	}
	p("generation: source %d at the snapshot; %s", o.sourceReady.Gen, strings.Join(gens, "; "))
	p("snapsafectl wait after the bump: %s (%d watcher, acked)", strings.Join(waits, ", "), o.sourceReady.Watchers)
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
	p("  %-42s%-12s%s", "latencies", a.name, b.name)
	row := func(what string, f func(c clone, l latency) time.Duration) {
		p("  %-42s%-12v%v", what, f(a, lats[0]).Round(10*time.Microsecond), f(b, lats[1]).Round(10*time.Microsecond))
	}
	row("cont -> bump on the console (host)", func(c clone, _ latency) time.Duration { return c.bumpSeen })
	row("resume -> fork record (guest, at most)", func(_ clone, l latency) time.Duration { return l.resumeToRecord })
	row("fork record -> page bump (guest)", func(_ clone, l latency) time.Duration { return l.recordToBump })
	row("fork record -> 1st reseeded line (guest)", func(_ clone, l latency) time.Duration { return l.recordToOutput })

	// Rows until each clone has shown summaryReseeded reseeded lines.
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
	window := false
	for i := range n {
		x, y := after[0][i], after[1][i]
		csprng := "differ"
		switch {
		case x.CSPRNG != y.CSPRNG:
		case x.Gen <= o.sourceReady.Gen || y.Gen <= o.sourceReady.Gen:
			csprng, window = "same*", true
		default:
			csprng = "SAME"
		}
		control := x.Control + " identical"
		if x.Control != y.Control {
			control = x.Control + " | " + y.Control + " DIFFER"
		}
		p("  +%-3d %-3d %-32s %-3d %-32s %-7s %s", i+1, x.Gen, x.CSPRNG, y.Gen, y.CSPRNG, csprng, control)
	}
	if window {
		p("  * drawn with generation %d, after the resume but before the provider's bump: the window of README.md, \"Races, honestly\"", o.sourceReady.Gen)
	}
}
