package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
)

type watcherJSON struct {
	PID      int    `json:"pid"`
	UID      uint32 `json:"uid"`
	Comm     string `json:"comm"`
	Label    string `json:"label"`
	Acked    uint64 `json:"acked"`
	Outdated bool   `json:"outdated"`
	Tracked  bool   `json:"tracked"`
	Expected bool   `json:"expected"`
}

func watcherList(t *testing.T, dir string) []watcherJSON {
	t.Helper()
	var s struct {
		List []watcherJSON `json:"watcher_list"`
	}
	if err := json.Unmarshal([]byte(mustCtl(t, dir, "status", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	return s.List
}

// TestIntegrationWatcherIdentity walks the watcher bar: status --json lists
// each watcher with pid, uid, comm, label, acked, outdated and tracked;
// wait --timeout names the outdated watcher by its label; with
// --track-group a watcher of a non-member does not hold up wait, and one of
// a member does.
func TestIntegrationWatcherIdentity(t *testing.T) {
	testdevice.RequireRoot(t, "to run watchers as other users")
	dir := stateDir(t)
	startProvider(t, dir, "--track-group", "nogroup") // gid 65534 on Debian

	w, _ := startWatch(t, dir, "--label", "ticket-keys")
	eventually.True(t, "the watcher", func() bool { return len(watcherList(t, dir)) == 1 })
	g := status(t, dir).Generation
	l := watcherList(t, dir)[0]
	if l.PID != w.Process.Pid || l.UID != 0 || l.Comm != "snapsafectl" || l.Label != "ticket-keys" || l.Acked != g || l.Outdated || !l.Tracked {
		t.Fatalf("watcher_list[0] = %+v, want pid %d uid 0 comm snapsafectl label ticket-keys acked %d tracked", l, w.Process.Pid, g)
	}
	mustCtl(t, dir, "bump")
	_, errs, code := ctl(t, dir, "wait", "--timeout", "200ms")
	if code != 3 || !strings.Contains(errs, "ticket-keys") || !strings.Contains(errs, "snapsafectl") {
		t.Fatalf("wait with an outdated watcher: exit %d, stderr %q; want 3 naming ticket-keys", code, errs)
	}
	w.Process.Kill()
	w.Wait()
	eventually.True(t, "the watcher gone", func() bool { return len(watcherList(t, dir)) == 0 })

	// A non-member's watcher gets events but is untracked: it never holds up
	// a wait. Fence: a member's watcher does.
	outsider := &syscall.Credential{Uid: 65533, Gid: 65533}
	startWatchAs(t, outsider, dir, "--label", "outsider")
	eventually.True(t, "the outsider's watcher", func() bool { return len(watcherList(t, dir)) == 1 })
	if l := watcherList(t, dir)[0]; l.UID != 65533 || l.Tracked {
		t.Fatalf("outsider = %+v, want uid 65533 untracked", l)
	}
	mustCtl(t, dir, "bump")
	if _, errs, code := ctl(t, dir, "wait", "--timeout", "5s"); code != 0 {
		t.Fatalf("wait with only an untracked outdated watcher: exit %d %s, want 0", code, errs)
	}
	member := &syscall.Credential{Uid: 65533, Gid: 65534}
	startWatchAs(t, member, dir, "--label", "member")
	eventually.True(t, "the member's watcher", func() bool { return len(watcherList(t, dir)) == 2 })
	mustCtl(t, dir, "bump")
	if _, errs, code := ctl(t, dir, "wait", "--timeout", "200ms"); code != 3 || !strings.Contains(errs, "member") || strings.Contains(errs, "outsider") {
		t.Fatalf("wait with a member's outdated watcher: exit %d, stderr %q; want 3 naming member only", code, errs)
	}
}
