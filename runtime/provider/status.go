package provider

import (
	"os"

	"github.com/google/uuid"
	"github.com/snapsafe/snapsafe/acpi"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// Status reports the provider's state and counters.
func (p *Provider) Status() api.Status {
	snap, _ := p.page.Snapshot()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := api.Status{
		Generation:     p.gen.Load(),
		Watchers:       p.watchers,
		Outdated:       p.outdated,
		Clients:        len(p.conns),
		Refused:        p.refusals.total,
		RegionBytes:    p.regionBytes,
		Bumps:          p.bumps,
		BumpsByReason:  make(map[string]uint64, len(p.bumpsBy)),
		KernelReseeded: p.reseed.done,
		KernelReseed:   p.reseed.how,
		Backend:        p.backend.String(),
		Source:         p.source.Info(),
		VMGenID:        acpi.Probe(),
		Epoch:          uuid.UUID(snap.Epoch).String(),
		Reason:         snap.Reason.String(),
		State:          snap.State.String(),
		BumpTime:       snap.Time,
		Wiped:          snap.Wiped,
		ProviderPID:    os.Getpid(),
		Started:        p.started,
		Dir:            p.dir,
	}
	for r, n := range p.bumpsBy {
		s.BumpsByReason[r.String()] = n
	}
	for c := range p.conns {
		s.Regions += len(c.regions)
		if c.waiting {
			s.Waiting++
		}
	}
	return s
}

// StatusWithLists is Status with the watcher and hook lists filled in: what
// snapsafectl status --json and the host endpoint's /v1/status show.
func (p *Provider) StatusWithLists() api.Status {
	s := p.Status()
	l := p.lists()
	s.WatcherList, s.Hooks = l.Watchers, l.Hooks
	return s
}
