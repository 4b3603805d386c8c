package provider

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// Expected watchers. A watcher outlives its provider: it re-attaches to the
// next one and registers again (docs/ABI.md §3.1). Until it has, the new
// provider would not know of it, and an orchestrator wait right after a
// restart could pass before the watcher rebuilt anything. So the provider
// records the identities of its tracked watchers in a private file of the
// state directory (statedir.WatchersFile), and the next provider, at start,
// counts every recorded watcher whose process still runs as an expected
// watcher: a tracked, outdated placeholder that holds up waits and shows in
// the watcher list with expected: true. It goes away when a watcher of that
// process registers (which then counts as itself: outdated until it
// acknowledges the new generation), when the process exits, or after the
// restart grace period; the last two are logged as warnings.
//
// A process is its pid and its start time (field 22 of /proc/<pid>/stat,
// clock ticks after boot): a pid the kernel gave to another process since
// is not the watcher's. The file also names the boot (its processes end
// with it).
//
// The file is written, by replacing it, at most once every
// watchersSaveInterval while the set of tracked watchers changes, and at a
// clean shutdown; a provider killed with SIGKILL leaves the last record.

// DefaultRestartGrace is how long a provider waits at start for the
// watchers of the previous one (Config.RestartGrace).
const DefaultRestartGrace = 10 * time.Second

var (
	// watchersSaveInterval spaces the writes of the watchers file.
	watchersSaveInterval = time.Second
	// expectedCheckInterval is how often expected watchers' processes are
	// checked, and their grace period with them.
	expectedCheckInterval = 250 * time.Millisecond
)

// watchersVersion is the version of the watchers file's format.
const watchersVersion = 1

// watchersFile is the content of the watchers file: JSON, the provider's
// private state, not part of the ABI.
type watchersFile struct {
	Version  int             `json:"version"`
	Boot     string          `json:"boot"`
	Watchers []watcherRecord `json:"watchers"`
}

// watcherRecord identifies one tracked watcher.
type watcherRecord struct {
	PID   int32  `json:"pid"`
	Start uint64 `json:"start"` // the process's start time, /proc/<pid>/stat field 22
	UID   uint32 `json:"uid"`
	Comm  string `json:"comm"`
	Label string `json:"label"`
	Acked uint64 `json:"acked"` // the generation it last acknowledged (when recorded)
}

// expectedWatcher is a watcher of the previous provider whose process still
// runs: it counts as a tracked, outdated watcher until it registers again.
type expectedWatcher struct {
	watcherRecord
	pidfd    int // the process's pidfd; -1 where there is none
	deadline time.Time
}

// expectation is the provider's state for expected watchers and the
// watchers file. Under Provider.mu, except dirty.
type expectation struct {
	grace    time.Duration // negative: expect no watchers
	list     []*expectedWatcher
	dirty    chan struct{} // capacity 1: the set of tracked watchers changed
	loaded   bool          // Run loaded the file: shutdown writes it again
	saveFail bool          // writing the file failed (logged)
}

func newExpectation(grace time.Duration) expectation {
	if grace == 0 {
		grace = DefaultRestartGrace
	}
	return expectation{grace: grace, dirty: make(chan struct{}, 1)}
}

// watchersChangedLocked schedules a write of the watchers file.
func (p *Provider) watchersChangedLocked() {
	select {
	case p.exp.dirty <- struct{}{}:
	default:
	}
}

// loadExpected reads the previous provider's watchers file and counts, as
// expected watchers, those whose processes still run. Called by Run before
// the start-up bump and before any client is accepted.
func (p *Provider) loadExpected() {
	p.mu.Lock()
	p.exp.loaded = true
	p.mu.Unlock()
	b, err := p.readWatchersFile()
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		p.log.Warn("reading the previous provider's watchers: expecting none", "err", err)
		return
	}
	var f watchersFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != watchersVersion {
		p.log.Warn("the watchers file is not one this provider wrote: expecting no watchers", "dir", p.dir, "version", f.Version, "err", err)
		return
	}
	if f.Boot != p.bootID() {
		return // recorded in another boot: those processes are gone
	}
	if p.exp.grace < 0 {
		if len(f.Watchers) > 0 {
			p.log.Info("not expecting the previous provider's watchers (no restart grace)", "recorded", len(f.Watchers))
		}
		return
	}
	deadline := time.Now().Add(p.exp.grace)
	var list []*expectedWatcher
	for _, r := range f.Watchers {
		pidfd, alive := sameProcess(r.PID, r.Start)
		if !alive {
			continue
		}
		list = append(list, &expectedWatcher{watcherRecord: r, pidfd: pidfd, deadline: deadline})
	}
	if len(list) == 0 {
		return
	}
	p.mu.Lock()
	p.exp.list = list
	p.watchers += len(list)
	p.tracked += len(list)
	p.outdated += len(list)
	p.mu.Unlock()
	p.log.Info("expecting the previous provider's watchers to register again", "watchers", len(list), "grace", p.exp.grace)
}

// bootID names this boot in the watchers file.
func (p *Provider) bootID() string { return uuid.UUID(p.hw.boot).String() }

