package provider

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
)

// startExpecting runs a provider on dir with restart grace grace, its log
// kept.
func startExpecting(t *testing.T, dir string, grace time.Duration) (*testProvider, *logBuffer) {
	t.Helper()
	cfg := Config{Dir: dir, RestartGrace: grace}
	logs := withLog(t, &cfg)
	return startWith(t, cfg, nil), logs
}

// writeWatchers writes the watchers file a previous provider of this boot
// would have left.
func writeWatchers(t *testing.T, dir string, recs ...watcherRecord) {
	t.Helper()
	p := &Provider{}
	h, err := openHighWater(t.TempDir()) // reads the boot id
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p.hw = h
	b, err := json.Marshal(watchersFile{Version: watchersVersion, Boot: p.bootID(), Watchers: recs})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, statedir.WatchersFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startChild runs a process that stands for a watcher of the previous
// provider, and returns its record.
func startChild(t *testing.T, label string) (*exec.Cmd, watcherRecord) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	start, _, err := procStat(int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return cmd, watcherRecord{PID: int32(cmd.Process.Pid), Start: start, Comm: "sleep", Label: label, Acked: 7}
}

// waitAsync starts an orchestrator wait on c.
func waitAsync(t *testing.T, c *client.Client) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- c.Wait(ctxT(t, 20*time.Second)) }()
	return errc
}

// pending checks that the wait is registered and still pending at the
// provider, and has not ended.
func pending(t *testing.T, probe *client.Client, errc <-chan error) {
	t.Helper()
	eventually.True(t, "the wait to be pending", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("the wait ended (%v) while a watcher was expected", err)
		default:
		}
		return status(t, probe).Waiting == 1
	})
}

// TestExpectedWatcherHoldsWait: the watchers of a provider that stopped are
// recorded (mode 0600) and expected by the next provider: a wait right after
// the restart does not pass while one is expected, nor once it registered
// again naming the generation it handled, but once it acknowledges the new
// generation.
func TestExpectedWatcherHoldsWait(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	w, err := attach(t, dir).Watch(ctxT(t, 5*time.Second), client.WithLabel("svc"), client.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	acked := w.Generation()
	tp.stop()
	fi, err := os.Stat(filepath.Join(dir, statedir.WatchersFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the watchers file after a clean stop: %v, %v; want mode 0600", fi, err)
	}

	tp2, logs := startExpecting(t, dir, 0)
	probe := attach(t, dir)
	s := status(t, probe)
	if s.Watchers != 1 || s.Outdated != 1 || len(s.WatcherList) != 1 {
		t.Fatalf("after the restart: watchers %d, outdated %d, %+v; want the expected watcher", s.Watchers, s.Outdated, s.WatcherList)
	}
	if e := s.WatcherList[0]; !e.Expected || !e.Outdated || !e.Tracked || e.PID != int32(os.Getpid()) || e.Label != "svc" || e.Acked != acked {
		t.Fatalf("the expected watcher: %+v", e)
	}
	// A bump leaves it expected.
	if _, err := tp2.Bump(shm.ReasonForced, 0); err != nil {
		t.Fatal(err)
	}
	if s := status(t, probe); s.Outdated != 1 || len(s.WatcherList) != 1 || !s.WatcherList[0].Expected {
		t.Fatalf("after a bump: outdated %d, %+v; want the watcher still expected", s.Outdated, s.WatcherList)
	}
	errc := waitAsync(t, probe)
	pending(t, probe, errc)

	// The process registers a watcher again, naming what it handled.
	raw := rawConn(t, dir)
	if _, err := raw.Write(wire.Encode(wire.Watch, 1, wire.EncodeWatch(acked, "svc"))); err != nil {
		t.Fatal(err)
	}
	m, err := readMsg(t, raw)
	if err != nil || m.Type != wire.WatchOK {
		t.Fatalf("watch: %+v, %v", m, err)
	}
	cur := m.U64()
	s = status(t, probe)
	if s.Watchers != 1 || s.Outdated != 1 || len(s.WatcherList) != 1 || s.WatcherList[0].Expected || s.WatcherList[0].Acked != acked || s.Waiting != 1 {
		t.Fatalf("after it registered: watchers %d, outdated %d, waiting %d, %+v; want it outdated, no longer expected, the wait pending", s.Watchers, s.Outdated, s.Waiting, s.WatcherList)
	}
	if n := len(logs.lines("expected watcher registered again")); n != 1 {
		t.Fatalf("%d log lines for the watcher that came back, want 1", n)
	}
	pending(t, probe, errc)
	if _, err := raw.Write(wire.Encode(wire.Ack, 2, wire.U64(cur))); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("wait after the ack: %v", err)
	}
	// The new provider records its watcher too.
	eventually.True(t, "the watcher to be recorded", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, statedir.WatchersFile))
		var f watchersFile
		return json.Unmarshal(b, &f) == nil && len(f.Watchers) == 1 && f.Watchers[0].PID == int32(os.Getpid()) && f.Watchers[0].Start != 0
	})
}

