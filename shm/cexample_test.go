package shm

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestCExample builds docs/examples/generation.c — a reader written from
// docs/ABI.md alone — and checks that it reads what the Go writer wrote:
// the ABI document is exact enough for a C client.
func TestCExample(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc): apt-get install gcc")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "generation")
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Werror", "-o", bin, "../docs/examples/generation.c").CombinedOutput(); err != nil {
		t.Fatalf("building the C example: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "page")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	epoch := uuid.New()
	u := Update{
		Generation: 123456789012, Reason: ReasonVMClock, Backend: BackendACPI, State: StateRunning,
		PID: 4242, Epoch: epoch, Time: time.Unix(1700000000, 5), Mono: 987654321,
	}
	w.Publish(u, nil)
	out, err := exec.Command(bin, path).CombinedOutput()
	if err != nil {
		t.Fatalf("running the C example: %v\n%s", err, out)
	}
	want := fmt.Sprintf("generation 123456789012\nwiped 123456789012\nepoch %s\nrealtime_ns %d\nmonotonic_ns 987654321\nreason vmclock\nstate running\npid 4242\nbackend acpi\n",
		epoch, u.Time.UnixNano())
	if string(out) != want {
		t.Fatalf("the C reader printed:\n%s\nwant:\n%s", out, want)
	}
	if _, err := exec.Command(bin, filepath.Join(dir, "absent")).CombinedOutput(); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("C reader on a missing page: %v", err)
	}
}
