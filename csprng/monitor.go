package csprng

import (
	"context"
	"time"
)

// retryInterval is how often a process without a provider looks for one.
var retryInterval = time.Second

// monitor keeps current up to date from src on, until ctx ends: it falls
// back the moment a provider's connection closes, and while there is no
// provider it tries to attach to one every retryInterval. start runs it
// once for the life of the process.
func monitor(ctx context.Context, src *source) {
	for {
		if src.mode == ModeProvider {
			select {
			case <-src.client.Done():
			case <-ctx.Done():
				return
			}
			// The provider is gone: its page no longer moves and nobody
			// wipes our regions. Stop trusting it at once, then find the
			// best remaining source.
			current.Store(newSource(ModeKernel))
			src.retire()
			src = selectSource()
			current.Store(src)
			continue
		}
		select {
		case <-time.After(retryInterval):
		case <-ctx.Done():
			return
		}
		if p := attachProvider(""); p != nil {
			current.Store(p)
			src.retire()
			src = p
		}
	}
}
