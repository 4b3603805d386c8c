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
		if gen, err := p.bumpWithLocked(shm.ReasonForced, floor, false, nil); err != nil {
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

// resume returns the generation the provider continues above: the higher
// of the page file's and the high-water mark of this boot. It logs where
// it came from when either was lost.
func (p *Provider) resume() uint64 {
	prior, valid := p.page.Prior()
	hw, state := p.hw.load()
	path := p.pagePath()
	switch {
	case state == hwThisBoot && valid && prior > hw && prior-hw > MaxForcedStep:
		p.log.Error("the page file shows a generation far above the high-water mark (it was written by someone else): resuming from the high-water mark; readers of the file see the generation fall back",
			"file", path, "page", prior, "highwater", hw)
		return hw
	case state == hwThisBoot && !valid:
		p.log.Warn("the page file was lost or damaged while no provider ran: resuming from the high-water mark", "file", path, "highwater", hw)
		return hw
	case state == hwThisBoot && prior < hw:
		p.log.Warn("the page file shows a generation below the high-water mark (it was rolled back while no provider ran): resuming from the high-water mark",
			"file", path, "page", prior, "highwater", hw)
		return hw
	case state == hwThisBoot:
		return prior
	case state == hwCorrupt && valid:
		p.log.Warn("the high-water file is corrupt: resuming from the page file", "dir", p.dir, "page", prior)
	case state == hwCorrupt:
		p.log.Error("the page file and the high-water file were both lost: the generation starts again at 1, and clients that saw the earlier generations of this boot see it fall back",
			"dir", p.dir)
	case !valid && state == hwOtherBoot:
		p.log.Info("no page file and no high-water mark of this boot: starting the generation again at 1 (a reboot)", "dir", p.dir)
	}
	return prior
}

// recordHighWaterLocked records next as the high-water mark before it is
// published. A failure is logged (once until a record succeeds again) but
// does not stop the bump: a restore must be signalled even if its mark
// cannot be kept.
func (p *Provider) recordHighWaterLocked(next uint64) {
	if err := p.hw.record(next); err != nil {
		if !p.hwFailed {
			p.hwFailed = true
			p.log.Error("could not record the high-water mark; publishing the generation anyway (if the page file is lost too before the next record, a restart may go back)",
				"generation", next, "err", err)
		}
		return
	}
	p.hwFailed = false
}
