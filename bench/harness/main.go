// Command harness runs snapsafe's benchmarks side by side — csprng against
// crypto/rand, math/rand/v2 (global and ChaCha8) and x/crypto/chacha20 in
// this one process, plus the figures that live in package benchmarks (the
// cost of the generation check, reseeding, bump-to-watcher and
// signal-to-page latencies, and scale: bump to 10,000 watchers acked to
// wait, and the provider's memory per watcher) through go test — and writes
// a Markdown report and an SVG chart.
//
//	go run ./bench/harness -out bench/out
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func main() {
	testing.Init()
	out := flag.String("out", "bench/out", "directory for latest.md and latest.svg (bench/results holds the committed figures)")
	benchtime := flag.Duration("benchtime", time.Second, "time per in-process benchmark")
	latency := flag.Bool("latency", true, "also run the package benchmarks (check cost, reseed, latencies) with go test")
	flag.Parse()
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		fatal(err)
	}
	r := &report{started: time.Now(), cpu: cpuName(), goVersion: runtime.Version(), procs: runtime.GOMAXPROCS(0)}
	r.compare()
	if *latency {
		r.packages()
	}
	r.evaluate()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fatal(err)
	}
	md, svg := filepath.Join(*out, "latest.md"), filepath.Join(*out, "latest.svg")
	if err := os.WriteFile(md, []byte(r.markdown()), 0o644); err != nil {
		fatal(err)
	}
	if err := os.WriteFile(svg, []byte(r.svg()), 0o644); err != nil {
		fatal(err)
	}
	fmt.Printf("wrote %s and %s\n", md, svg)
	if r.missed > 0 {
		fmt.Printf("%d of %d goals missed: see %s\n", r.missed, len(r.goals), md)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "harness:", err)
	os.Exit(1)
}

func cpuName() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
