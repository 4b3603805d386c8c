package csprng

import (
	"context"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"github.com/snapsafe/snapsafe/shm"
)

// TestProviderModeWipesState: with a provider, generator state lives in a
// wipe region, and a bump wipes it even though this process does not call
// the generator.
func TestProviderModeWipesState(t *testing.T) {
	dir := t.TempDir()
	tp := testprovider.Start(t, provider.Config{Dir: dir})
	src := attachProvider(dir)
	if src == nil || src.mode != ModeProvider {
		t.Fatal("could not attach to the test provider")
	}
	useSource(t, src)
	seeds := logSeeds(t)

	r := New()
	if len(src.mem.regions) == 0 {
		t.Fatal("the state was not placed in a provider wipe region")
	}
	first := r.Uint64()
	if g := ^r.h.s.inv; g != 1 {
		t.Fatalf("state seeded for generation %d, want 1", g)
	}
	if _, err := tp.Bump(shm.ReasonForced, 0); err != nil {
		t.Fatal(err)
	}
	// No call into the generator: the provider wiped key and buffer.
	if r.h.s.inv != 0 || r.h.s.off != 0 {
		t.Fatalf("state header after the bump: %#x %d, want zeroes", r.h.s.inv, r.h.s.off)
	}
	for i, b := range r.h.s.buf {
		if b != 0 {
			t.Fatalf("buffer byte %d = %#x after the bump: not wiped", i, b)
		}
	}
	if r.Uint64() == first || ^r.h.s.inv != 2 || seeds.count() != 2 {
		t.Fatalf("after the bump: state generation %d, %d seeds", ^r.h.s.inv, seeds.count())
	}
}

// TestMonitorFallsBackAndReattaches: when the provider goes away the
// package stops trusting its page at once, and re-attaches when a provider
// returns.
func TestMonitorFallsBackAndReattaches(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SNAPSAFE_DIR", dir)
	old := retryMax
	retryMax = 10 * time.Millisecond
	defer func() { retryMax = old }()

	tp := testprovider.Start(t, provider.Config{Dir: dir})
	src := attachProvider("")
	useSource(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { monitor(ctx, src); close(done) }()
	defer func() { cancel(); <-done }()

	r := New()
	r.Uint64()
	tp.Stop()
	eventually.True(t, "the fallback", func() bool { return current.Load().mode != ModeProvider })
	t.Logf("fell back to %v", current.Load().mode)
	r.Uint64() // serves from the fallback

	testprovider.Start(t, provider.Config{Dir: dir})
	eventually.True(t, "the re-attach", func() bool { return current.Load().mode == ModeProvider })
	if g := Generation(); g != 2 {
		t.Fatalf("generation after re-attach = %d, want 2 (the new provider's start-up bump)", g)
	}
	seeds := logSeeds(t)
	r.Uint64()
	if seeds.count() != 1 {
		t.Fatal("the state was not reseeded after the re-attach")
	}
}

// TestIntegrationFollower: without a provider, the package follows the
// kernel log itself; a facility-0 record bumps its local generation.
func TestIntegrationFollower(t *testing.T) {
	testdevice.Require(t)
	followerMatch = testdevice.MalformedMessage
	defer func() { followerMatch = "" }()
	src := startFollower()
	if src == nil {
		t.Fatal("no follower on a machine with a VMGENID device, as root")
	}
	defer src.stop()
	useSource(t, src)
	seeds := logSeeds(t)
	r := New()
	r.Uint64()
	testdevice.LogMalformed(t)
	eventually.True(t, "the follower's bump", func() bool { return Generation() == 2 })
	r.Uint64()
	if seeds.count() != 2 {
		t.Fatalf("%d seeds, want 2: the bump did not reseed", seeds.count())
	}
}
