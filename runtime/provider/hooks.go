package provider

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/shm"
)

// Restore hooks (snapsafed --hooks-dir, docs/hooks.md): executables the
// provider runs, one at a time and in lexical order, on every new
// generation except the start-up one. Each runnable hook counts in
// p.outdated like a tracked watcher ("hook:NAME") until a run of it exits 0
// for the current generation, so that an orchestrator wait also waits for
// the hooks, and stays blocked while one of them failed.
//
// This file holds the hooks' state and accounting, which are portable;
// hooks_linux.go scans the directory and runs them.

// Defaults of Config.HooksDir (in snapsafed, only when the directory
// exists) and Config.HookTimeout.
const (
	DefaultHooksDir    = "/etc/snapsafe/restore.d"
	DefaultHookTimeout = 30 * time.Second
)

// hookSet is the provider's restore hooks. The fields below wake belong to
// the provider's lock.
type hookSet struct {
	dir     string
	timeout time.Duration
	// wake has capacity 1: a new generation for the runner to handle.
	wake chan struct{}

	// gen is the newest generation the hooks have to handle (0 until the
	// first bump after the start-up one), reason why it was bumped.
	gen    uint64
	reason shm.Reason
	// scanned is the generation list was last scanned for. While a
	// generation the hooks have to handle has not been scanned for and no
	// hook of the list is outdated, the scan itself counts as one outdated
	// hook: a hook added to an empty directory since the last scan must
	// hold up waits too. (When one of the list is outdated, it stays so
	// until after the scan, which comes before any run.)
	scanned uint64
	// list is what the last scan found, in lexical order: hooks, refused
	// ones included, or the refused directory alone.
	list []*hookEntry
	// counted is how much of p.outdated is the hooks'.
	counted int
}

// hookEntry is one hook (or a refused directory), under the provider's lock.
type hookEntry struct {
	name    string
	refused string // why it is never run; "" for a runnable hook
	// upTo is the generation the hook has handled: the last one a run of
	// it exited 0 for, or the start-up one.
	upTo    uint64
	acked   uint64 // the generation whose run exited 0 last (0: none yet)
	running uint64 // the generation it runs for now, 0 when not running
	failed  uint64 // the generation whose run failed last
	why     string // how that run failed
	started bool   // found at start-up: it had nothing to do for that generation
}

// scannedHook is one entry of a scan of the hooks directory.
type scannedHook struct {
	name    string
	refused string // why it must not run; "" for a runnable hook
}

// newHookSet reads the hooks' part of cfg; nil when hooks are off.
func newHookSet(cfg Config) (*hookSet, error) {
	if cfg.HookTimeout < 0 {
		return nil, fmt.Errorf("%w: --hook-timeout %v: must be positive", ErrInvalid, cfg.HookTimeout)
	}
	if cfg.HooksDir == "" {
		return nil, nil
	}
	dir, err := filepath.Abs(cfg.HooksDir)
	if err != nil {
		return nil, fmt.Errorf("--hooks-dir %s: %w", cfg.HooksDir, err)
	}
	h := &hookSet{dir: dir, timeout: cfg.HookTimeout, wake: make(chan struct{}, 1)}
	if h.timeout == 0 {
		h.timeout = DefaultHookTimeout
	}
	return h, nil
}

// outdatedLocked counts the hooks that have not handled generation cur:
// every runnable hook whose last good run was for an older one; or, when
// there is none, 1 while the scan for cur is still to come.
func (h *hookSet) outdatedLocked(cur uint64) int {
	n := 0
	for _, e := range h.list {
		if e.refused == "" && e.upTo != cur {
			n++
		}
	}
	if n == 0 && h.gen == cur && h.scanned != cur {
		n = 1
	}
	return n
}

// bumpHooksLocked is the hooks' part of a bump to next, called by Bump
// right after it reset p.outdated to the tracked watchers: every runnable
// hook becomes outdated, and the runner is woken. The start-up generation
// is no work for hooks: none of them becomes outdated for it.
func (p *Provider) bumpHooksLocked(reason shm.Reason, next uint64) {
	h := p.hooks
	if h == nil {
		return
	}
	h.counted = 0
	if reason == shm.ReasonStartup {
		return
	}
	h.gen, h.reason = next, reason
	h.counted = h.outdatedLocked(next)
	p.outdated += h.counted
	select {
	case h.wake <- struct{}{}:
	default: // the runner is already due to look; it takes the newest generation
	}
}

