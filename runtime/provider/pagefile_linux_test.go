package provider

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/shm"
)

// count counts the lines at level that mention about.
func (l *logBuffer) count(level, about string) int {
	n := 0
	for _, line := range l.lines(about) {
		if strings.Contains(line, "level="+level) {
			n++
		}
	}
	return n
}

// startLoggingProvider is startProvider with the log kept, and the periodic
// page check slowed down so that the test drives the checks itself.
func startLoggingProvider(t *testing.T, dir string) (*testProvider, *logBuffer) {
	t.Helper()
	old := pageCheckInterval
	pageCheckInterval = time.Hour
	t.Cleanup(func() { pageCheckInterval = old })
	cfg := Config{Dir: dir}
	log := withLog(t, &cfg)
	return startWith(t, cfg, nil), log
}

func filePage(t *testing.T, dir string) (uint64, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, statedir.PageFile))
	if err != nil || len(b) != shm.PageSize || binary.LittleEndian.Uint32(b[shm.OffMagic:]) != shm.Magic {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[shm.OffGeneration:]), true
}

// TestClientSurvivesPageTruncation: a client attached with the public API
// keeps reading the generation after root truncates the page file — before
// the fix the first load killed this test process with SIGBUS — and the
// next bump repairs the file at once.
func TestClientSurvivesPageTruncation(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	c := attach(t, dir)
	page := filepath.Join(dir, statedir.PageFile)
	if err := os.Truncate(page, 0); err != nil {
		t.Fatal(err)
	}
	if g := c.Generation(); g != 1 {
		t.Fatalf("generation %d after the truncation, want 1", g)
	}
	if s, err := c.Snapshot(); err != nil || s.Generation != 1 {
		t.Fatalf("snapshot after the truncation: %+v, %v", s, err)
	}
	g, err := tp.Bump(shm.ReasonForced, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Generation() != g {
		t.Fatalf("client sees %d after the bump to %d", c.Generation(), g)
	}
	if fg, ok := filePage(t, dir); !ok || fg != g {
		t.Fatalf("the bump did not republish the page file: %d (valid %v), want %d", fg, ok, g)
	}
}

// TestPageDamageLoggedOncePerIncident: a damaged file is reported once,
// however many checks see it, and a new incident is reported again.
func TestPageDamageLoggedOncePerIncident(t *testing.T) {
	dir := t.TempDir()
	tp, log := startLoggingProvider(t, dir)
	page := filepath.Join(dir, statedir.PageFile)
	// An incident the repair cannot end at once: a directory in the way of
	// the new file, and the file deleted.
	if err := os.Mkdir(page+".new", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(page); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		tp.checkPage()
	}
	if _, err := tp.Bump(shm.ReasonForced, 0); err != nil {
		t.Fatalf("bump with a damaged page file: %v", err)
	}
	if w, e := log.count("WARN", "page file"), log.count("ERROR", "page file"); w != 1 || e != 1 {
		t.Fatalf("%d warnings and %d errors for one incident, want 1 and 1", w, e)
	}
	if !strings.Contains(log.String(), "remove it") {
		t.Fatal("the error does not say what to do")
	}
	if err := os.Remove(page + ".new"); err != nil {
		t.Fatal(err)
	}
	tp.checkPage()
	if fg, ok := filePage(t, dir); !ok || fg != tp.Generation() {
		t.Fatalf("page file %d (valid %v) after the obstacle went, want %d", fg, ok, tp.Generation())
	}
	if !strings.Contains(log.String(), "republished") {
		t.Fatal("the end of the incident was not logged")
	}
	tp.checkPage()
	if err := os.Truncate(page, 0); err != nil {
		t.Fatal(err)
	}
	tp.checkPage()
	tp.checkPage()
	if w := log.count("WARN", "page file"); w != 2 {
		t.Fatalf("%d warnings after a second incident, want 2", w)
	}
}

// TestPageSeenGenerationRule: a plausible higher generation in the damaged
// file is adopted as seen (the next generation is above it); an
// implausible one (more than 2^32 above) or a lower one is overwritten.
func TestPageSeenGenerationRule(t *testing.T) {
	dir := t.TempDir()
	tp, log := startLoggingProvider(t, dir)
	page := filepath.Join(dir, statedir.PageFile)
	writeGen := func(g uint64) {
		t.Helper()
		f, err := os.OpenFile(page, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(binary.LittleEndian.AppendUint64(nil, g), shm.OffGeneration); err != nil {
			t.Fatal(err)
		}
	}
	writeGen(1 + MaxForcedStep) // the most a forced bump could have published
	tp.checkPage()
	if g := tp.Generation(); g != 2+MaxForcedStep {
		t.Fatalf("generation %d after the file showed %d, want one above", g, uint64(1+MaxForcedStep))
	}
	cur := tp.Generation()
	writeGen(cur + MaxForcedStep + 1)
	tp.checkPage()
	if g := tp.Generation(); g != cur {
		t.Fatalf("an implausible generation in the file moved the provider's to %d", g)
	}
	if !strings.Contains(log.String(), "not adopted") {
		t.Fatal("the implausible generation was not reported")
	}
	writeGen(1)
	tp.checkPage()
	if fg, ok := filePage(t, dir); !ok || fg != cur || tp.Generation() != cur {
		t.Fatalf("after a lower value: file %d (valid %v), provider %d; want %d", fg, ok, tp.Generation(), cur)
	}
	// A replaced file counts too: its readers open the name.
	other := page + ".other"
	b := make([]byte, shm.PageSize)
	binary.LittleEndian.PutUint64(b[shm.OffGeneration:], cur+10)
	if err := os.WriteFile(other, b, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, page); err != nil {
		t.Fatal(err)
	}
	if g, err := tp.Bump(shm.ReasonACPI, 0); err != nil || g != cur+11 {
		t.Fatalf("bump after the file was replaced by one showing %d = %d, %v; want %d", cur+10, g, err, cur+11)
	}
}
