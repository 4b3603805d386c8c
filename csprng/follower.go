package csprng

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/backend/vmclock"
)

// quiet is the follower's logger: a library does not write to the
// program's logs.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startFollower follows, in this process, the restore signals a provider
// would use: the VMClock counter, read on the hot path itself when this
// process may open the device; and the VMGENID kernel-log record (and
// uevents), each of which bumps a process-local generation. It returns nil
// when this process can follow neither.
func startFollower() *source {
	src := newSource(ModeFollower)
	if vc, err := vmclock.Open(vmclock.DefaultPath); err == nil {
		if w := vc.CounterWord(); w != nil {
			src.vmc = w // kept open for the life of the process
		} else {
			vc.Close()
		}
	}
	a, err := backend.NewACPISource(backend.ACPIOptions{KmsgMatch: followerMatch, Logger: quiet})
	if err == nil && !a.SeesRestores() {
		a.Close()
		err = errNoSignal
	}
	if err != nil {
		if src.vmc == nil {
			return nil
		}
		return src
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Run returns when stopped, or if the kernel log cannot be read any
		// more; then the generation can no longer be trusted.
		_ = a.Run(ctx, func(backend.Event) { atomic.AddUint64(&src.local, 1) })
		a.Close()
		if ctx.Err() == nil && current.CompareAndSwap(src, newSource(ModeKernel)) {
			src.retire()
		}
	}()
	src.stop = cancel
	return src
}

// followerMatch replaces the kernel-log text the follower counts; tests set
// it to a record root can make the kernel print.
var followerMatch string

var errNoSignal = errors.New("this kernel sends no restore signal this process can read")
