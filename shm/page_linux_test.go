package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWriterCreatesReadOnlyPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "generation")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if g, valid := w.Prior(); g != 0 || valid {
		t.Fatalf("Prior of a new page = %d, %v", g, valid)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 || fi.Size() != PageSize {
		t.Fatalf("page file mode %v size %d, want 0444 and %d", fi.Mode().Perm(), fi.Size(), PageSize)
	}
	w.Publish(Update{Generation: 5, State: StateRunning, PID: 42}, nil)

	p, err := MapPage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if g := p.Generation(); g != 5 {
		t.Fatalf("reader sees generation %d, want 5", g)
	}
	w.Publish(Update{Generation: 6, State: StateRunning}, nil)
	if g := p.Generation(); g != 6 {
		t.Fatalf("reader sees generation %d after bump, want 6", g)
	}
	w.SetState(StateStopped)
	s, err := p.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if s.State != StateStopped || s.Generation != 6 {
		t.Fatalf("snapshot after stop = %+v", s)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRetire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "generation")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Publish(Update{Generation: 9}, nil)
	p, err := MapPage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	word := p.GenerationWord()
	if err := p.Retire(); err != nil {
		t.Fatal(err)
	}
	if g := atomic.LoadUint64(word); g != 0 {
		t.Fatalf("generation word reads %d after Retire, want 0", g)
	}
	w.Publish(Update{Generation: 10}, nil)
	if g := p.Generation(); g != 0 {
		t.Fatalf("a retired page follows the provider: %d", g)
	}
}

// TestWriterReopenKeepsGeneration: a restarted provider reopens the same
// page (so mapped clients keep seeing it) and learns the prior generation.
func TestWriterReopenKeepsGeneration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "generation")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	w.Publish(Update{Generation: 77}, nil)
	p, err := MapPage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w.Close()

	w2, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if g, valid := w2.Prior(); g != 77 || !valid {
		t.Fatalf("Prior = %d, %v; want 77, true", g, valid)
	}
	w2.Publish(Update{Generation: 78}, nil)
	if g := p.Generation(); g != 78 {
		t.Fatalf("old mapping sees %d, want 78: the page file was replaced", g)
	}
}

func TestWriterReinitialisesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "generation")
	if err := os.WriteFile(path, []byte(strings.Repeat("x", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, valid := w.Prior(); valid {
		t.Fatal("garbage accepted as a page")
	}
	if _, err := MapPage(path); err != nil {
		t.Fatalf("reinitialised page does not map: %v", err)
	}
}

func TestMapPageRejects(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, make([]byte, 10), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := MapPage(short); !errors.Is(err, ErrBadPage) {
		t.Fatalf("short file: %v", err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.WriteFile(zero, make([]byte, PageSize), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := MapPage(zero); !errors.Is(err, ErrBadPage) {
		t.Fatalf("zero page: %v", err)
	}
	if _, err := MapPage(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent page: %v", err)
	}
}

// The multi-process seqlock stress test: a writer process publishes as fast
// as it can; reader processes take snapshots and check that every field is
// the one the writer derived from the snapshot's generation. A torn read
// (fields of two different bumps) fails the reader.
const (
	envRole = "SNAPSAFE_SHM_TEST_ROLE"
	envPath = "SNAPSAFE_SHM_TEST_PAGE"
)

func stressUpdate(g uint64) Update {
	var u Update
	u.Generation = g
	binary.LittleEndian.PutUint64(u.Epoch[:8], g*0x9e3779b97f4a7c15)
	binary.LittleEndian.PutUint64(u.Epoch[8:], ^g)
	u.Time = time.Unix(0, int64(g*3))
	u.Mono = time.Duration(g * 5)
	u.Reason = Reason(g%4 + 1)
	u.State = State(g%2 + 1)
	u.PID = uint32(g * 7)
	u.Backend = Backend(g%3 + 1)
	return u
}

func consistent(s Snapshot) bool {
	want := stressUpdate(s.Generation)
	return s.Wiped == s.Generation && s.Epoch == want.Epoch &&
		s.Time.UnixNano() == want.Time.UnixNano() && s.Mono == want.Mono &&
		s.Reason == want.Reason && s.State == want.State && s.PID == want.PID && s.Backend == want.Backend
}

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "writer":
		os.Exit(stressWriter(os.Getenv(envPath)))
	case "reader":
		os.Exit(stressReader(os.Getenv(envPath)))
	}
	os.Exit(m.Run())
}

const stressTime = 700 * time.Millisecond

func stressWriter(path string) int {
	w, err := OpenWriter(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	g, _ := w.Prior()
	for end := time.Now().Add(stressTime); time.Now().Before(end); {
		for range 1000 {
			g++
			w.Publish(stressUpdate(g), nil)
		}
	}
	fmt.Println(g)
	return 0
}

func stressReader(path string) int {
	p, err := MapPage(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var reads, busy, distinct int
	var last uint64
	for end := time.Now().Add(stressTime); time.Now().Before(end); {
		if g := p.Generation(); g < last {
			fmt.Fprintf(os.Stderr, "generation went backwards: %d after %d\n", g, last)
			return 1
		}
		s, err := p.Snapshot()
		if errors.Is(err, ErrBusy) {
			busy++
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if !consistent(s) {
			fmt.Fprintf(os.Stderr, "torn snapshot: %+v\n", s)
			return 1
		}
		if s.Generation != last {
			distinct++
		}
		last = s.Generation
		reads++
	}
	fmt.Println(reads, distinct, busy)
	return 0
}

func TestSeqlockMultiProcessStress(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process stress test skipped in -short mode")
	}
	path := filepath.Join(t.TempDir(), "generation")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	w.Publish(stressUpdate(1), nil)
	w.Close()

	start := func(role string) (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envRole+"="+role, envPath+"="+path)
		out := new(strings.Builder)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, out
	}
	wcmd, wout := start("writer")
	type reader struct {
		cmd *exec.Cmd
		out *strings.Builder
	}
	var readers []reader
	for range 2 {
		c, o := start("reader")
		readers = append(readers, reader{c, o})
	}
	if err := wcmd.Wait(); err != nil {
		t.Fatalf("writer: %v: %s", err, wout)
	}
	final, _ := strconv.ParseUint(strings.TrimSpace(wout.String()), 10, 64)
	for i, r := range readers {
		if err := r.cmd.Wait(); err != nil {
			t.Fatalf("reader %d: %v: %s", i, err, r.out)
		}
		var reads, distinct, busy int
		if _, err := fmt.Sscan(r.out.String(), &reads, &distinct, &busy); err != nil {
			t.Fatalf("reader %d output %q: %v", i, r.out, err)
		}
		t.Logf("reader %d: %d consistent snapshots of %d distinct generations (%d busy) while the writer bumped to %d", i, reads, distinct, busy, final)
		// The test proves something only if readers really raced a writer.
		if distinct < 10 {
			t.Fatalf("reader %d saw only %d distinct generations: the readers did not race the writer", i, distinct)
		}
	}
}
