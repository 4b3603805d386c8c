package backend

import "context"

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

func (manual) Info() map[string]any {
	return map[string]any{"source": "manual", "why": "bumps come only from snapsafectl bump"}
}
