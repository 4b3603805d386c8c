package provider

import (
	"cmp"
	"slices"

	"github.com/snapsafe/snapsafe/runtime/api"
)

// Lists is what the lists request (0x0a) returns: the watchers and the
// restore hooks, too many for one control message, so passed in a memfd.
type Lists struct {
	Watchers []api.Watcher `json:"watcher_list"`
	Hooks    []api.Hook    `json:"hooks"`
}

// lists describes every watcher, outdated tracked ones first, then by pid.
func (p *Provider) lists() Lists {
	p.mu.Lock()
	l := Lists{Watchers: make([]api.Watcher, 0, p.watchers), Hooks: p.hookListLocked()} // hooks.go
	cur := p.gen.Load()
	for c := range p.conns {
		if !c.watcher {
			continue
		}
		l.Watchers = append(l.Watchers, api.Watcher{
			PID: c.pid, UID: c.uid, Comm: c.comm, Label: c.label,
			Acked: c.acked, Outdated: c.acked != cur, Tracked: c.tracked,
		})
	}
	l.Watchers = append(l.Watchers, p.expectedListLocked()...)
	p.mu.Unlock()
	slices.SortFunc(l.Watchers, listOrder)
	return l
}

// listOrder orders the watcher list: outdated tracked watchers (those that
// hold up waits) first, then by pid.
func listOrder(a, b api.Watcher) int {
	if late := a.Outdated && a.Tracked; late != (b.Outdated && b.Tracked) {
		if late {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.PID, b.PID)
}
