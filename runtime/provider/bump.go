package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
)

// onEvent turns one source event into one bump.
func (p *Provider) onEvent(ev backend.Event) {
	reason := shm.ReasonACPI
	if ev.Kind == backend.KindVMClock {
		reason = shm.ReasonVMClock
	}
	gen, err := p.Bump(reason, 0)
	if err != nil {
		p.log.Error("bump failed", "signal", ev.Signal, "err", err)
		return
	}
	lvl := slog.LevelInfo
	if ev.Lost {
		lvl = slog.LevelWarn
	}
	p.log.Log(context.Background(), lvl, "restore event", "generation", gen, "signal", ev.Signal,
		"lost", ev.Lost, "detail", ev.Detail, "latency", time.Since(ev.Time))
}

// Bump publishes generation max(floor, current+1) for reason and returns it:
// the page is updated in the ABI's order (wiping every region), every
// watcher becomes outdated and is notified, and every orchestrator wait
// ends with a new-generation result.
func (p *Provider) Bump(reason shm.Reason, floor uint64) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, errors.New("provider is shutting down")
	}
	// The generation stops below 2^64-1: clients reserve that value for
	// "state never seeded" (csprng stores generations complemented, so
	// that zeroed memory stands for it).
	cur := p.gen.Load()
	if cur >= math.MaxUint64-1 || floor == math.MaxUint64 {
		return 0, fmt.Errorf("generation %d cannot be reached: generations stop at 2^64-2", max(floor, cur+1))
	}
	next := max(floor, cur+1)
	p.page.Publish(shm.Update{
		Generation: next,
		Reason:     reason,
		Backend:    p.backend,
		State:      shm.StateRunning,
		PID:        uint32(os.Getpid()),
		Epoch:      uuid.New(),
		Time:       time.Now(),
		Mono:       shm.Monotonic(),
	}, p.wipeLocked)
	p.gen.Store(next)
	p.bumps++
	p.outdated = p.watchers
	for c := range p.conns {
		if c.watcher {
			select {
			case c.notify <- struct{}{}:
			default: // an event is already pending; it will carry the newest generation
			}
		}
		if c.waiting {
			p.endWaitLocked(c, wire.WaitNewGeneration)
		}
	}
	if reason != shm.ReasonStartup {
		p.log.Debug("bumped", "generation", next, "reason", reason.String())
	}
	return next, nil
}

// wipeLocked zeroes every wipe region; called inside the page's write section.
func (p *Provider) wipeLocked() {
	for c := range p.conns {
		for _, r := range c.regions {
			r.Wipe()
		}
	}
}