// arrivedLocked ends the expectation of a watcher of c's process, now that
// c registered: c counts for itself. A placeholder of the same label is
// preferred, for a process with several watchers.
func (p *Provider) arrivedLocked(c *peer) {
	i := slices.IndexFunc(p.exp.list, func(e *expectedWatcher) bool { return e.PID == c.pid && e.Label == c.label })
	if i < 0 {
		i = slices.IndexFunc(p.exp.list, func(e *expectedWatcher) bool { return e.PID == c.pid })
	}
	if i < 0 {
		return
	}
	e := p.exp.list[i]
	if c.start != 0 && e.Start != c.start {
		// The expected process is gone: its pid names another one now.
		p.dropExpectedLocked(i, "its process exited before it registered again (its pid is another process's now)")
		return
	}
	p.log.Info("expected watcher registered again", "pid", e.PID, "comm", e.Comm, "label", e.Label, "uid", e.UID)
	p.removeExpectedLocked(i)
}

// dropExpectedLocked gives up on expected watcher i, with a warning.
func (p *Provider) dropExpectedLocked(i int, why string) {
	e := p.exp.list[i]
	p.log.Warn("no longer expecting a watcher of the previous provider: "+why,
		"pid", e.PID, "comm", e.Comm, "label", e.Label, "uid", e.UID)
	p.removeExpectedLocked(i)
}

// removeExpectedLocked removes expected watcher i: it no longer counts.
func (p *Provider) removeExpectedLocked(i int) {
	e := p.exp.list[i]
	closePidfd(e.pidfd)
	p.exp.list = slices.Delete(p.exp.list, i, i+1)
	p.watchers--
	p.tracked--
	p.outdated--
	p.watchersChangedLocked()
	p.checkWaitsLocked()
}

// checkExpected drops the expected watchers whose processes exited or whose
// grace period ended.
func (p *Provider) checkExpected(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.exp.list) - 1; i >= 0; i-- {
		e := p.exp.list[i]
		switch {
		case exited(e.pidfd, e.PID, e.Start):
			p.dropExpectedLocked(i, "its process exited before it registered again")
		case now.After(e.deadline):
			p.dropExpectedLocked(i, "it did not register again within the restart grace period ("+p.exp.grace.String()+")")
		}
	}
}

// expectedListLocked describes the expected watchers for the lists request.
func (p *Provider) expectedListLocked() []api.Watcher {
	l := make([]api.Watcher, 0, len(p.exp.list))
	for _, e := range p.exp.list {
		l = append(l, api.Watcher{
			PID: e.PID, UID: e.UID, Comm: e.Comm, Label: e.Label,
			Acked: e.Acked, Outdated: true, Tracked: true, Expected: true,
		})
	}
	return l
}

// watchersRecordLocked is what the watchers file is to hold now: the
// tracked watchers and those still expected.
func (p *Provider) watchersRecordLocked() watchersFile {
	f := watchersFile{Version: watchersVersion, Boot: p.bootID(), Watchers: []watcherRecord{}}
	for c := range p.conns {
		if c.watcher && c.tracked && c.start != 0 {
			f.Watchers = append(f.Watchers, watcherRecord{
				PID: c.pid, Start: c.start, UID: c.uid, Comm: c.comm, Label: c.label, Acked: c.acked,
			})
		}
	}
	for _, e := range p.exp.list {
		f.Watchers = append(f.Watchers, e.watcherRecord)
	}
	return f
}

// saveWatchers writes f to the watchers file, logging a failure once until
// a write succeeds again.
func (p *Provider) saveWatchers(f watchersFile) {
	b, err := json.Marshal(f)
	if err == nil {
		err = p.writeWatchersFile(b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil && !p.exp.saveFail:
		p.exp.saveFail = true
		p.log.Warn("recording the watchers for the next provider failed: after a restart, a wait may pass before they registered again", "err", err)
	case err == nil && p.exp.saveFail:
		p.exp.saveFail = false
		p.log.Info("recording the watchers works again")
	}
}

// tendWatchers runs until ctx ends: it writes the watchers file when the
// set of tracked watchers changed, at most once every watchersSaveInterval,
// and checks the expected watchers every expectedCheckInterval while there
// are any.
func (p *Provider) tendWatchers(ctx context.Context) {
	check := time.NewTicker(expectedCheckInterval)
	defer func() { check.Stop() }()
	checks := check.C
	var saveAt <-chan time.Time // set while a write waits for the interval
	var last time.Time          // of the last write
	save := func() {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		f := p.watchersRecordLocked()
		p.mu.Unlock()
		p.saveWatchers(f)
		last = time.Now()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-checks:
			p.checkExpected(now)
			p.mu.Lock()
			done := len(p.exp.list) == 0
			p.mu.Unlock()
			if done {
				check.Stop() // none will be expected again
				checks = nil
			}
		case <-p.exp.dirty:
			if saveAt != nil {
				continue // a write is due anyway
			}
			if wait := watchersSaveInterval - time.Since(last); wait > 0 {
				saveAt = time.After(wait)
				continue
			}
			save()
		case <-saveAt:
			saveAt = nil
			save()
		}
	}
}

// shutdownWatchersLocked returns the record the watchers file is to hold
// after a clean shutdown (what runs now, before the peers are dropped),
// and releases the expected watchers. ok is false when Run never loaded
// the file (then it is left as it is).
func (p *Provider) shutdownWatchersLocked() (f watchersFile, ok bool) {
	if !p.exp.loaded {
		return f, false
	}
	f = p.watchersRecordLocked()
	for _, e := range p.exp.list {
		closePidfd(e.pidfd)
		e.pidfd = -1
	}
	return f, true
}
