package provider

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/testuser"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/shm"
)

// The bounds tests play hostile users for real: other uids, in processes of
// their own. The test binary re-executes itself as such a "hog" (TestMain
// below), which holds connections or wipe regions on a provider the test
// runs as root, and reports on stdout what the provider let it have.

const (
	hogDirEnv  = "SNAPSAFE_TEST_HOG_DIR"  // the provider's state directory
	hogModeEnv = "SNAPSAFE_TEST_HOG_MODE" // conns or regions
	hogNEnv    = "SNAPSAFE_TEST_HOG_N"    // how many to try to hold
	hogSpinEnv = "SNAPSAFE_TEST_HOG_SPIN" // refused attempts to make after the first refusal
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(hogDirEnv); dir != "" {
		os.Exit(runHog(dir))
	}
	os.Exit(m.Run())
}

// runHog is the hostile user. Mode conns attaches up to N clients; regions
// attaches clients and takes 64 KiB wipe regions on them (as many as a
// connection may hold on each), up to N regions.
// At the first failure it prints one line describing the error, then (conns)
// reconnects SPIN more times as a client looping on a refusal would, and
// reports how many of those were refused with ErrRefused. It then prints
// "holding" and holds everything until its stdin closes.
func runHog(dir string) int {
	n, _ := strconv.Atoi(os.Getenv(hogNEnv))
	spin, _ := strconv.Atoi(os.Getenv(hogSpinEnv))
	var held []*client.Client
	var regions []*shm.Region
	report := func(what string, got int, err error) {
		fmt.Printf("%s %d refused=%t limit=%t gone=%t err=%s\n", what, got,
			errors.Is(err, client.ErrRefused), errors.Is(err, client.ErrLimit), errors.Is(err, client.ErrProviderGone),
			strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
	}
	switch os.Getenv(hogModeEnv) {
	case "conns":
		for len(held) < n {
			c, err := client.Attach(dir)
			if err != nil {
				report("conns", len(held), err)
				break
			}
			held = append(held, c)
		}
		refused := 0
		for range spin {
			c, err := client.Attach(dir)
			if err == nil {
				c.Close()
				continue
			}
			if errors.Is(err, client.ErrRefused) {
				refused++
			}
		}
		if spin > 0 {
			fmt.Printf("spin %d of %d refused\n", refused, spin)
		}
	case "regions":
	take:
		for len(regions) < n {
			c, err := client.Attach(dir)
			if err != nil {
				report("regions", len(regions), err)
				break
			}
			held = append(held, c)
			for range MaxRegionsPerConn {
				if len(regions) == n {
					break take
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := c.Region(ctx, shm.MaxRegionSize)
				cancel()
				if err != nil {
					report("regions", len(regions), err)
					break take
				}
				regions = append(regions, r)
			}
		}
	default:
		fmt.Println("unknown hog mode")
		return 2
	}
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	for _, r := range regions {
		r.Close()
	}
	for _, c := range held {
		c.Close()
	}
	return 0
}

// hog is a running hostile process.
type hog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines []string // what it printed up to "holding"
}

var ()

// startHog runs a hog as uid on the provider on dir and returns once it
// holds what it could get. It is stopped at the end of the test.
func startHog(t *testing.T, uid uint32, dir, mode string, n, spin int) *hog {
	t.Helper()
	cmd := exec.Command(testuser.Executable(t))
	cmd.Env = append(os.Environ(), hogDirEnv+"="+dir, hogModeEnv+"="+mode,
		hogNEnv+"="+strconv.Itoa(n), hogSpinEnv+"="+strconv.Itoa(spin))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &hog{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { h.stop() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "holding" {
			go io.Copy(io.Discard, stdout)
			return h
		}
		h.lines = append(h.lines, sc.Text())
	}
	t.Fatalf("hog (uid %d) ended before holding: %v; it printed %q", uid, cmd.Wait(), h.lines)
	return nil
}

// stop makes the hog release everything and exit.
func (h *hog) stop() {
	h.stdin.Close()
	h.cmd.Wait()
}

// line returns the hog's report line that starts with prefix.
func (h *hog) line(t *testing.T, prefix string) string {
	t.Helper()
	for _, l := range h.lines {
		if strings.HasPrefix(l, prefix+" ") {
			return l
		}
	}
	t.Fatalf("the hog printed no %q line: %q", prefix, h.lines)
	return ""
}
