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
	"github.com/snapsafe/snapsafe/acpi"
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
	// Only the kernel's own fork record proves that the kernel reseeded.
	proven := ev.Kind == backend.KindACPI && ev.Signal == acpi.SignalKmsg && !ev.Lost
	p.mu.Lock()
	gen, err := p.bumpWithLocked(reason, 0, proven, nil)
	p.mu.Unlock()
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

// Bounds of forced bumps. A forced bump's floor ("bump, but to at least
// this") may lie at most MaxForcedStep above the current generation, and no
// forced bump goes past ForcedCeiling. Restore events are not bounded that
// way: between ForcedCeiling and the last generation lie 2^63 values that
// only real restores (and start-ups) use, so no sequence of permitted
// requests can leave the provider unable to bump for a restore or to start.
const (
	MaxForcedStep = 1 << 32
	ForcedCeiling = 1 << 63
	// lastGeneration is the largest generation: clients reserve 2^64-1 for
	// "state never seeded" (csprng stores generations complemented, so that
	// zeroed memory stands for it).
	lastGeneration = math.MaxUint64 - 1
)

// Bump publishes generation max(floor, current+1) for reason and returns it:
// the page is updated in the ABI's order (wiping every region), every
// watcher becomes outdated and is notified, and every orchestrator wait
// ends with a new-generation result. A forced bump whose floor is out of
// bounds (see MaxForcedStep) fails with an error matching ErrInvalid and
// changes nothing.
func (p *Provider) Bump(reason shm.Reason, floor uint64) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if reason == shm.ReasonForced {
		if err := checkFloor(p.gen.Load(), floor); err != nil {
			return 0, err
		}
	}
	return p.bumpWithLocked(reason, floor, false, nil)
}

// bumpWithLocked is Bump without the bounds of forced bumps. It checks the page
// file first: the new generation is also above a plausible generation a
// damaged file showed its readers (see pagefile.go). The high-water mark is
// recorded before the generation is published.
//
// Before publishing, the kernel RNG is reseeded unless proven (reseedLocked).
//
// Every bump goes through here, under mu: Bump (forced and start-up),
// Restore (host), onEvent (restore events) and checkPage (a damaged page
// file). The kernel reseed (an ioctl) and the high-water file's fdatasync
// run under mu too, on purpose: both must come before the generation is
// published, and no other bump, ack or watch may slip in between; bumps are
// rare, and nothing that waits for a client runs under mu.
func (p *Provider) bumpWithLocked(reason shm.Reason, floor uint64, proven bool, entropy []byte) (uint64, error) {
	if p.closed {
		return 0, errors.New("provider is shutting down")
	}
	cur := p.gen.Load()
	damage := p.page.Check()
	floor = max(floor, p.seenFloorLocked(damage))
	if cur >= lastGeneration {
		// Unreachable in practice (2^63 restores), but never wrap.
		return 0, fmt.Errorf("generation %d is the last one: generations stop at 2^64-2", cur)
	}
	next := max(floor, cur+1)
	p.reseed = p.reseedLocked(proven, entropy)
	p.recordHighWaterLocked(next)
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
	p.outdated = p.tracked
	p.bumpHooksLocked(reason, next) // hooks.go: runnable hooks are outdated too (not for the start-up bump)
	p.bumpsBy[reason]++
	p.bumpedAt = time.Now()
	p.changedLocked()
	p.adaptedLocked() // at once when nobody is tracked
	p.events.bumped() // notify.go: every watcher gets the event, outside mu
	for c := range p.waiters {
		p.endWaitLocked(c, wire.WaitNewGeneration)
	}
	p.afterPublishLocked(damage)
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

// checkFloor refuses a forced bump's floor that lies too far above the
// current generation or past ForcedCeiling.
func checkFloor(cur, floor uint64) error {
	switch {
	case floor > cur && floor-cur > MaxForcedStep:
		return fmt.Errorf("%w: --min %d lies more than %d (2^32) above the current generation %d: ask for at most %d",
			ErrInvalid, floor, uint64(MaxForcedStep), cur, cur+MaxForcedStep)
	case max(floor, cur+1) > ForcedCeiling:
		return fmt.Errorf("%w: a forced bump may not pass generation %d (2^63), kept free for restore events: the current generation is %d",
			ErrInvalid, uint64(ForcedCeiling), cur)
	}
	return nil
}