// recountHooksLocked brings the hooks' share of p.outdated up to date
// after a hook's state changed, and ends the waits if nothing is outdated
// any more.
func (p *Provider) recountHooksLocked() {
	h := p.hooks
	n := h.outdatedLocked(p.gen.Load())
	if n == h.counted {
		return
	}
	p.outdated += n - h.counted
	h.counted = n
	p.checkWaitsLocked()
}

// installHooksLocked replaces the hook list with a scan made for
// generation gen, keeping what is known of hooks found again. At start-up
// (startup true) every hook found has handled gen, the start-up
// generation. dirRefused, when set, says why the directory itself was
// refused: then it is the list's only entry.
func (p *Provider) installHooksLocked(scan []scannedHook, dirRefused string, gen uint64, startup bool) {
	h := p.hooks
	old := make(map[string]*hookEntry, len(h.list))
	for _, e := range h.list {
		old[e.name] = e
	}
	h.list = h.list[:0:0]
	if dirRefused != "" {
		h.list = append(h.list, &hookEntry{name: h.dir, refused: dirRefused})
	}
	for _, s := range scan {
		e := old[s.name]
		if e == nil {
			e = &hookEntry{name: s.name}
		}
		e.refused, e.running = s.refused, 0
		if startup {
			e.upTo, e.started = gen, true
		}
		h.list = append(h.list, e)
	}
	h.scanned = gen
	p.recountHooksLocked()
}

// hookLocked returns the entry of the hook called name, or nil.
func (h *hookSet) hookLocked(name string) *hookEntry {
	for _, e := range h.list {
		if e.name == name {
			return e
		}
	}
	return nil
}

// dropHookLocked removes the hook called name from the list (it vanished
// from the directory, or is no hook any more).
func (p *Provider) dropHookLocked(name string) {
	h := p.hooks
	for i, e := range h.list {
		if e.name == name {
			h.list = append(h.list[:i:i], h.list[i+1:]...)
			break
		}
	}
	p.recountHooksLocked()
}

// refuseHookLocked marks the hook called name refused: it changed since
// the scan and may not run any more.
func (p *Provider) refuseHookLocked(name, why string) {
	if e := p.hooks.hookLocked(name); e != nil {
		e.refused, e.running = why, 0
	}
	p.recountHooksLocked()
}

// startHookLocked marks the hook called name running for gen.
func (p *Provider) startHookLocked(name string, gen uint64) {
	if e := p.hooks.hookLocked(name); e != nil {
		e.running = gen
	}
}

// endHookLocked records how a run of the hook called name for gen ended:
// ok means it exited 0. A good run for the current generation makes the
// hook up to date (and may end the waits); a run for an older one changes
// nothing of the accounting: the hook runs again for the newest.
func (p *Provider) endHookLocked(name string, gen uint64, ok bool, why string) {
	e := p.hooks.hookLocked(name)
	if e == nil {
		return
	}
	e.running = 0
	if ok {
		e.acked, e.upTo, e.why = gen, max(e.upTo, gen), ""
	} else {
		e.failed, e.why = gen, why
	}
	p.recountHooksLocked()
}

// hookGenLocked returns the generation the hooks have to handle and its
// reason.
func (p *Provider) hookGenLocked() (uint64, shm.Reason) {
	return p.hooks.gen, p.hooks.reason
}

// hookListLocked describes every hook for status, in lexical order.
func (p *Provider) hookListLocked() []api.Hook {
	l := []api.Hook{}
	h := p.hooks
	if h == nil {
		return l
	}
	cur := p.gen.Load()
	for _, e := range h.list {
		s := api.Hook{Name: e.name, Acked: e.acked}
		switch {
		case e.refused != "":
			s.State, s.Reason = "refused", e.refused
		case e.running != 0:
			s.State, s.Reason = "running", fmt.Sprintf("for generation %d", e.running)
			if e.running != cur {
				s.Reason += fmt.Sprintf(", then again for %d", cur)
			}
		case e.upTo == cur:
			s.State = "ok"
			if e.started && e.acked == 0 {
				s.Reason = "nothing to do for the start-up generation"
			}
		case e.failed == cur:
			s.State, s.Reason = "failed", e.why
		default:
			s.State = "pending"
			if e.failed != 0 && e.why != "" {
				s.Reason = fmt.Sprintf("last run (generation %d) failed: %s", e.failed, e.why)
			}
		}
		l = append(l, s)
	}
	return l
}
