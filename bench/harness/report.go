package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

type report struct {
	started   time.Time
	cpu       string
	goVersion string
	procs     int
	results   []result
	pkg       map[string]metrics
	goals     []goal
	info      []goal // figures without a goal
	missed    int
	notes     []string
}

// A goal is one figure of the performance issue (or of another issue's
// benchmark list) with its target.
type goal struct {
	name    string
	value   float64
	unit    string // "x" for ratios
	target  float64
	atLeast bool // the value must be >= target (else <=)
	how     string
	ok      bool
}

func (g goal) String() string {
	cmp := "<="
	if g.atLeast {
		cmp = ">="
	}
	return fmt.Sprintf("%s %s %s", format(g.value, g.unit), cmp, format(g.target, g.unit))
}

func format(v float64, unit string) string {
	switch {
	case unit == "x":
		return fmt.Sprintf("%.2fx", v)
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

// evaluate computes every goal from the measurements.
func (rep *report) evaluate() {
	ns := func(gen, op string) float64 {
		r, ok := rep.find(gen, op)
		if !ok {
			return 0
		}
		return r.ns
	}
	ratio := func(name string, a, b float64, target float64, atLeast bool, how string) {
		if a == 0 || b == 0 {
			return
		}
		rep.add(goal{name: name, value: a / b, unit: "x", target: target, atLeast: atLeast, how: how})
	}
	ratio("csprng.Uint64 vs math/rand/v2 Uint64 (time)", ns(genCsprng, "Uint64"), ns(genMathGlobal, "Uint64"), 1.5, false, "in-process, side by side")
	ratio("Rand.Uint64 vs ChaCha8.Uint64 (time)", ns(genCsprngRand, "Uint64"), ns(genChaCha8, "Uint64"), 1.0, false, "in-process, side by side")
	ratio("csprng.Uint64 vs crypto/rand.Read 8 B (time)", ns(genCsprng, "Uint64"), ns(genCrypto, "Read 8"), 0.25, false, "in-process, side by side")
	ratio("csprng.Read 32 B vs crypto/rand.Read 32 B (time)", ns(genCsprng, "Read 32"), ns(genCrypto, "Read 32"), 0.25, false, "in-process, side by side")
	ratio("csprng.Read 4 KiB vs crypto/rand throughput", ns(genCrypto, "Read 4096"), ns(genCsprng, "Read 4096"), 6, true, "in-process, side by side")
	ratio(fmt.Sprintf("parallel csprng.Uint64 on %d Ps vs single (time per op)", rep.procs), ns(genCsprng, "Uint64 parallel"), ns(genCsprng, "Uint64"), 0.65, false, "b.RunParallel")
	var allocs int64
	for _, r := range rep.results {
		if strings.HasPrefix(r.gen, "csprng") {
			allocs = max(allocs, r.allocs)
		}
	}
	rep.add(goal{name: "allocations on csprng's hot paths (most of any case)", value: float64(allocs), unit: "allocs", target: 0, how: "testing.B ReportAllocs"})

	if on, off := rep.pkg["BenchmarkGenerationCheck/on"]["ns/op"], rep.pkg["BenchmarkGenerationCheck/off"]["ns/op"]; on > 0 && off > 0 {
		rep.add(goal{name: "generation check, cost per call", value: on - off, unit: "ns", target: 0.5, how: "csprng BenchmarkGenerationCheck: Rand.Uint64 with and without it"})
	}
	if m, ok := rep.pkg["BenchmarkReseed"]; ok {
		rep.add(goal{name: "first call after a bump (reseed)", value: m["ns/op"] / 1e3, unit: "µs", target: 2, how: "csprng BenchmarkReseed"})
	}
	if m, ok := rep.pkg["BenchmarkGeneration"]; ok {
		rep.add(goal{name: "runtime Client.Generation()", value: m["ns/op"], unit: "ns", target: 1, how: "provider BenchmarkGeneration"})
	}
	for _, n := range []string{"1", "100", "1000"} {
		if m, ok := rep.pkg["BenchmarkBumpNotify/watchers="+n]; ok {
			g := goal{name: "bump to all " + n + " watchers notified", value: m["ns/op"] / 1e6, unit: "ms", how: "provider BenchmarkBumpNotify"}
			if n == "1000" {
				g.target = 5
				rep.add(g)
			} else {
				rep.info = append(rep.info, g)
			}
		}
	}
	for _, n := range []string{"1000", "3500", "10000"} {
		m, ok := rep.pkg["BenchmarkBumpAckWait/watchers="+n]
		if !ok {
			continue
		}
		floor := ""
		if f, ok := rep.pkg["BenchmarkBumpAckWaitFloor/watchers="+n]; ok {
			floor = fmt.Sprintf("; a bare server: p50 %.0f ms, p99 %.0f ms", f["p50-ms"], f["p99-ms"])
		}
		how := fmt.Sprintf("provider BenchmarkBumpAckWait, %.0f rounds, p99 %.0f ms, CPU per round %.0f ms (watchers %.0f ms)%s",
			m["rounds"], m["p99-ms"], m["cpu-ms/op"], m["client-cpu-ms/op"], floor)
		g := goal{name: "bump to all " + n + " watchers acked to wait, p50", value: m["p50-ms"], unit: "ms", how: how}
		mem := goal{name: "provider memory per watcher, " + n + " connected", value: m["B/watcher"] / 1024, unit: "KiB",
			how: "provider BenchmarkBumpAckWait: HeapInuse+StackInuse after GC, per watcher"}
		if n == "10000" {
			g.target, mem.target = 100, 8
			rep.add(g)
			rep.add(mem)
		} else {
			rep.info = append(rep.info, g)
		}
	}
	if m, ok := rep.pkg["BenchmarkUeventToPage"]; ok {
		rep.add(goal{name: "synthetic uevent to page, p99", value: m["p99-µs"], unit: "µs", target: 200, how: fmt.Sprintf("bench BenchmarkUeventToPage, %.0f events, p50 %.0f µs", m["events"], m["p50-µs"])})
	}
	if m, ok := rep.pkg["BenchmarkKmsgToPage"]; ok {
		rep.add(goal{name: "kernel log record to page, p99", value: m["p99-µs"], unit: "µs", target: 200, how: fmt.Sprintf("bench BenchmarkKmsgToPage, %.0f events, p50 %.0f µs", m["events"], m["p50-µs"])})
	}
}

func (rep *report) add(g goal) {
	if g.atLeast {
		g.ok = g.value >= g.target
	} else {
		g.ok = g.value <= g.target
	}
	if !g.ok {
		rep.missed++
	}
	rep.goals = append(rep.goals, g)
}

func (rep *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# snapsafe benchmarks\n\n")
	fmt.Fprintf(&b, "%s · %s · GOMAXPROCS %d · %s · made by `make bench` (`go run ./bench/harness`)\n\n",
		rep.started.UTC().Format("2006-01-02 15:04 MST"), rep.cpu, rep.procs, rep.goVersion)
	fmt.Fprintf(&b, "![chart](latest.svg)\n\n## Goals\n\n| figure | measured | goal | | how |\n|---|---|---|---|---|\n")
	for _, g := range rep.goals {
		mark := "met"
		if !g.ok {
			mark = "**missed**"
		}
		cmp := "<="
		if g.atLeast {
			cmp = ">="
		}
		fmt.Fprintf(&b, "| %s | %s | %s %s | %s | %s |\n", g.name, format(g.value, g.unit), cmp, format(g.target, g.unit), mark, g.how)
	}
	for _, g := range rep.info {
		fmt.Fprintf(&b, "| %s | %s | | | %s |\n", g.name, format(g.value, g.unit), g.how)
	}

	fmt.Fprintf(&b, "\n## Side by side (one process, one run)\n\nTime per operation; for reads, throughput; the ratio is to csprng's figure for the same operation.\n\n")
	ops := []string{"Uint64", "Uint64 parallel"}
	for _, n := range readSizes {
		ops = append(ops, fmt.Sprintf("Read %d", n))
	}
	fmt.Fprintf(&b, "| operation | generator | ns/op | MB/s | vs csprng | allocs |\n|---|---|---|---|---|---|\n")
	for _, op := range ops {
		base, _ := rep.find(genCsprng, op)
		rs := rep.byOp(op)
		for _, r := range rs {
			mb := ""
			if r.bytes > 0 {
				mb = fmt.Sprintf("%.0f", r.mbps())
			}
			vs := ""
			if base.ns > 0 {
				vs = fmt.Sprintf("%.2fx", r.ns/base.ns)
			}
			fmt.Fprintf(&b, "| %s | %s | %.2f | %s | %s | %d |\n", op, r.gen, r.ns, mb, vs, r.allocs)
		}
	}
	if len(rep.notes) > 0 {
		fmt.Fprintf(&b, "\n## Notes\n\n")
		for _, n := range rep.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// byOp lists the results of one operation, csprng first, then fastest.
func (rep *report) byOp(op string) []result {
	var rs []result
	for _, r := range rep.results {
		if r.op == op {
			rs = append(rs, r)
		}
	}
	sort.SliceStable(rs, func(i, j int) bool {
		ci, cj := strings.HasPrefix(rs[i].gen, "csprng"), strings.HasPrefix(rs[j].gen, "csprng")
		if ci != cj {
			return ci
		}
		return rs[i].ns < rs[j].ns
	})
	return rs
}
