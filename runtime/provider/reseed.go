package provider

import (
	"context"
	"errors"
	"fmt"

	"github.com/snapsafe/snapsafe/internal/cpurand"
	"github.com/snapsafe/snapsafe/internal/kernelrng"
	"github.com/snapsafe/snapsafe/shm"
)

// reseedState says whether the kernel RNG is known to have been reseeded for
// the current generation, and how.
type reseedState struct {
	done bool
	how  string
}

// MinHostEntropy is the least entropy a host-pushed restore must carry.
const MinHostEntropy = 32

// reseedLocked makes sure the kernel RNG no longer follows the snapshot's
// state before a generation is published. The kernel's own VM-fork record
// proves that the vmgenid driver reseeded (proven); every other signal — a
// VMClock counter, which moves before the vCPUs resume; a host push; a
// forced bump; a start-up after which the provider cannot know — may come
// before the kernel's reseed, so the provider forces one itself, with the
// host's entropy (credited) and the CPU's RNG output (mixed in), when it
// has CAP_SYS_ADMIN. It never claims a reseed that failed.
func (p *Provider) reseedLocked(proven bool, entropy []byte) reseedState {
	if proven {
		return reseedState{true, "the kernel's VM-fork record: the vmgenid driver reseeded"}
	}
	var cpu [32]byte
	n, src := cpurand.Read(cpu[:])
	err := kernelrng.Reseed(entropy, cpu[:n])
	clear(cpu[:])
	switch {
	case err == nil && n > 0:
		return reseedState{true, fmt.Sprintf("forced by the provider (RNDRESEEDCRNG) with %d bytes of host entropy and %d of %s", len(entropy), n, src)}
	case err == nil:
		return reseedState{true, fmt.Sprintf("forced by the provider (RNDRESEEDCRNG) with %d bytes of host entropy", len(entropy))}
	case errors.Is(err, kernelrng.ErrNotPermitted):
		if !p.reseedWarned {
			p.reseedWarned = true
			p.log.Warn("cannot reseed the kernel RNG before publishing generations whose signal may precede the kernel's own reseed: run snapsafed with CAP_SYS_ADMIN", "err", err)
		}
		return reseedState{false, "not reseeded: the provider lacks CAP_SYS_ADMIN"}
	}
	p.log.Error("reseeding the kernel RNG", "err", err)
	return reseedState{false, "not reseeded: " + err.Error()}
}

// Restore is a restore pushed by the host (POST /v1/restore): it reseeds
// the kernel RNG with the host's fresh entropy (at least MinHostEntropy
// bytes) and the CPU's, then bumps with reason host. The result says
// whether the kernel reseed happened; the bump happens either way, since
// the host says the guest was restored.
func (p *Provider) Restore(ctx context.Context, entropy []byte) (gen uint64, reseeded bool, how string, err error) {
	if len(entropy) < MinHostEntropy {
		return 0, false, "", fmt.Errorf("%w: %d bytes of entropy: send at least %d", ErrInvalid, len(entropy), MinHostEntropy)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	gen, err = p.bumpWithLocked(shm.ReasonHost, 0, false, entropy)
	if err != nil {
		return 0, false, "", err
	}
	return gen, p.reseed.done, p.reseed.how, nil
}
