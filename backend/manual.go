package backend

import (
	"context"

	"github.com/snapsafe/snapsafe/runtime/api"
)

// Manual returns the manual source: it reports no events of its own, so
// the generation only moves on forced bumps over the control socket.
func Manual() Source { return manual{} }

type manual struct{}

func (manual) Name() string { return "manual" }

func (manual) Run(ctx context.Context, _ func(Event)) error {
	<-ctx.Done()
	return nil
}

func (manual) Close() error { return nil }

func (manual) Info() api.SourceInfo {
	return api.SourceInfo{Name: "manual", Why: "restores will not be detected: bumps come only from snapsafectl bump"}
}
