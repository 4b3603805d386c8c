// Package testprovider runs a snapsafe provider inside a test process, for
// the tests and benchmarks of packages built on runtime/provider and
// runtime/client. (runtime/provider's own tests have their own helper: they
// cannot import this package.)
package testprovider

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/snapsafe/snapsafe/runtime/provider"
)

// Provider is a running provider; Stop ends it (also at the end of the test).
type Provider struct {
	*provider.Provider
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Start runs a provider with cfg (logs discarded unless cfg.Logger is set)
// and returns once it is ready.
func Start(t testing.TB, cfg provider.Config) *Provider {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := provider.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tp := &Provider{Provider: p, cancel: cancel, done: make(chan error, 1)}
	go func() { tp.done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-tp.done:
		t.Fatalf("provider stopped before it was ready: %v", err)
	}
	t.Cleanup(func() {
		if err := tp.Stop(); err != nil {
			t.Errorf("provider: %v", err)
		}
	})
	return tp
}

// Stop ends the provider and returns what Run returned. It is idempotent.
func (p *Provider) Stop() error {
	var err error
	p.once.Do(func() {
		p.cancel()
		err = <-p.done
	})
	return err
}
