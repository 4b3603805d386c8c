// Command guestclient is the end-to-end test's client inside the guest VM.
// Every interval it prints one line:
//
//	T=<CLOCK_MONOTONIC ns> gen=<generation> mode=<mode> csprng=<hex> control=<hex>
//
// csprng is 16 bytes from snapsafe's csprng package (package-level Read),
// gen and mode are csprng.Generation() and csprng.CurrentMode(). control is
// 16 bytes from a math/rand/v2 ChaCha8 seeded once from crypto/rand at start,
// the way most libraries build a fast generator: it knows nothing of
// snapshots, so clones of one snapshot print the same control bytes. That is
// the problem snapsafe solves, shown on the test's own hypervisor. The
// driver (e2e/cmd/clonetest) parses these lines with e2e/console.
//
// Every sync interval it also writes its clock to the kernel log (see
// console.SyncPrefix), so that the driver can place kernel records among its
// lines.
package main

import (
	crand "crypto/rand"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/snapsafe/snapsafe/csprng"
	"github.com/snapsafe/snapsafe/e2e/console"
)

func main() {
	interval := flag.Duration("interval", 50*time.Millisecond, "time between lines")
	syncEvery := flag.Duration("sync", time.Second, "time between clock syncs in the kernel log (the kernel allows a process 10 records in 5s)")
	flag.Parse()

	kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		fail(fmt.Errorf("opening the kernel log: %w", err))
	}
	// The first write through a code path is slow under QEMU's TCG, which
	// translates guest code on first use: it made the first clock sync 10 ms
	// late. This record takes that delay.
	if _, err := fmt.Fprintf(kmsg, "<14>guestclient: started, clock syncs every %v\n", *syncEvery); err != nil {
		fail(fmt.Errorf("writing to the kernel log: %w", err))
	}

	var seed [32]byte
	// crypto/rand.Read blocks until the kernel's generator is seeded and
	// never fails (Go 1.24).
	crand.Read(seed[:])
	control := rand.NewChaCha8(seed)

	tick := time.NewTicker(*interval)
	defer tick.Stop()
	var out, ctl [16]byte
	lastSync := time.Duration(-1)
	for range tick.C {
		mode := csprng.CurrentMode()
		// The generation is read before the bytes are drawn: a line that
		// shows a new generation holds bytes drawn after the bump was
		// visible, never bytes from the state the snapshot cloned.
		gen := csprng.Generation()
		csprng.Read(out[:])
		control.Read(ctl[:])
		t, err := monoTime()
		if err != nil {
			fail(err)
		}
		// One Printf is one write, so the line reaches the console whole.
		fmt.Printf("T=%d gen=%d mode=%s csprng=%x control=%x\n", t.Nanoseconds(), gen, mode, out, ctl)

		if lastSync < 0 || t-lastSync >= *syncEvery {
			s, err := monoTime()
			if err != nil {
				fail(err)
			}
			// <14> is facility user, level info: below the console level of
			// a quiet kernel, so the record reaches the console only through
			// the kmsg program. One write is one record.
			if _, err := fmt.Fprintf(kmsg, "<14>%s%d\n", console.SyncPrefix, s.Nanoseconds()); err != nil {
				fail(fmt.Errorf("writing a clock sync to the kernel log: %w", err))
			}
			lastSync = s
		}
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "guestclient: %v\n", err)
	os.Exit(1)
}
