package console

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// SyncPrefix starts the kernel log records the guestclient writes through
// /dev/kmsg: SyncPrefix followed by its CLOCK_MONOTONIC in nanoseconds.
//
// The kernel stamps log records with its scheduler clock, which runs at a
// slightly different rate from CLOCK_MONOTONIC (under QEMU's TCG both count
// TSC ticks, converted with two calibrations 0.08% apart) and from another
// origin; the records pair the two clocks so that kernel records, such as the
// fork record, can be placed among the client's lines.
const SyncPrefix = "guestclient: T="

// ClockSync pairs a kernel log timestamp with the client's clock at the same
// moment.
type ClockSync struct {
	Kernel time.Duration // the record's kernel timestamp
	T      time.Duration // the client's CLOCK_MONOTONIC
}

// ParseClockSync returns the clock sync a record carries. Only records of
// the user facility count: the kernel's own records never carry one.
func ParseClockSync(k Kmsg) (ClockSync, bool) {
	rest, ok := strings.CutPrefix(k.Message, SyncPrefix)
	if !ok || k.Facility != 1 {
		return ClockSync{}, false
	}
	t, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || t < 0 {
		return ClockSync{}, false
	}
	return ClockSync{Kernel: k.Time, T: time.Duration(t)}, true
}

// KernelToClient converts a kernel timestamp to the client's clock,
// interpolating linearly between the two syncs around it, or extrapolating
// from the two nearest when it lies outside them. It needs two syncs with
// distinct kernel timestamps.
func KernelToClient(syncs []ClockSync, kernel time.Duration) (time.Duration, bool) {
	s := append([]ClockSync(nil), syncs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Kernel < s[j].Kernel })
	if len(s) < 2 {
		return 0, false
	}
	i := sort.Search(len(s), func(i int) bool { return s[i].Kernel >= kernel })
	i = min(max(i, 1), len(s)-1)
	a, b := s[i-1], s[i]
	if a.Kernel == b.Kernel {
		return 0, false
	}
	rate := float64(b.T-a.T) / float64(b.Kernel-a.Kernel)
	return a.T + time.Duration(rate*float64(kernel-a.Kernel)), true
}
