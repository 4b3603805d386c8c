package console

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Waiter events: the first word of a guestwaiter record.
const (
	// WaiterReady: attached to the provider, the watchers it was told to
	// expect are registered, and Gen is the generation it will wait past.
	WaiterReady = "ready"
	// WaiterBump: the provider's page moved to Gen; Reason and Mono are the
	// page's.
	WaiterBump = "bump"
	// WaiterWait: `snapsafectl wait`, run after the bump to Gen, exited
	// with Exit.
	WaiterWait = "wait"
)

// Waiter is one record of the guestwaiter, the guest's stand-in for an
// orchestrator:
//
//	ready gen=1 watchers=1
//	bump gen=2 reason=acpi mono=3561338777
//	wait gen=2 exit=0
type Waiter struct {
	Event    string // WaiterReady, WaiterBump or WaiterWait
	Gen      uint64
	Watchers int           // ready: the provider's watcher count
	Reason   string        // bump: the page's reason, such as "acpi"
	Mono     time.Duration // bump: the page's CLOCK_MONOTONIC of the bump
	Exit     int           // wait: snapsafectl's exit code
}

// IsWaiterRecord reports whether a guestwaiter line is one of its records,
// as opposed to what snapsafectl wait printed or /init's exit line.
func IsWaiterRecord(text string) bool {
	ev, _, _ := strings.Cut(text, " ")
	return ev == WaiterReady || ev == WaiterBump || ev == WaiterWait
}

// ParseWaiter parses a guestwaiter record. Unknown keys are ignored.
func ParseWaiter(text string) (Waiter, error) {
	ev, rest, _ := strings.Cut(text, " ")
	var required []string
	switch ev {
	case WaiterReady:
		required = []string{"gen", "watchers"}
	case WaiterBump:
		required = []string{"gen", "reason", "mono"}
	case WaiterWait:
		required = []string{"gen", "exit"}
	default:
		return Waiter{}, fmt.Errorf("waiter line %q: unknown event %q", text, ev)
	}
	kv, err := fields("waiter", rest, required...)
	if err != nil {
		return Waiter{}, err
	}
	w := Waiter{Event: ev, Reason: kv["reason"]}
	if w.Gen, err = strconv.ParseUint(kv["gen"], 10, 64); err != nil {
		return Waiter{}, fmt.Errorf("waiter line %q: bad gen: %w", text, err)
	}
	for _, x := range []struct {
		key string
		dst *int
	}{{"watchers", &w.Watchers}, {"exit", &w.Exit}} {
		if v, ok := kv[x.key]; ok {
			if *x.dst, err = strconv.Atoi(v); err != nil {
				return Waiter{}, fmt.Errorf("waiter line %q: bad %s: %w", text, x.key, err)
			}
		}
	}
	if v, ok := kv["mono"]; ok {
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ns < 0 {
			return Waiter{}, fmt.Errorf("waiter line %q: bad mono: %q", text, v)
		}
		w.Mono = time.Duration(ns)
	}
	return w, nil
}
