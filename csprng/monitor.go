package csprng

import (
	"context"
	"math/rand/v2"
	"time"
)

// While there is no provider (or it refuses us), the monitor looks for one
// with a backoff: it starts at retryMin after a loss and doubles up to
// retryMax, plus up to a quarter of jitter, so that an idle process costs
// a few failed connects a second at most, and a provider that appears is
// found within retryMax*5/4 (500 ms) plus the attach itself.
var (
	retryMin = 20 * time.Millisecond
	retryMax = 400 * time.Millisecond
)

// monitor keeps current up to date from src on, until ctx ends: it falls
// back the moment a provider's connection closes, and while there is no
// provider it tries to attach to one with a capped backoff. start runs it
// once for the life of the process.
func monitor(ctx context.Context, src *source) {
	delay := retryMin
	for {
		if src.mode == ModeProvider {
			select {
			case <-src.client.Done():
			case <-ctx.Done():
				return
			}
			// The provider is gone: its page no longer moves and nobody
			// wipes our regions. Stop trusting it at once (retire also
			// erases the states in its regions), then find the best
			// remaining source.
			current.Store(newSource(ModeKernel))
			src.retire()
			src = selectSource()
			current.Store(src)
			delay = retryMin
			continue
		}
		t := time.NewTimer(delay + rand.N(delay/4+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		delay = min(2*delay, retryMax)
		if p := attachProvider(""); p != nil {
			current.Store(p)
			src.retire()
			src = p
		}
	}
}
