package provider

import (
	"context"
	"path/filepath"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/shm"
)

// The page file. Go clients map the provider's sealed memfd, which nobody
// can damage; the page file in the state directory is a copy kept for
// readers in other languages, and root or the provider's user can
// truncate, overwrite, delete or replace it. The provider checks it on
// every bump and every pageCheckInterval, republishes it when it is
// damaged, and logs one warning per incident.
//
// The generation never decreases for anyone, readers of a damaged file
// included: when the file shows a generation above the provider's, its
// readers may have seen it, so the provider bumps above it — as long as it
// is plausible, at most MaxForcedStep (2^32, the largest step a forced bump
// may take) above the provider's generation. A lower value, garbage, or an
// implausible value is simply overwritten (docs/ABI.md, section 1.1).

// pageCheckInterval is how often the provider checks the page file between
// bumps.
var pageCheckInterval = time.Second

func (p *Provider) pagePath() string { return filepath.Join(p.dir, statedir.PageFile) }

// watchPage checks the page file every pageCheckInterval until ctx ends.
func (p *Provider) watchPage(ctx context.Context) {
	t := time.NewTicker(pageCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.checkPage()
	}
}

// checkPage checks the page file and repairs it if it is damaged, bumping
// first if it showed a higher plausible generation.
func (p *Provider) checkPage() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	d := p.page.Check()
	if d.OK() {
		p.pageHealthyLocked()
		return
	}
	if floor := p.seenFloorLocked(d); floor > 0 {
		if gen, err := p.bumpLocked(shm.ReasonForced, floor); err != nil {
			p.log.Error("bumping above the generation the damaged page file shows", "err", err)
		} else {
			p.log.Info("bumped above the generation the damaged page file showed", "generation", gen, "seen", d.Seen)
		}
		return
	}
	p.repairPageLocked(d)
}

// seenFloorLocked returns the floor that damage to the page file puts under
// the next bump: one above the generation the file showed, if that is above
// the provider's and plausible; else 0. It logs the incident.
func (p *Provider) seenFloorLocked(d shm.Damage) uint64 {
	if d.OK() {
		return 0
	}
	var floor uint64
	if cur := p.gen.Load(); d.Seen > cur && d.Seen-cur <= MaxForcedStep && d.Seen < lastGeneration {
		floor = d.Seen + 1
	}
	p.notePageDamageLocked(d, floor)
	return floor
}

// notePageDamageLocked logs damage to the page file, once per incident.
func (p *Provider) notePageDamageLocked(d shm.Damage, floor uint64) {
	if p.pageIncident {
		return
	}
	p.pageIncident = true
	cur := p.gen.Load()
	args := []any{"file", p.pagePath(), "problem", d.Problem, "generation", cur}
	action := "republishing it"
	switch {
	case floor > 0:
		args = append(args, "seen", d.Seen)
		action = "bumping above the generation it shows (its readers may have seen it) and republishing it"
	case d.Seen > cur:
		args = append(args, "seen", d.Seen)
		action = "republishing it; the generation it shows lies more than 2^32 above the provider's and is not adopted, so readers of the file that saw it see the generation fall back"
	}
	p.log.Warn("the generation page file was damaged: "+action, args...)
}

// afterPublishLocked republishes the page file if it was damaged before a
// bump (before) or while the bump was written.
func (p *Provider) afterPublishLocked(before shm.Damage) {
	d := before
	if d.OK() {
		if d = p.page.Check(); d.OK() {
			p.pageHealthyLocked()
			return
		}
	}
	p.repairPageLocked(d)
}

// repairPageLocked republishes the damaged page file. A failure is logged
// once per incident; the next check tries again.
func (p *Provider) repairPageLocked(d shm.Damage) {
	p.notePageDamageLocked(d, 0)
	if err := p.page.Repair(); err != nil {
		if !p.pageRepairFailed {
			p.pageRepairFailed = true
			p.log.Error("could not republish the generation page file; trying again every second",
				"file", p.pagePath(), "err", err, "every", pageCheckInterval)
		}
		return
	}
	p.pageHealthyLocked()
}

// pageHealthyLocked ends an incident.
func (p *Provider) pageHealthyLocked() {
	if p.pageRepairFailed {
		p.log.Info("the generation page file is republished", "file", p.pagePath())
	}
	p.pageIncident, p.pageRepairFailed = false, false
}
