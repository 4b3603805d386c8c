package provider

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/shm"
)

func TestHighWaterFile(t *testing.T) {
	dir := t.TempDir()
	h, err := openHighWater(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fi, err := os.Stat(filepath.Join(dir, statedir.HighWaterFile))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != hwFileSize {
		t.Fatalf("high-water file: %v, %v", fi, err)
	}
	if _, st := h.load(); st != hwAbsent {
		t.Fatalf("new file: state %v, want absent", st)
	}
	for g := uint64(1); g <= 5; g++ {
		if err := h.record(g); err != nil {
			t.Fatal(err)
		}
	}
	reopen := func() *highWater {
		t.Helper()
		h2, err := openHighWater(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h2.Close() })
		return h2
	}
	if g, st := reopen().load(); g != 5 || st != hwThisBoot {
		t.Fatalf("load = %d, %v; want 5, this boot", g, st)
	}
	// A record torn by a crash: the other slot still holds the last mark
	// but one.
	h2 := reopen()
	h2.load()
	slot := h2.next
	if err := h2.record(6); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.f.WriteAt([]byte("torn"), slot+8); err != nil {
		t.Fatal(err)
	}
	if g, st := reopen().load(); g != 5 || st != hwThisBoot {
		t.Fatalf("load after a torn record = %d, %v; want 5", g, st)
	}
	// Another boot's marks do not count.
	other := reopen()
	other.boot[0] ^= 1
	if g, st := other.load(); g != 0 || st != hwOtherBoot {
		t.Fatalf("load in another boot = %d, %v", g, st)
	}
	if _, err := h2.f.WriteAt(bytes.Repeat([]byte{0xff}, hwFileSize), 0); err != nil {
		t.Fatal(err)
	}
	if _, st := reopen().load(); st != hwCorrupt {
		t.Fatalf("garbage: state %v, want corrupt", st)
	}
}

// TestResumeAboveHighWater: the provider resumes above the high-water mark
// when the page file was lost or rolled back while it was down, and
// ignores a page generation far above the mark.
func TestResumeAboveHighWater(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	if _, err := tp.Bump(shm.ReasonForced, 40); err != nil {
		t.Fatal(err)
	}
	tp.stop()
	page := filepath.Join(dir, statedir.PageFile)
	w, err := shm.OpenWriter(page)
	if err != nil {
		t.Fatal(err)
	}
	w.Publish(shm.Update{Generation: 3}, nil) // rolled back
	w.Close()
	tp = startProvider(t, dir)
	if g := tp.Generation(); g != 41 {
		t.Fatalf("generation %d after a rolled-back page, want 41", g)
	}
	tp.stop()
	w, err = shm.OpenWriter(page)
	if err != nil {
		t.Fatal(err)
	}
	w.Publish(shm.Update{Generation: 41 + MaxForcedStep + 1}, nil) // not ours
	w.Close()
	tp, log := startLoggingProvider(t, dir)
	if g := tp.Generation(); g != 42 {
		t.Fatalf("generation %d after a page far above the mark, want 42", g)
	}
	if log.count("ERROR", "") != 1 {
		t.Fatal("the implausible page generation was not reported")
	}
	tp.stop()
	// Both lost: starts again, loudly.
	if err := os.WriteFile(filepath.Join(dir, statedir.HighWaterFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(page); err != nil {
		t.Fatal(err)
	}
	tp, log = startLoggingProvider(t, dir)
	if g := tp.Generation(); g != 1 || log.count("ERROR", "") != 1 || !strings.Contains(log.String(), "both lost") {
		t.Fatalf("generation %d after both were lost; log:\n%s", g, log)
	}
	eventually.True(t, "the page file", func() bool { g, ok := filePage(t, dir); return ok && g == 1 })
}
