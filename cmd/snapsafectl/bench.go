package main

import (
	crand "crypto/rand"
	"flag"
	"fmt"
	"time"

	"github.com/snapsafe/snapsafe/csprng"
	"github.com/snapsafe/snapsafe/runtime/client"
)

// bench measures, on this machine and right now, what the generation probe
// and csprng cost next to crypto/rand: a quick check for an operator. The
// full side-by-side report is make bench.
func (c cli) bench(args []string) int {
	d := 200 * time.Millisecond
	if code, ok := c.flags("bench", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&d, "time", d, "time per measurement")
	}); !ok {
		return code
	}
	if d <= 0 {
		fmt.Fprintf(c.stderr, "snapsafectl bench: --time %v: must be positive\n", d)
		return exitUsage
	}
	measure := func(name string, bytes int, f func()) {
		start := time.Now()
		n := 0
		for time.Since(start) < d {
			for range 1000 {
				f()
			}
			n += 1000
		}
		ns := float64(time.Since(start).Nanoseconds()) / float64(n)
		if bytes > 0 {
			fmt.Fprintf(c.stdout, "%-34s %9.1f ns/op %8.0f MB/s\n", name, ns, float64(bytes)/ns*1e3)
		} else {
			fmt.Fprintf(c.stdout, "%-34s %9.2f ns/op\n", name, ns)
		}
	}
	if cl, err := client.Attach(c.dir); err == nil {
		var sink uint64
		measure("generation probe (page load)", 0, func() { sink += cl.Generation() })
		cl.Close()
	} else {
		fmt.Fprintf(c.stdout, "%-34s %s\n", "generation probe (page load)", "no provider")
	}
	fmt.Fprintf(c.stdout, "%-34s %s (generation %d)\n", "csprng mode", csprng.CurrentMode(), csprng.Generation())
	var sink uint64
	measure("csprng.Uint64", 0, func() { sink += csprng.Uint64() })
	r := csprng.New()
	measure("csprng.Rand.Uint64", 0, func() { sink += r.Uint64() })
	b8, b32, b4k := make([]byte, 8), make([]byte, 32), make([]byte, 4096)
	measure("crypto/rand.Read 8 B", 8, func() { crand.Read(b8) })
	measure("csprng.Read 32 B", 32, func() { csprng.Read(b32) })
	measure("crypto/rand.Read 32 B", 32, func() { crand.Read(b32) })
	measure("csprng.Read 4 KiB", 4096, func() { csprng.Read(b4k) })
	measure("crypto/rand.Read 4 KiB", 4096, func() { crand.Read(b4k) })
	return exitOK
}