// TestExpectedWatcherExits: an expected watcher whose process exits is
// dropped, with a warning naming it, and no longer holds up the wait.
func TestExpectedWatcherExits(t *testing.T) {
	dir := t.TempDir()
	child, rec := startChild(t, "child")
	writeWatchers(t, dir, rec)
	_, logs := startExpecting(t, dir, time.Minute)
	probe := attach(t, dir)
	if s := status(t, probe); s.Outdated != 1 || len(s.WatcherList) != 1 || !s.WatcherList[0].Expected || s.WatcherList[0].PID != rec.PID {
		t.Fatalf("outdated %d, %+v; want the child (pid %d) expected", s.Outdated, s.WatcherList, rec.PID)
	}
	errc := waitAsync(t, probe)
	pending(t, probe, errc)
	child.Process.Kill()
	if err := <-errc; err != nil {
		t.Fatalf("wait once the expected watcher's process exited: %v", err)
	}
	if s := status(t, probe); s.Watchers != 0 || s.Outdated != 0 || len(s.WatcherList) != 0 {
		t.Fatalf("after the exit: watchers %d, outdated %d, %+v; want none", s.Watchers, s.Outdated, s.WatcherList)
	}
	warned := logs.lines("exited before it registered again")
	if len(warned) != 1 || !strings.Contains(warned[0], "level=WARN") || !strings.Contains(warned[0], "pid="+strconv.Itoa(child.Process.Pid)) || !strings.Contains(warned[0], "label=child") {
		t.Fatalf("warnings %q, want one naming pid %d, label child", warned, child.Process.Pid)
	}
}

// TestExpectedWatcherGrace: an expected watcher that does not register
// again within the restart grace period is dropped, with a warning.
func TestExpectedWatcherGrace(t *testing.T) {
	dir := t.TempDir()
	_, rec := startChild(t, "slow")
	writeWatchers(t, dir, rec)
	_, logs := startExpecting(t, dir, 200*time.Millisecond)
	probe := attach(t, dir)
	errc := waitAsync(t, probe)
	if err := <-errc; err != nil {
		t.Fatalf("wait past the grace period: %v", err)
	}
	if s := status(t, probe); s.Watchers != 0 || s.Outdated != 0 {
		t.Fatalf("after the grace period: watchers %d, outdated %d; want none", s.Watchers, s.Outdated)
	}
	if warned := logs.lines("within the restart grace period"); len(warned) != 1 || !strings.Contains(warned[0], "label=slow") {
		t.Fatalf("warnings %q, want one naming label slow", warned)
	}
}

// TestNotExpected: recorded watchers whose pid now names another process
// (its start time differs), whose process is gone, or that were recorded in
// another boot are not expected, nor any with a negative restart grace.
func TestNotExpected(t *testing.T) {
	_, rec := startChild(t, "reused")
	reused := rec
	reused.Start++                                                 // the pid's process started at another time: not the watcher
	gone := watcherRecord{PID: 1<<22 + 1, Start: 1, Label: "gone"} // above pid_max's limit
	for _, tc := range []struct {
		name  string
		grace time.Duration
		write func(t *testing.T, dir string)
	}{
		{"reused pid", 0, func(t *testing.T, dir string) { writeWatchers(t, dir, reused) }},
		{"gone", 0, func(t *testing.T, dir string) { writeWatchers(t, dir, gone) }},
		{"another boot", 0, func(t *testing.T, dir string) {
			b, _ := json.Marshal(watchersFile{Version: watchersVersion, Boot: "00000000-0000-0000-0000-000000000001", Watchers: []watcherRecord{rec}})
			if err := os.WriteFile(filepath.Join(dir, statedir.WatchersFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage", 0, func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, statedir.WatchersFile), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"no grace", -1, func(t *testing.T, dir string) { writeWatchers(t, dir, rec) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.write(t, dir)
			startExpecting(t, dir, tc.grace)
			// Expected watchers are loaded before the provider is ready.
			if s := status(t, attach(t, dir)); s.Watchers != 0 || s.Outdated != 0 || len(s.WatcherList) != 0 {
				t.Fatalf("watchers %d, outdated %d, %+v; want none expected", s.Watchers, s.Outdated, s.WatcherList)
			}
		})
	}
}

// TestListsOutdatedFirst: the watcher list puts outdated tracked watchers
// (an expected one here) before the others, whatever their pids.
func TestListsOutdatedFirst(t *testing.T) {
	dir := t.TempDir()
	_, rec := startChild(t, "expected")
	writeWatchers(t, dir, rec)
	startExpecting(t, dir, time.Minute)
	c := attach(t, dir)
	for range 2 {
		watch(t, c) // up to date, with this process's pid
	}
	l := status(t, c).WatcherList
	if len(l) != 3 || !l[0].Expected || l[1].Outdated || l[2].Outdated {
		t.Fatalf("watcher list %+v (pids: expected %d, up to date %d): want the outdated one first", l, rec.PID, os.Getpid())
	}
}

// TestListOrder: whichever comes first, an outdated tracked watcher sorts
// before an up-to-date one of a lower pid (an untracked outdated one does
// not hold up waits, so it sorts by pid).
func TestListOrder(t *testing.T) {
	late := api.Watcher{PID: 100, Outdated: true, Tracked: true}
	upToDate := api.Watcher{PID: 50, Tracked: true}
	untracked := api.Watcher{PID: 10, Outdated: true}
	for _, tc := range []struct {
		a, b api.Watcher
		want int
	}{
		{late, upToDate, -1}, {upToDate, late, 1}, {untracked, late, 1}, {late, untracked, -1}, {untracked, upToDate, -1},
	} {
		if got := listOrder(tc.a, tc.b); got != tc.want {
			t.Errorf("listOrder(%+v, %+v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
