package provider

import (
	"context"
	"time"
)

// Adapted is the outcome of WaitAdapted.
type Adapted struct {
	// Generation is the current generation when WaitAdapted returned.
	Generation uint64
	// Adapted: the generation is above the caller's and no tracked watcher
	// (or restore hook) is outdated.
	Adapted bool
	// Waited is how long WaitAdapted waited.
	Waited time.Duration
}

// WaitAdapted blocks until the generation is above after and no tracked
// watcher is outdated, or ctx ends; it is the in-process form of the
// orchestrator wait that the host endpoint serves (GET /v1/wait). Unlike
// the wait of the control protocol it does not end when a newer generation
// arrives: the caller asked for "adapted to something newer than after",
// and a newer bump only moves that goal. It takes the provider's lock only
// to look, so any number of waiters never delay a bump.
func (p *Provider) WaitAdapted(ctx context.Context, after uint64) Adapted {
	start := time.Now()
	for {
		p.mu.Lock()
		gen, ok, changed := p.gen.Load(), p.outdated == 0, p.changed
		p.mu.Unlock()
		if gen > after && ok {
			return Adapted{Generation: gen, Adapted: true, Waited: time.Since(start)}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Adapted{Generation: p.gen.Load(), Waited: time.Since(start)}
		}
	}
}

// changedLocked wakes every WaitAdapted: the generation moved, or the
// number of outdated watchers did.
func (p *Provider) changedLocked() {
	if p.changed != nil { // nil only in a Provider a test made by hand
		close(p.changed)
	}
	p.changed = make(chan struct{})
}

// adaptedLocked records, once per bump, how long it took from the bump
// until no tracked watcher was outdated (Config.OnAdapted).
func (p *Provider) adaptedLocked() {
	if p.outdated != 0 || p.bumpedAt.IsZero() {
		return
	}
	d := time.Since(p.bumpedAt)
	p.bumpedAt = time.Time{}
	if p.onAdapted != nil {
		p.onAdapted(d)
	}
}
