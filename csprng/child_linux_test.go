package csprng

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// runChild re-executes the test binary to run only test name, in a process
// where the package selects its source on first use. It reports whether
// this is the child: the caller then runs the test body.
func runChild(t *testing.T, name string, env ...string) bool {
	t.Helper()
	if os.Getenv(childEnv) != "" {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return false
}

func regionStatus(t *testing.T, dir string) client.Status {
	t.Helper()
	c, err := client.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// srcRegions returns the memory of src's wipe regions.
func srcRegions(src *source) (b [][]byte) {
	a := src.arena()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.regions {
		b = append(b, r.Bytes())
	}
	return b
}

func nonzero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return true
		}
	}
	return false
}

// firstCalls are the ways a program may first use the package.
var firstCalls = map[string]func(){
	"Uint64": func() { Uint64() },
	"Read":   func() { var b [16]byte; Read(b[:]) },
	"Reader": func() { var b [16]byte; Reader.Read(b[:]) },
	"New":    func() { New().Uint64() },
	"Rand": func() { // one Rand kept across the provider restart
		if keptRand == nil {
			keptRand = New()
		}
		keptRand.Uint64()
	},
}

var keptRand *Rand

// TestStateInRegionsWhateverTheFirstCall: in provider mode the key material
// lives in the provider's wipe regions whatever the process's first call,
// a bump wipes it without the process calling in, and after a provider
// restart it moves to the new provider's regions while the old copy is
// erased.
func TestStateInRegionsWhateverTheFirstCall(t *testing.T) {
	for name := range firstCalls {
		t.Run(name, func(t *testing.T) {
			if !runChild(t, "TestStateInRegionsWhateverTheFirstCall/"+name, "CSPRNG_FIRST="+name) {
				return
			}
			if os.Getenv("CSPRNG_FIRST") != name {
				t.Skip("another child's case")
			}
			dir := t.TempDir()
			t.Setenv("SNAPSAFE_DIR", dir)
			tp := testprovider.Start(t, provider.Config{Dir: dir})
			firstCalls[name]()
			if m := CurrentMode(); m != ModeProvider {
				t.Fatalf("mode %v, want provider", m)
			}
			if st := regionStatus(t, dir); st.Regions == 0 || st.RegionBytes == 0 {
				t.Fatalf("provider status: %d regions, %d bytes: the state is not in a wipe region", st.Regions, st.RegionBytes)
			}
			old := current.Load()
			regions := srcRegions(old)
			if len(regions) == 0 || !nonzero(regions[0]) {
				t.Fatal("no seeded state in the provider's regions")
			}
			if _, err := tp.Bump(shm.ReasonForced, 0); err != nil {
				t.Fatal(err)
			}
			for _, b := range regions {
				if nonzero(b) {
					t.Fatal("a bump did not wipe the state")
				}
			}
			firstCalls[name]() // reseeds into the region
			if !nonzero(regions[0]) {
				t.Fatal("the reseed did not store the state in the region")
			}

			// Restart the provider.
			tp.Stop()
			eventually.True(t, "the fallback", func() bool { return current.Load() != old })
			tp2 := testprovider.Start(t, provider.Config{Dir: dir})
			eventually.True(t, "the re-attach", func() bool {
				s := current.Load()
				return s != old && s.mode == ModeProvider
			})
			for _, b := range regions {
				if nonzero(b) {
					t.Fatal("the dead provider's region still holds state")
				}
			}
			firstCalls[name]()
			if st := regionStatus(t, dir); st.Regions == 0 || st.RegionBytes == 0 {
				t.Fatalf("new provider's status: %d regions: the state did not move", st.Regions)
			}
			nregions := srcRegions(current.Load())
			if len(nregions) == 0 || !nonzero(nregions[0]) {
				t.Fatal("no seeded state in the new provider's regions")
			}
			if _, err := tp2.Bump(shm.ReasonForced, 0); err != nil {
				t.Fatal(err)
			}
			for _, b := range nregions {
				if nonzero(b) {
					t.Fatal("a bump of the new provider did not wipe the state")
				}
			}
		})
	}
}

func cpuTime(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIdleWithoutProviderIsCheapAndReattaches: with no provider, an idle
// process uses no measurable CPU looking for one, yet attaches within a
// second of one appearing.
func TestIdleWithoutProviderIsCheapAndReattaches(t *testing.T) {
	if !runChild(t, "TestIdleWithoutProviderIsCheapAndReattaches") {
		return
	}
	dir := t.TempDir()
	t.Setenv("SNAPSAFE_DIR", dir)
	Uint64()
	if m := CurrentMode(); m == ModeProvider {
		t.Fatal("provider mode without a provider")
	}
	before := cpuTime(t)
	time.Sleep(3 * time.Second) // the idle period being measured
	if used := cpuTime(t) - before; used >= 50*time.Millisecond {
		t.Fatalf("idle process used %v of CPU in 3 s", used)
	}
	testprovider.Start(t, provider.Config{Dir: dir})
	started := time.Now()
	eventually.True(t, "the attach", func() bool { return CurrentMode() == ModeProvider })
	if d := time.Since(started); d > time.Second {
		t.Fatalf("attached %v after the provider started, want within 1 s", d)
	} else {
		t.Logf("attached %v after the provider started", d)
	}
}
