package provider

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/snapsafe/snapsafe/shm"
)

// BenchmarkGeneration is the client hot path: one atomic load from the
// mapped page.
func BenchmarkGeneration(b *testing.B) {
	dir := b.TempDir()
	startProvider(b, dir)
	c := attach(b, dir)
	var sink uint64
	for b.Loop() {
		sink += c.Generation()
	}
	_ = sink
}

// BenchmarkBumpNotify measures one bump until every connected watcher has
// received the new generation over its socket.
func BenchmarkBumpNotify(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) { benchBumpNotify(b, n) })
	}
}

func benchBumpNotify(b *testing.B, n int) {
	dir := b.TempDir()
	tp := startProvider(b, dir)
	c := attach(b, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var target atomic.Uint64   // the generation being delivered
	var remaining atomic.Int64 // watchers that have not seen it yet
	all := make(chan struct{}, 1)
	for range n {
		w := watch(b, c)
		go func() {
			for {
				g, err := w.Next(ctx)
				if err != nil {
					return
				}
				if g == target.Load() && remaining.Add(-1) == 0 {
					all <- struct{}{}
				}
			}
		}()
	}
	b.ResetTimer()
	for b.Loop() {
		remaining.Store(int64(n))
		target.Store(tp.Generation() + 1)
		if _, err := tp.Bump(shm.ReasonForced, 0); err != nil {
			b.Fatal(err)
		}
		<-all
	}
}
