package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// A packageBench is a benchmark that lives in a package (it needs
// unexported hooks, a provider, or the real VMGENID device), run with go
// test and parsed.
type packageBench struct {
	pkg, name, benchtime string
}

var packageBenches = []packageBench{
	{"./csprng", "BenchmarkGenerationCheck", ""},
	{"./csprng", "BenchmarkReseed", ""},
	{"./runtime/provider", "BenchmarkGeneration", ""},
	{"./runtime/provider", "BenchmarkBumpNotify", "200x"},
	// Scale: 1,000 / 3,500 / 10,000 watchers in a process of their own; 30
	// rounds each, and the same rounds against a bare server (the floor).
	{"./runtime/provider", "BenchmarkBumpAckWait", "30x"},
	{"./runtime/provider", "BenchmarkBumpAckWaitFloor", "30x"},
	// Each event writes to the real device: bounded counts, and the kernel
	// log one writes two records per event into the log.
	{"./bench", "BenchmarkUeventToPage", "500x"},
	{"./bench", "BenchmarkKmsgToPage", "200x"},
}

// metrics of one benchmark line: unit → value.
type metrics map[string]float64

func (rep *report) packages() {
	rep.pkg = map[string]metrics{}
	for _, pb := range packageBenches {
		args := []string{"test", "-run", "^$", "-bench", "^" + pb.name + "$", "-benchmem"}
		if pb.benchtime != "" {
			args = append(args, "-benchtime", pb.benchtime)
		}
		cmd := exec.Command("go", append(args, pb.pkg)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "harness: %s %s: %v\n%s", pb.pkg, pb.name, err, out)
			rep.notes = append(rep.notes, fmt.Sprintf("%s failed: %v", pb.name, err))
			continue
		}
		found := false
		for name, m := range parseBench(out) {
			rep.pkg[name] = m
			found = true
			fmt.Printf("%-40s %v\n", name, m)
		}
		if !found {
			// A benchmark that skips (no root, no device) prints no line.
			rep.notes = append(rep.notes, fmt.Sprintf("%s did not run here (it needs root and a VMGENID device): %s", pb.name, skipReason(out)))
		}
	}
}

// parseBench reads go test benchmark lines: name, iterations, then value
// and unit pairs. The -N GOMAXPROCS suffix is dropped from names.
func parseBench(out []byte) map[string]metrics {
	res := map[string]metrics{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		m := metrics{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		res[name] = m
	}
	return res
}

func skipReason(out []byte) string {
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "needs") {
			return strings.TrimSpace(line)
		}
	}
	return "no result"
}
